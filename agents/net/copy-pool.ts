// The copies a sender makes of its messages (a send must copy: the caller may reuse its buffer at once),
// kept once written for the next message of the same size. Fresh memory is paid for in page faults as it
// is first written, which on a VM can cost more than the copy and the socket together; a machine sends
// the same sizes again and again (each iteration's collectives and checkpoint chunks), so a copy is mostly
// made into memory already mapped. The pool holds at most `limitBytes`.

export class CopyPool {
  readonly #free = new Map<number, Uint8Array[]>();
  readonly #limitBytes: number;
  #bytes = 0;

  constructor(limitBytes: number) {
    this.#limitBytes = limitBytes;
  }

  /** A copy of `bytes`, in a spare buffer of its size if there is one. */
  copy(bytes: Uint8Array): Uint8Array {
    const spares = this.#free.get(bytes.length), spare = spares?.pop();
    if (!spare) return bytes.slice();
    if (!spares!.length) this.#free.delete(bytes.length);
    this.#bytes -= spare.length;
    spare.set(bytes);
    return spare;
  }

  /** Takes back a copy nothing reads any more, if the pool has room for it. */
  release(copy: Uint8Array) {
    if (!copy.length || this.#bytes + copy.length > this.#limitBytes) return;
    this.#free.set(copy.length, [...(this.#free.get(copy.length) ?? []), copy]);
    this.#bytes += copy.length;
  }
}
