// The control connection between a root process and a machine process: the transport's frames and its
// handshake (agents/net), with requests and their answers as JSON message frames, and bulk bytes (a
// machine's state) as data frames after the frame that names them. The root dials; the machine answers
// requests and also sends events of its own (heartbeats, its trainer ending). The handshake runs under the
// cluster's name with " control" added, so a MAC of the data plane is good for nothing here.

import { ConnectionLost, FRAME, FrameStream, ProtocolError } from "../net/frame.ts";
import { acceptHandshake, type Credentials, dialHandshake, importSecret } from "../net/handshake.ts";
import type { PeerAddress } from "../net/tcp-transport.ts";

/** A control frame's JSON is small: requests, answers and events; bulk bytes follow it as data frames. */
const CONTROL_LIMIT = 1 << 20;
/** Each bulk attachment goes in data frames of at most this. */
const CHUNK = 1 << 20;
/** An attachment may be at most this (a machine's whole parameters and its shard of m and v). */
const ATTACHMENT_LIMIT = 2 ** 31;

/** The credentials of either end of a control connection (the machine is rank 0, the root rank 1). */
export async function controlCredentials(cluster: string, secret: string | Uint8Array, rank: 0 | 1) {
  return { cluster: `${cluster} control`, rank, key: await importSecret(secret) } satisfies Credentials;
}

type Frame = Record<string, unknown>;

/** Typed arrays in a value, replaced by placeholders that name them in order. */
function extract(value: unknown, out: ArrayBufferView[]): unknown {
  if (value instanceof Float32Array) return { $f32: out.push(value) - 1 };
  if (value instanceof Uint8Array) return { $u8: out.push(value) - 1 };
  if (Array.isArray(value)) return value.map((item) => extract(item, out));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, extract(item, out)]));
  }
  return value;
}

function restore(value: unknown, attached: Uint8Array[]): unknown {
  if (Array.isArray(value)) return value.map((item) => restore(item, attached));
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    const index = record.$f32 ?? record.$u8;
    if (typeof index === "number") {
      const bytes = attached[index];
      if (!bytes) throw new ProtocolError(`a placeholder for attachment ${index}, which did not come`);
      return "$f32" in record ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) : bytes;
    }
    return Object.fromEntries(Object.entries(record).map(([key, item]) => [key, restore(item, attached)]));
  }
  return value;
}

/** A request the machine could not carry out: its message, as the machine gave it. */
export class RemoteError extends Error {
  override name = "RemoteError";
}

/** The connection was lost with requests still unanswered. */
export class ControlLost extends Error {
  override name = "ControlLost";
}

export class ControlConnection {
  readonly stream: FrameStream;
  readonly peer: string;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  #nextId = 1;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  /** Handles a request from the other end (the machine's side): its answer. */
  onRequest: (op: string, args: Record<string, unknown>) => Promise<unknown> = (op) =>
    Promise.reject(new Error(`no request ${op} is served here`));
  /** Hears the other end's events (the root's side). */
  onEvent: (event: Record<string, unknown>) => void = () => {};
  /** Settles once the connection has ended, with why. */
  readonly ended: Promise<string>;

  private constructor(conn: Deno.Conn) {
    this.stream = new FrameStream(conn);
    const { hostname, port } = conn.remoteAddr as Deno.NetAddr;
    this.peer = `${hostname}:${port}`;
    this.ended = this.#read().then(() => "closed", (error) => (error as Error).message).then((why) => {
      this.close();
      for (const { reject } of this.#pending.values()) reject(new ControlLost(`control link to ${this.peer}: ${why}`));
      this.#pending.clear();
      return why;
    });
  }

  /** Dials a machine's control port and proves the secret both ways. */
  static async dial(address: PeerAddress, credentials: Credentials, timeoutMs = 10_000): Promise<ControlConnection> {
    const conn = await Deno.connect({ ...address, signal: AbortSignal.timeout(timeoutMs) });
    conn.setNoDelay(true);
    return ControlConnection.#opened(conn, timeoutMs, (stream) => dialHandshake(stream, credentials, 0));
  }

  /** Answers a connection to a machine's control port; throws (the connection closed) if the dialer fails the handshake. */
  static accept(conn: Deno.Conn, credentials: Credentials, timeoutMs = 10_000): Promise<ControlConnection> {
    return ControlConnection.#opened(conn, timeoutMs, (stream) => acceptHandshake(stream, credentials));
  }

  /** The connection once `handshake` has passed within the timeout; else it is closed and this throws. */
  static async #opened(
    conn: Deno.Conn,
    timeoutMs: number,
    handshake: (stream: FrameStream) => Promise<unknown>,
  ): Promise<ControlConnection> {
    const close = () => {
      try {
        conn.close();
      } catch { /* closed already */ }
    };
    const timer = setTimeout(close, timeoutMs);
    try {
      await handshake(new FrameStream(conn));
    } catch (error) {
      close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return new ControlConnection(conn);
  }

  /** Asks the other end to do `op`: its answer, a RemoteError, or ControlLost. */
  request(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.#nextId++;
    const answer = new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    // A request that cannot be written is never answered: its waiter fails now (the connection may have ended
    // before it, so nothing else would fail it).
    this.#send({ id, op, args }).catch((error) => {
      this.#pending.get(id)?.reject(error);
      this.#pending.delete(id);
    });
    return answer;
  }

  /** Asks the other end to do `op` without waiting for its answer: resolves once the request is written. */
  tell(op: string, args: Record<string, unknown> = {}): Promise<void> {
    return this.#send({ id: this.#nextId++, op, args });
  }

  /** Tells the other end something nobody asked for (a heartbeat). */
  notify(event: Record<string, unknown>): Promise<void> {
    return this.#send({ event });
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.stream.conn.close();
    } catch { /* already closed */ }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Writes one frame and its attachments, after whatever is being written. */
  #send(frame: Frame): Promise<void> {
    const attachments: ArrayBufferView[] = [];
    const json = extract(frame, attachments) as Frame;
    json.attachments = attachments.map((view) => view.byteLength);
    const write = this.#writing.then(async () => {
      if (this.#closed) throw new ControlLost(`control link to ${this.peer} is closed`);
      await this.stream.writeJson(FRAME.message, json);
      for (const view of attachments) {
        const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
        for (let at = 0; at < bytes.length; at += CHUNK) {
          await this.stream.write(FRAME.data, bytes.subarray(at, at + CHUNK));
        }
      }
    });
    this.#writing = write.catch(() => {});
    return write;
  }

  async #read() {
    for (;;) {
      const header = await this.stream.readHeader((type) => type === FRAME.message ? CONTROL_LIMIT : undefined);
      if (!header) return;
      const frame = await this.stream.readJson(header.length);
      const sizes = frame.attachments;
      if (!Array.isArray(sizes) || !sizes.every((n) => Number.isSafeInteger(n) && n >= 0 && n <= ATTACHMENT_LIMIT)) {
        throw new ProtocolError(`a control frame without a valid list of attachments`);
      }
      const attached: Uint8Array[] = [];
      for (const size of sizes as number[]) {
        const bytes = new Uint8Array(size);
        for (let at = 0; at < size;) {
          const data = await this.stream.readHeader((type) =>
            type === FRAME.data ? Math.min(CHUNK, size - at) : undefined
          );
          if (!data) throw new ConnectionLost(`the connection ended inside an attachment`);
          if (data.length === 0) throw new ProtocolError(`an empty data frame`);
          await this.stream.readInto(bytes.subarray(at, at + data.length));
          at += data.length;
        }
        attached.push(bytes);
      }
      this.#dispatch(restore(frame, attached) as Frame);
    }
  }

  #dispatch(frame: Frame) {
    const { id, op, args, event } = frame;
    if (typeof op === "string" && typeof id === "number") {
      const reply = (body: Frame) => this.#send({ id, ...body }).catch(() => {});
      this.onRequest(op, (args ?? {}) as Record<string, unknown>).then(
        (result) => reply({ result }),
        (error) => reply({ error: error instanceof Error ? error.message : String(error) }),
      );
    } else if (typeof id === "number") {
      const waiter = this.#pending.get(id);
      if (!waiter) return;
      this.#pending.delete(id);
      if (typeof frame.error === "string") waiter.reject(new RemoteError(frame.error));
      else waiter.resolve(frame.result);
    } else if (event && typeof event === "object") {
      this.onEvent(event as Record<string, unknown>);
    } else {
      throw new ProtocolError(`a control frame that is neither a request, an answer nor an event`);
    }
  }
}
