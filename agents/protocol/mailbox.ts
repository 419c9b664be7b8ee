// A machine's inbox, whatever carries its messages: a message is matched to a receive by its sender and tag;
// kinds with a handler (a replica arriving unasked) go to it instead. Each message carries its sender's
// recovery epoch: after `abort(epoch)`, pending receives fail and messages sent before the sender knew of
// that epoch are dropped, so nothing of an abandoned iteration or recovery leaks into the next.

import { AbortedError, type Delivery, type TrafficKind, type Transport } from "./transport.ts";

export class Mailbox {
  readonly rank: number;
  #epoch: number;
  readonly #arrived = new Map<string, Delivery[]>();
  readonly #waiting = new Map<string, { resolve: (delivery: Delivery) => void; reject: (error: Error) => void }>();
  readonly #handlers = new Map<TrafficKind, (delivery: Delivery) => void>();

  constructor(rank: number, epoch = 0) {
    this.rank = rank;
    this.#epoch = epoch;
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** The next message from `from` with `tag`, for a caller that began in `epoch` (rejected if that has passed). */
  receive(from: number, tag: string, epoch = this.#epoch): Promise<Delivery> {
    if (epoch !== this.#epoch) {
      return Promise.reject(new AbortedError(`machine ${this.rank}: recovery ${this.#epoch} began`));
    }
    const key = `${from}/${tag}`;
    const queued = this.#arrived.get(key);
    if (queued?.length) {
      const delivery = queued.shift()!;
      if (!queued.length) this.#arrived.delete(key);
      return Promise.resolve(delivery);
    }
    if (this.#waiting.has(key)) throw new Error(`machine ${this.rank} is already waiting for ${key}`);
    return new Promise((resolve, reject) => this.#waiting.set(key, { resolve, reject }));
  }

  /** Hands every message of `kind` to `handler` as it arrives. */
  handle(kind: TrafficKind, handler: (delivery: Delivery) => void) {
    this.#handlers.set(kind, handler);
  }

  /** Moves to `epoch`: pending receives fail with AbortedError and older messages are dropped. */
  abort(epoch: number) {
    this.#epoch = epoch;
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const { reject } of waiting) reject(new AbortedError(`machine ${this.rank}: recovery ${epoch} began`));
    for (const [key, queued] of this.#arrived) {
      const kept = queued.filter((delivery) => delivery.epoch >= epoch);
      if (kept.length) this.#arrived.set(key, kept);
      else this.#arrived.delete(key);
    }
  }

  /** Fails the pending receives from `from`: its link is lost, so what they wait for will not come. */
  fail(from: number, error: Error) {
    for (const [key, { reject }] of this.#waiting) {
      if (!key.startsWith(`${from}/`)) continue;
      this.#waiting.delete(key);
      reject(error);
    }
  }

  /** A message arrives. */
  arrive(delivery: Delivery) {
    if (delivery.epoch < this.#epoch) return;
    const handler = this.#handlers.get(delivery.kind);
    if (handler) return handler(delivery);
    const key = `${delivery.from}/${delivery.tag}`;
    const waiter = this.#waiting.get(key);
    if (waiter && delivery.epoch === this.#epoch) {
      this.#waiting.delete(key);
      waiter.resolve(delivery);
    } else {
      this.#arrived.set(key, [...(this.#arrived.get(key) ?? []), delivery]);
    }
  }
}

/**
 * The receiving half every transport shares: a mailbox that its arrivals go to. A transport adds how it
 * sends and closes.
 */
export abstract class MailboxTransport implements Transport {
  protected readonly mailbox: Mailbox;

  constructor(rank: number, epoch = 0) {
    this.mailbox = new Mailbox(rank, epoch);
  }

  get rank(): number {
    return this.mailbox.rank;
  }

  get epoch(): number {
    return this.mailbox.epoch;
  }

  receive(from: number, tag: string, epoch?: number): Promise<Delivery> {
    return this.mailbox.receive(from, tag, epoch);
  }

  handle(kind: TrafficKind, handler: (delivery: Delivery) => void) {
    this.mailbox.handle(kind, handler);
  }

  abort(epoch: number) {
    this.mailbox.abort(epoch);
  }

  abstract send(...message: Parameters<Transport["send"]>): void;

  abstract close(): void;
}
