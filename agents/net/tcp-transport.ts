// The transport between processes: the `Transport` of the simulated switch's endpoints, over TCP. Each
// machine listens (on 127.0.0.1 unless told otherwise) and dials each peer it sends to, at the address its
// directory gives for that rank: a connection carries messages one way, from the dialer to the acceptor,
// in the order sent, after a handshake in which both sides prove that they know the cluster's secret
// (handshake.ts). A message is its header frame and then its bytes in chunks (frame.ts), read straight into
// the one buffer the receiver hands over, so memory per connection is bounded by the message size limit.
//
// A peer that breaks the wire format loses its connection, with the reason logged, and nothing else does.
// Fencing is the mailbox's: a message of an older epoch is dropped, here before its bytes are even kept.
// When a peer's last connection in is lost, the receives waiting on it fail (PeerLostError) instead of
// waiting for bytes that will not come. Optional pacing reserves this machine's send link on the injected
// clock as the simulated switch does (LinkSchedule), so that a fast loopback can stand in for a slower
// network and training traffic leaves idle spans for checkpoint traffic.

import { type Clock, WallClock } from "../protocol/clock.ts";
import { MailboxTransport } from "../protocol/mailbox.ts";
import type { TrafficKind, Transport } from "../protocol/transport.ts";
import { LinkSchedule } from "../sim/network.ts";
import { CopyPool } from "./copy-pool.ts";
import { ConnectionLost, DEFAULT_LIMITS, FRAME, type FrameLimits, FrameStream, ProtocolError } from "./frame.ts";
import { acceptHandshake, type Credentials, dialHandshake, importSecret } from "./handshake.ts";

export interface PeerAddress {
  hostname: string;
  port: number;
}

export interface TcpTransportOptions {
  rank: number;
  /** The cluster's name: bound into the handshake, so machines of another cluster cannot connect. */
  cluster: string;
  /** The cluster's shared secret (at least 16 bytes). */
  secret: string | Uint8Array;
  epoch?: number;
  /** Where to listen: 127.0.0.1 and a port the system picks, unless told otherwise. */
  listen?: Partial<PeerAddress>;
  /** Where each peer listens, by rank (more can be added with `connect`). */
  peers?: Iterable<[number, PeerAddress]>;
  /** The clock the handshake's timeout and pacing run on (the wall clock by default). */
  clock?: Clock;
  handshakeTimeoutMs?: number;
  /** Paces this machine's sending at this many bytes per second (unpaced by default). */
  bandwidth?: number;
  /** The bytes of a message each data frame carries (at most the receiver's `dataFrameBytes`). */
  chunkBytes?: number;
  limits?: Partial<FrameLimits>;
  /** How many bytes of written messages' copies to keep for reuse (256 MiB by default). */
  sparePoolBytes?: number;
  /** Where the reasons for closed connections go (stderr by default). */
  log?: (line: string) => void;
}

/** A receive failed because the peer it waited on lost its connection to this machine. */
export class PeerLostError extends Error {
  override name = "PeerLostError";
}

/** A message waiting to go out on a link: its header frame, ready, and a copy of its bytes. */
interface Outgoing {
  header: Uint8Array;
  bytes: Uint8Array;
  onSent?: () => void;
}

/** This machine's connection to one peer, and the messages waiting for it. */
interface Link {
  to: number;
  address: PeerAddress;
  queue: Outgoing[];
  conn?: Deno.Conn;
  stream?: FrameStream;
  pumping: boolean;
  broken: boolean;
  ready: Promise<void>;
}

const KINDS = new Set<string>(["training", "checkpoint", "retrieval"]);

const describe = (address: PeerAddress) => `${address.hostname}:${address.port}`;
const reason = (error: unknown) => error instanceof Error ? error.message : String(error);

function checkAddress(address: PeerAddress): PeerAddress {
  const { hostname, port } = address;
  if (typeof hostname !== "string" || !hostname || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`a peer's address must be a host name and a port in 1..65535, got ${JSON.stringify(address)}`);
  }
  return { hostname, port };
}

/** A message's header, as its sender wrote it. */
interface MessageHeader {
  kind: TrafficKind;
  label: string;
  tag: string;
  epoch: number;
  size: number;
  info?: unknown;
}

/** A message being received: its header, and its bytes so far (none kept for a message fenced off). */
interface Incoming {
  header: MessageHeader;
  received: number;
  bytes?: Uint8Array;
}

/** Checks a message's header frame: the header, or a ProtocolError. */
function checkHeader(header: Record<string, unknown>, limit: number): MessageHeader {
  const { kind, label, tag, epoch, size } = header;
  if (typeof kind !== "string" || !KINDS.has(kind)) {
    throw new ProtocolError(`a message of kind ${JSON.stringify(kind)}`);
  }
  if (typeof label !== "string" || typeof tag !== "string") throw new ProtocolError(`a message without label or tag`);
  if (!Number.isSafeInteger(epoch) || (epoch as number) < 0) throw new ProtocolError(`a message of epoch ${epoch}`);
  if (!Number.isSafeInteger(size) || (size as number) < 0) throw new ProtocolError(`a message of size ${size}`);
  if ((size as number) > limit) throw new ProtocolError(`oversized message of ${size} bytes (the limit is ${limit})`);
  return header as unknown as MessageHeader;
}

export class TcpTransport extends MailboxTransport {
  readonly #listener: Deno.TcpListener;
  readonly #self: Credentials;
  readonly #clock: Clock;
  readonly #handshakeTimeoutMs: number;
  readonly #chunkBytes: number;
  readonly #limits: FrameLimits;
  readonly #pacing: LinkSchedule | undefined;
  readonly #copies: CopyPool;
  readonly #log: (line: string) => void;
  readonly #directory = new Map<number, PeerAddress>();
  readonly #links = new Map<number, Link>();
  /** Open connections, both ways, so that closing the transport closes them all. */
  readonly #connections = new Set<Deno.Conn>();
  /** How many authenticated connections each peer has in. */
  readonly #inbound = new Map<number, number>();
  /** What is still running (accepting, reading, writing): `closed()` waits for it. */
  readonly #tasks = new Set<Promise<void>>();
  readonly #closing = new AbortController();

  /** Listens and returns the transport; its address is `address`. */
  static async start(options: TcpTransportOptions): Promise<TcpTransport> {
    if (!Number.isSafeInteger(options.rank) || options.rank < 0) throw new Error(`bad rank ${options.rank}`);
    if (typeof options.cluster !== "string" || !options.cluster) throw new Error(`the cluster needs a name`);
    return new TcpTransport(options, await importSecret(options.secret));
  }

  private constructor(options: TcpTransportOptions, key: CryptoKey) {
    super(options.rank, options.epoch);
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    const chunkBytes = options.chunkBytes ?? Math.min(1024 * 1024, limits.dataFrameBytes);
    if (!(Number.isInteger(chunkBytes) && chunkBytes > 0 && chunkBytes <= limits.dataFrameBytes)) {
      throw new Error(`chunks must be 1..${limits.dataFrameBytes} bytes, got ${chunkBytes}`);
    }
    if (options.bandwidth !== undefined && !(options.bandwidth > 0)) {
      throw new Error(`pacing must be positive bytes/s, got ${options.bandwidth}`);
    }
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
    if (!(handshakeTimeoutMs > 0)) {
      throw new Error(`the handshake's timeout must be positive, got ${handshakeTimeoutMs}`);
    }
    this.#self = { cluster: options.cluster, rank: options.rank, key };
    this.#clock = options.clock ?? new WallClock();
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    this.#chunkBytes = chunkBytes;
    this.#limits = limits;
    this.#pacing = options.bandwidth === undefined ? undefined : new LinkSchedule(options.bandwidth);
    this.#copies = new CopyPool(options.sparePoolBytes ?? 256 * 1024 * 1024);
    this.#log = options.log ?? ((line) => console.error(line));
    for (const [rank, address] of options.peers ?? []) this.#directory.set(rank, checkAddress(address));
    this.#listener = Deno.listen({
      hostname: options.listen?.hostname ?? "127.0.0.1",
      port: options.listen?.port ?? 0,
    });
    // A machine may send to itself (a ring of one): through its own listener, like to any peer.
    this.#directory.set(this.rank, this.address);
    this.#track(this.#accept());
  }

  /** Where this transport listens. */
  get address(): PeerAddress {
    const { hostname, port } = this.#listener.addr;
    return { hostname, port };
  }

  /**
   * Records where rank `rank` listens and opens the connection to it: resolves once both sides have proved
   * the secret, rejects if that fails. A rank that moved is dialed at its new address; what was queued for
   * its old one is dropped.
   */
  connect(rank: number, address: PeerAddress): Promise<void> {
    this.#directory.set(rank, checkAddress(address));
    if (this.#closing.signal.aborted) return Promise.reject(new Error(`machine ${this.rank}'s transport is closed`));
    const link = this.#links.get(rank);
    if (link && describe(link.address) === describe(address)) return link.ready;
    if (link) this.#break(link, new Error(`rank ${rank} moved to ${describe(address)}`));
    return this.#dial(rank)!.ready;
  }

  /**
   * See `Transport.send`. `info` travels as JSON. `onSent` is called once the last byte is written to the
   * socket, or, paced, once the link's schedule has it sent; never if the connection is lost first.
   */
  send(...[to, kind, label, tag, bytes, info, onSent]: Parameters<Transport["send"]>) {
    if (bytes.length > this.#limits.messageBytes) {
      throw new Error(`a message of ${bytes.length} bytes is over the limit of ${this.#limits.messageBytes}`);
    }
    const header = new TextEncoder().encode(
      JSON.stringify({ kind, label, tag, epoch: this.epoch, size: bytes.length, info }),
    );
    if (header.length > this.#limits.controlBytes) {
      throw new Error(`a message header of ${header.length} bytes is over the limit of ${this.#limits.controlBytes}`);
    }
    if (this.#closing.signal.aborted) return;
    const link = this.#links.get(to) ?? this.#dial(to);
    if (!link) return this.#log(`tcp transport ${this.rank}: dropped ${label} to rank ${to}: no address for it`);
    link.queue.push({ header, bytes: this.#copies.copy(bytes), onSent });
    if (link.stream && !link.pumping) this.#track(this.#pump(link));
  }

  close() {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    this.#listener.close();
    for (const link of [...this.#links.values()]) this.#break(link, new Error("the transport was closed"));
    for (const conn of [...this.#connections]) this.#disconnect(conn);
  }

  /** Resolves once, after `close()`, every connection and the listener have stopped. */
  async closed() {
    while (this.#tasks.size) await Promise.all(this.#tasks);
  }

  /** Runs `task` (which never rejects) until the transport has closed. */
  #track(task: Promise<void>) {
    this.#tasks.add(task);
    task.then(() => this.#tasks.delete(task));
  }

  #disconnect(conn: Deno.Conn) {
    if (!this.#connections.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Closed already (a dial aborted on its timeout): nothing is left to release.
    }
  }

  /** Logs why a connection was closed, unless it was closed because the transport was. */
  #report(what: string, error: unknown) {
    if (!this.#closing.signal.aborted) this.#log(`tcp transport ${this.rank}: closed ${what}: ${reason(error)}`);
  }

  /** Runs a handshake, calling `expire` (which closes its connection) if it is not done within the timeout. */
  async #handshake<T>(expire: () => void, work: () => Promise<T>): Promise<T> {
    let timedOut = false;
    const cancel = this.#clock.setTimer(this.#handshakeTimeoutMs, () => {
      timedOut = true;
      expire();
    });
    try {
      return await work();
    } catch (error) {
      throw timedOut ? new ProtocolError(`no handshake within ${this.#handshakeTimeoutMs} ms`) : error;
    } finally {
      cancel();
    }
  }

  async #accept() {
    try {
      for await (const conn of this.#listener) {
        this.#connections.add(conn);
        this.#track(this.#serve(conn));
      }
    } catch (error) {
      this.#report("its listener", error);
    }
  }

  /** One connection in: the handshake, then messages until it ends. */
  async #serve(conn: Deno.Conn) {
    const stream = new FrameStream(conn), peer = describe(conn.remoteAddr as Deno.NetAddr);
    let from: number | undefined;
    try {
      from = await this.#handshake(() => this.#disconnect(conn), () => acceptHandshake(stream, this.#self));
      this.#inbound.set(from, (this.#inbound.get(from) ?? 0) + 1);
      await this.#readMessages(stream, from);
    } catch (error) {
      this.#report(`the connection from ${peer}${from === undefined ? "" : ` (rank ${from})`}`, error);
    } finally {
      this.#disconnect(conn);
      if (from !== undefined) this.#lost(from);
    }
  }

  /** A connection from `from` ended: with none left, its receives will not be answered. */
  #lost(from: number) {
    const left = this.#inbound.get(from)! - 1;
    if (left) {
      this.#inbound.set(from, left);
    } else {
      this.#inbound.delete(from);
      this.mailbox.fail(from, new PeerLostError(`machine ${this.rank} lost its connection from rank ${from}`));
    }
  }

  async #readMessages(stream: FrameStream, from: number) {
    let message: Incoming | null = null;
    const limitOf = (type: number) =>
      type === FRAME.message && !message
        ? this.#limits.controlBytes
        : type === FRAME.data && message
        ? this.#limits.dataFrameBytes
        : undefined;
    for (;;) {
      const frame = await stream.readHeader(limitOf);
      if (!frame) {
        if (!message) return;
        throw new ConnectionLost(
          `the connection ended ${message.received} bytes into a message of ${message.header.size}`,
        );
      }
      let current: Incoming;
      if (frame.type === FRAME.message) {
        const header = checkHeader(await stream.readJson(frame.length), this.#limits.messageBytes);
        // A message of an older epoch is fenced off: its bytes are read past, never kept.
        current = { header, received: 0, bytes: header.epoch < this.epoch ? undefined : new Uint8Array(header.size) };
      } else {
        current = message!;
        const left = current.header.size - current.received;
        if (frame.length === 0 || frame.length > left) {
          throw new ProtocolError(`a data frame of ${frame.length} bytes where its message has ${left} left`);
        }
        const into = current.bytes?.subarray(current.received, current.received + frame.length);
        await (into ? stream.readInto(into) : stream.skip(frame.length));
        current.received += frame.length;
      }
      message = current.received < current.header.size ? current : null;
      if (message || !current.bytes) continue;
      const { kind, label, tag, epoch, info } = current.header;
      this.mailbox.arrive({ from, kind, label, tag, epoch, bytes: current.bytes, info });
    }
  }

  /** Opens a link to `to` at its address in the directory (undefined without one). */
  #dial(to: number): Link | undefined {
    const address = this.#directory.get(to);
    if (!address) return undefined;
    const link: Link = { to, address, queue: [], pumping: false, broken: false, ready: Promise.resolve() };
    this.#links.set(to, link);
    link.ready = this.#open(link);
    this.#track(link.ready.catch(() => {}));
    return link;
  }

  /** Connects and runs the handshake, both within the handshake's timeout (a host that is down never answers). */
  async #open(link: Link) {
    const connecting = new AbortController();
    try {
      const stream = await this.#handshake(() => {
        connecting.abort();
        if (link.conn) this.#disconnect(link.conn);
      }, async () => {
        const { hostname, port } = link.address;
        const conn = await Deno.connect({ hostname, port, signal: connecting.signal });
        this.#connections.add(conn);
        link.conn = conn;
        if (link.broken) throw new Error(`the link was closed while connecting`);
        conn.setNoDelay(true);
        const stream = new FrameStream(conn);
        await dialHandshake(stream, this.#self, link.to);
        return stream;
      });
      link.stream = stream;
      this.#track(this.#watch(link, stream));
      if (link.queue.length && !link.pumping) this.#track(this.#pump(link));
    } catch (error) {
      if (link.conn) this.#disconnect(link.conn);
      this.#break(link, error);
      throw error;
    }
  }

  /** Reads the link's connection: the acceptor sends nothing after its welcome, so any frame is a breach. */
  async #watch(link: Link, stream: FrameStream) {
    try {
      await stream.readHeader(() => undefined);
      throw new ConnectionLost(`rank ${link.to} closed the connection`);
    } catch (error) {
      this.#break(link, error);
    }
  }

  /** Closes a link; what was queued on it is dropped (a later send dials again). */
  #break(link: Link, error: unknown) {
    if (link.broken) return;
    link.broken = true;
    if (this.#links.get(link.to) === link) this.#links.delete(link.to);
    if (link.conn) this.#disconnect(link.conn);
    const dropped = link.queue.length;
    link.queue = [];
    this.#report(
      `the connection to rank ${link.to} at ${describe(link.address)}`,
      `${reason(error)}${dropped ? `; ${dropped} message(s) not sent` : ""}`,
    );
  }

  /** Writes the link's queued messages, one after another, until the queue is empty. */
  async #pump(link: Link) {
    link.pumping = true;
    try {
      while (link.queue.length && !link.broken) {
        await this.#write(link, link.stream!, link.queue[0]);
        link.queue.shift();
      }
    } catch (error) {
      this.#break(link, error);
    }
    link.pumping = false;
  }

  async #write(link: Link, stream: FrameStream, message: Outgoing) {
    await stream.write(FRAME.message, message.header);
    let end = this.#clock.now();
    for (let offset = 0; offset < message.bytes.length; offset += this.#chunkBytes) {
      const chunk = message.bytes.subarray(offset, offset + this.#chunkBytes);
      end = await this.#pace(link.to, chunk.length, offset ? end : undefined);
      await stream.write(FRAME.data, chunk);
    }
    this.#copies.release(message.bytes);
    const onSent = message.onSent;
    if (!onSent) return;
    if (!this.#pacing) return onSent();
    this.#after(end - this.#clock.now(), () => link.broken || onSent());
  }

  /**
   * Waits for the paced link to be free for `bytes`: when they will have been sent. A message's next chunk
   * is due `after` the one before it, not when the timer that woke its sender fired: a late timer is caught
   * up on, so a message keeps the pace however busy the computer is.
   */
  async #pace(to: number, bytes: number, after?: number): Promise<number> {
    const now = this.#clock.now();
    if (!this.#pacing) return now;
    const { start, end } = this.#pacing.reserve(this.rank, to, bytes, after ?? now);
    if (start > now) await this.#sleep(start - now);
    return end;
  }

  /** Runs `run` once `ms` have passed on the clock, unless the transport closes first (then `stopped`). */
  #after(ms: number, run: () => void, stopped?: () => void) {
    const signal = this.#closing.signal;
    if (signal.aborted) return stopped?.();
    const stop = () => {
      cancel();
      stopped?.();
    };
    const cancel = this.#clock.setTimer(ms, () => {
      signal.removeEventListener("abort", stop);
      run();
    });
    signal.addEventListener("abort", stop, { once: true });
  }

  /** Waits `ms` on the clock; rejects if the transport closes first. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.#after(ms, resolve, () => reject(new ConnectionLost("the transport was closed")))
    );
  }
}
