// The transport between processes, on real sockets on 127.0.0.1: messages and chunked transfers arrive
// intact and in order, matched by sender, tag and epoch; an abort fences older epochs; a peer without the
// secret, a garbage frame or an oversized one loses its connection and nothing else does; a handshake
// times out and a link paces on the injected clock; a peer that dies mid-transfer, in this process or in a
// second one killed by its PID, fails the receive waiting on it; and the collectives of training come out
// the same over TCP as over the simulated switch.

import assert from "node:assert/strict";
import { FRAME, FrameStream } from "../agents/net/frame.ts";
import { dialHandshake, importSecret } from "../agents/net/handshake.ts";
import { PeerLostError, TcpTransport, type TcpTransportOptions } from "../agents/net/tcp-transport.ts";
import { allGatherShards, reduceScatterMean } from "../agents/collectives.ts";
import { VirtualClock } from "../agents/protocol/clock.ts";
import { AbortedError, type Transport } from "../agents/protocol/transport.ts";
import { directChannel, Network, NetworkEndpoint } from "../agents/sim/network.ts";
import { shardRanges } from "../core/shard.ts";
import { SECRET_VARIABLE, WatchedClock } from "./tcp_transport_peer.ts";

const SECRET = "the test cluster's shared secret";
const LOCALHOST = "127.0.0.1";

/** What a transport logged, and a way to wait for a line. */
class LogBook {
  readonly lines: string[] = [];
  #waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];

  readonly log = (line: string) => {
    this.lines.push(line);
    for (const waiter of this.#waiters.filter((waiter) => waiter.pattern.test(line))) waiter.resolve(line);
    this.#waiters = this.#waiters.filter((waiter) => !waiter.pattern.test(line));
  };

  /** The first line, logged already or to come, that matches `pattern`. */
  line(pattern: RegExp): Promise<string> {
    const seen = this.lines.find((line) => pattern.test(line));
    return seen ? Promise.resolve(seen) : new Promise((resolve) => this.#waiters.push({ pattern, resolve }));
  }
}

type Options = Partial<TcpTransportOptions>;

/** Transports of ranks 0..n-1 (options by rank), each with every other's address, and their logs. */
async function cluster(options: Options[]) {
  const books = options.map(() => new LogBook());
  const transports = await Promise.all(
    options.map((extra, rank) =>
      TcpTransport.start({ rank, cluster: "test", secret: SECRET, log: books[rank].log, ...extra })
    ),
  );
  for (const from of transports) {
    for (const to of transports) if (to !== from) await from.connect(to.rank, to.address);
  }
  const close = () => Promise.all(transports.map((transport) => (transport.close(), transport.closed())));
  return { transports, books, close };
}

function pattern(length: number, seed: number) {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 255;
  return bytes;
}

/** `promise`'s value if it has settled already, else "pending" (an already settled promise wins a race). */
const now = <T>(promise: Promise<T>) => Promise.race([promise, Promise.resolve("pending" as const)]);

/** A raw connection to `transport`, that speaks the wire format by hand. */
async function raw(transport: TcpTransport) {
  const conn = await Deno.connect({ hostname: LOCALHOST, port: transport.address.port });
  return { conn, stream: new FrameStream(conn) };
}

/** A raw connection that has passed the handshake as rank `rank`: what it writes next is read as messages. */
async function authenticated(transport: TcpTransport, rank: number) {
  const { conn, stream } = await raw(transport);
  await dialHandshake(stream, { cluster: "test", rank, key: await importSecret(SECRET) }, transport.rank);
  return { conn, stream };
}

/**
 * Resolves once the transport has closed `conn`: a read finds its end, or its reset where the transport
 * closed with bytes of ours still unread.
 */
async function closedByPeer(conn: Deno.Conn) {
  const buffer = new Uint8Array(64);
  try {
    while (await conn.read(buffer) !== null);
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
  } finally {
    conn.close();
  }
}

/** A frame's bytes, its header claiming `length` whatever `payload` is. */
function frame(type: number, length: number, payload = new Uint8Array(0)) {
  const bytes = new Uint8Array(5 + payload.length), view = new DataView(bytes.buffer);
  view.setUint8(0, type);
  view.setUint32(1, length, true);
  bytes.set(payload, 5);
  return bytes;
}

/** Frames as one write, so that all of them are sent before the transport can close the connection. */
function frames(...parts: Uint8Array[]) {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  parts.reduce((offset, part) => (bytes.set(part, offset), offset + part.length), 0);
  return bytes;
}

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

/** A control frame of `value` as JSON. */
const control = (type: number, value: unknown) => frame(type, json(value).length, json(value));

Deno.test("messages arrive intact, in order per tag, from the rank the handshake proved, with their info", async () => {
  const { transports: [a, b], close } = await cluster([{}, {}]);
  try {
    const first = pattern(10_000, 1), second = pattern(3, 2);
    a.send(1, "training", "all-gather", "x", first, { owner: 0, offset: 5 });
    first.fill(0); // the sender's buffer is its own again at once
    a.send(1, "training", "all-gather", "x", second);
    a.send(1, "retrieval", "fetch", "y", new Uint8Array(0));
    a.send(0, "training", "reduce-scatter", "self", pattern(7, 3)); // a ring of one sends to itself
    const y = await b.receive(0, "y");
    assert.deepEqual([y.from, y.kind, y.label, y.epoch, y.bytes.length], [0, "retrieval", "fetch", 0, 0]);
    const x1 = await b.receive(0, "x"), x2 = await b.receive(0, "x");
    assert.deepEqual([x1.bytes, x1.info, x1.label], [pattern(10_000, 1), { owner: 0, offset: 5 }, "all-gather"]);
    assert.deepEqual([x2.bytes, x2.info], [pattern(3, 2), undefined]);
    assert.deepEqual((await a.receive(0, "self")).bytes, pattern(7, 3));
  } finally {
    await close();
  }
});

Deno.test("a large transfer goes in chunks under the receiver's frame limit and arrives intact; onSent when written", async () => {
  const frame = 64 * 1024;
  const { transports: [a, b], close } = await cluster([{ chunkBytes: frame }, { limits: { dataFrameBytes: frame } }]);
  try {
    const big = pattern(8 * 1024 * 1024 + 3, 5);
    const sent = new Promise<void>((resolve) => a.send(1, "checkpoint", "replica", "big", big, undefined, resolve));
    a.send(1, "training", "all-gather", "after", pattern(5, 6));
    const delivery = await b.receive(0, "big");
    await sent;
    assert.deepEqual(delivery.bytes, big);
    assert.deepEqual((await b.receive(0, "after")).bytes, pattern(5, 6));
  } finally {
    await close();
  }
});

Deno.test("a sender's copies are reused once written: messages of one size with other bytes arrive as sent", async () => {
  const { transports: [a, b], close } = await cluster([{ chunkBytes: 4096 }, {}]);
  try {
    const sent = (seed: number) =>
      new Promise<void>((resolve) => a.send(1, "checkpoint", "replica", "same", pattern(50_000, seed), {}, resolve));
    await sent(1);
    const more = [sent(2), sent(3), sent(4)];
    for (const seed of [1, 2, 3, 4]) assert.deepEqual((await b.receive(0, "same")).bytes, pattern(50_000, seed));
    await Promise.all(more);
  } finally {
    await close();
  }
});

Deno.test("receives match the sender and the tag; a kind with a handler goes to the handler", async () => {
  const { transports: [a, b, c], close } = await cluster([{}, {}, {}]);
  try {
    const replicas: number[] = [];
    const replicated = new Promise<void>((resolve) =>
      c.handle("checkpoint", (delivery) => (replicas.push(delivery.from), replicas.length === 2 && resolve()))
    );
    a.send(2, "training", "reduce-scatter", "t", pattern(10, 0));
    b.send(2, "training", "reduce-scatter", "t", pattern(10, 1));
    a.send(2, "checkpoint", "replica", "r", pattern(10, 2));
    b.send(2, "checkpoint", "replica", "r", pattern(10, 3));
    assert.deepEqual((await c.receive(1, "t")).bytes, pattern(10, 1));
    assert.deepEqual((await c.receive(0, "t")).bytes, pattern(10, 0));
    await replicated;
    assert.deepEqual(replicas.sort(), [0, 1]);
    await assert.rejects(c.receive(0, "t", 5), AbortedError, "a caller of another epoch is turned away");
  } finally {
    await close();
  }
});

Deno.test("an abort fails pending receives and drops messages of older epochs, queued or still to come", async () => {
  const { transports: [a, b], close } = await cluster([{}, {}]);
  try {
    const pending = b.receive(0, "x");
    a.send(1, "training", "all-gather", "old", pattern(4, 0));
    a.send(1, "training", "all-gather", "sync", pattern(4, 1));
    await b.receive(0, "sync"); // "old" came first on the same connection: it is queued now
    b.abort(1);
    await assert.rejects(pending, AbortedError);
    a.send(1, "training", "all-gather", "x", pattern(4, 2)); // epoch 0: fenced off on arrival
    a.abort(1);
    a.send(1, "training", "all-gather", "x", pattern(4, 3));
    a.send(1, "training", "all-gather", "old", pattern(4, 4));
    const x = await b.receive(0, "x");
    assert.deepEqual([x.epoch, x.bytes], [1, pattern(4, 3)]);
    assert.deepEqual((await b.receive(0, "old")).bytes, pattern(4, 4), "the older epoch's queued message is gone");
  } finally {
    await close();
  }
});

Deno.test("a peer without the secret, of another cluster or after another rank is refused; others are served", async () => {
  const { transports: [a, b], books: [book], close } = await cluster([{}, {}]);
  const strangers = await Promise.all([
    TcpTransport.start({ rank: 2, cluster: "test", secret: "not the cluster's secret at all", log: () => {} }),
    TcpTransport.start({ rank: 3, cluster: "other", secret: SECRET, log: () => {} }),
  ]);
  try {
    await assert.rejects(strangers[0].connect(0, a.address), /rank 0 did not prove that it knows the cluster's secret/);
    await assert.rejects(strangers[1].connect(0, a.address));
    await book.line(/the dialer is of cluster "other", not test/);
    await assert.rejects(b.connect(5, a.address));
    await book.line(/the dialer wants rank 5/);

    // A dialer that answers the challenge with a MAC it made up: refused before its message is read.
    const { conn, stream } = await raw(a);
    await stream.writeJson(FRAME.hello, {
      version: "gemini-lab transport 1",
      cluster: "test",
      from: 7,
      to: 0,
      nonce: "ab".repeat(32),
    });
    await stream.expectJson(FRAME.challenge);
    const message = { kind: "training", label: "x", tag: "x", epoch: 0, size: 0 };
    await conn.write(frames(control(FRAME.proof, { mac: "cd".repeat(32) }), control(FRAME.message, message)));
    await closedByPeer(conn);
    await book.line(/rank 7 did not prove that it knows the cluster's secret/);
    assert.equal(await now(a.receive(7, "x")), "pending", "nothing the stranger sent was read");

    b.send(0, "training", "all-gather", "still", pattern(4, 0));
    assert.deepEqual((await a.receive(1, "still")).bytes, pattern(4, 0));
  } finally {
    for (const stranger of strangers) stranger.close();
    await Promise.all(strangers.map((stranger) => stranger.closed()));
    await close();
  }
});

Deno.test("garbage, oversized and unexpected frames close only their own connection, with the reason logged", async () => {
  const { transports: [a, b], books: [book], close } = await cluster([{ limits: { messageBytes: 1 << 20 } }, {}]);
  try {
    const garbage = await raw(a);
    await garbage.conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    await closedByPeer(garbage.conn);
    await book.line(/closed the connection from 127\.0\.0\.1:\d+: unexpected unknown \(71\) frame/);

    const message = (size: number) =>
      control(FRAME.message, { kind: "training", label: "x", tag: "x", epoch: 0, size });
    const cases: [Uint8Array, RegExp][] = [
      [frame(FRAME.message, 2 ** 30), /\(rank 9\): oversized message frame of 1073741824 bytes \(the limit is 65536\)/],
      [frame(FRAME.data, 16), /\(rank 9\): unexpected data frame/],
      [frame(FRAME.hello, 16), /\(rank 9\): unexpected hello frame/],
      [message(2 << 20), /oversized message of 2097152 bytes \(the limit is 1048576\)/],
      [frames(message(4), frame(FRAME.data, 5)), /a data frame of 5 bytes where its message has 4 left/],
      [frame(FRAME.message, 3, new TextEncoder().encode("{x]")), /a control frame is not JSON/],
      [control(FRAME.message, []), /a control frame is not a JSON object/],
      [control(FRAME.message, { kind: "gossip", size: 0 }), /a message of kind "gossip"/],
    ];
    for (const [bytes, reason] of cases) {
      const peer = await authenticated(a, 9);
      await peer.conn.write(bytes);
      await closedByPeer(peer.conn);
      await book.line(reason);
    }

    b.send(0, "training", "all-gather", "still", pattern(4, 0));
    assert.deepEqual((await a.receive(1, "still")).bytes, pattern(4, 0), "the transport still serves its peers");
  } finally {
    await close();
  }
});

Deno.test("a connection that does not finish its handshake in time is closed, on the injected clock", async () => {
  const clock = new WatchedClock();
  const { transports: [a], books: [book], close } = await cluster([{ clock, handshakeTimeoutMs: 1000 }]);
  try {
    const { conn } = await raw(a);
    await clock.timersSet(1); // accepted: its handshake's timer is running
    assert.deepEqual(clock.timers, [1000]);
    clock.advance(1000);
    await closedByPeer(conn);
    await book.line(/closed the connection from 127\.0\.0\.1:\d+: no handshake within 1000 ms/);

    // A peer that accepts and never answers: the dialer gives up as well.
    const silent = Deno.listen({ hostname: LOCALHOST, port: 0 }), accepted = silent.accept();
    const dialing = a.connect(1, { hostname: LOCALHOST, port: silent.addr.port });
    await clock.timersSet(2);
    clock.advance(1000);
    await assert.rejects(dialing, /no handshake within 1000 ms/);
    await closedByPeer(await accepted);
    silent.close();
  } finally {
    await close();
  }
});

Deno.test("a paced link sends at its bandwidth on the injected clock, and two peers share the send link", async () => {
  const clock = new WatchedClock();
  const { transports: [a, b], close } = await cluster([{ clock, bandwidth: 1e6, chunkBytes: 10_000 }, {}, {}]);
  try {
    const set = clock.timers.length; // the handshakes' timers
    let sentAt: number | undefined;
    a.send(1, "checkpoint", "replica", "paced", pattern(30_000, 1), undefined, () => sentAt = clock.now());
    const delivery = b.receive(0, "paced");
    await clock.timersSet(set + 1);
    assert.deepEqual(clock.timers.slice(set), [10], "10 000 bytes at 1 MB/s: the second chunk waits 10 ms");
    assert.equal(await now(delivery), "pending", "two of three chunks wait for the clock");
    clock.advance(10);
    await clock.timersSet(set + 2);
    clock.advance(10);
    await clock.timersSet(set + 3); // the last chunk is written: onSent when its last byte is due
    assert.deepEqual((await delivery).bytes, pattern(30_000, 1));
    assert.equal(sentAt, undefined);
    clock.advance(10);
    assert.equal(sentAt, 30);

    const sent: number[] = [];
    a.send(1, "training", "all-gather", "one", pattern(10_000, 2), undefined, () => sent.push(clock.now()));
    a.send(2, "training", "all-gather", "two", pattern(10_000, 3), undefined, () => sent.push(clock.now()));
    await clock.timersSet(set + 5); // one peer's onSent, the other's chunk waiting for the link
    clock.advance(10);
    await clock.timersSet(set + 6);
    clock.advance(10);
    assert.deepEqual(sent, [40, 50], "one send link: the second message goes after the first");
  } finally {
    await close();
  }
});

Deno.test("a paced link catches up on a timer that fires late: a message keeps its pace", async () => {
  const clock = new WatchedClock();
  const { transports: [a, b], close } = await cluster([{ clock, bandwidth: 1e6, chunkBytes: 10_000 }, {}]);
  try {
    const set = clock.timers.length;
    let sentAt: number | undefined;
    a.send(1, "checkpoint", "replica", "paced", pattern(30_000, 1), undefined, () => sentAt = clock.now());
    await clock.timersSet(set + 1);
    clock.advance(25); // the second chunk was due at 10, the third at 20: both go now
    await clock.timersSet(set + 2);
    assert.deepEqual(clock.timers.slice(set), [10, 5], "then only onSent waits, for the third chunk's end at 30");
    assert.deepEqual((await b.receive(0, "paced")).bytes, pattern(30_000, 1));
    clock.advance(5);
    assert.equal(sentAt, 30);
  } finally {
    await close();
  }
});

Deno.test("a peer that stops mid-transfer fails the receive waiting on it", async () => {
  const clock = new WatchedClock();
  const { transports: [a, b], books: [, book], close } = await cluster([
    { clock, bandwidth: 1e6, chunkBytes: 10_000 },
    {},
  ]);
  try {
    const set = clock.timers.length;
    a.send(1, "checkpoint", "replica", "cut", pattern(30_000, 1));
    const delivery = b.receive(0, "cut");
    await clock.timersSet(set + 1); // the first chunk is written, the rest wait for the clock
    a.close();
    await assert.rejects(delivery, PeerLostError);
    await book.line(/\(rank 0\): the connection ended 10000 bytes into a message of 30000/);
  } finally {
    await close();
  }
});

Deno.test("the collectives run over TCP as over the simulated switch, bit for bit", async () => {
  const machines = 4, shards = shardRanges(10_000, machines);
  const gradients = Array.from(
    { length: machines },
    (_, rank) => Float32Array.from({ length: 10_000 }, (_, i) => Math.sin(i * 0.37 + rank) / (rank + 1)),
  );
  const collectives = async (network: Transport) => {
    const own = gradients[network.rank], whole = new Float32Array(10_000);
    const part = (c: number) => Promise.resolve(own.subarray(shards[c].start, shards[c].end));
    const mean = await reduceScatterMean(network, part, shards, "step", 0);
    await allGatherShards(network, mean, shards, "step", 0, (c, values) => whole.set(values, shards[c].start));
    return whole;
  };

  const clock = new VirtualClock(), network = new Network({ bandwidth: 1e8, latencyMs: 0.1 }, { clock });
  const endpoints = gradients.map((_, rank) => {
    const [switchSide, machineSide] = directChannel();
    network.attach(rank, switchSide);
    return new NetworkEndpoint(rank, machineSide);
  });
  const simulated = await clock.until(Promise.all(endpoints.map(collectives)));
  network.close();

  const { transports, close } = await cluster(gradients.map(() => ({})));
  try {
    const overTcp = await Promise.all(transports.map(collectives));
    assert.deepEqual(overTcp, simulated);
  } finally {
    await close();
  }
});

Deno.test("a rank that moves (a replacement machine) is dialed at its new address", async () => {
  const { transports: [a, b], books: [book], close } = await cluster([{}, {}]);
  const replacement = await TcpTransport.start({ rank: 1, cluster: "test", secret: SECRET, log: () => {} });
  try {
    await a.connect(1, replacement.address); // the old rank 1 still runs: a stale machine, say
    await book.line(/closed the connection to rank 1 at 127\.0\.0\.1:\d+: rank 1 moved to 127\.0\.0\.1:\d+/);
    a.send(1, "retrieval", "fetch", "shard", pattern(3000, 1));
    assert.deepEqual((await replacement.receive(0, "shard")).bytes, pattern(3000, 1));
    assert.equal(await now(b.receive(0, "shard")), "pending");
  } finally {
    replacement.close();
    await replacement.closed();
    await close();
  }
});

Deno.test("a second process: messages both ways, then killed by its PID mid-transfer, failing the receive", async () => {
  const { transports: [a], close } = await cluster([{}]);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      `--allow-env=${SECRET_VARIABLE}`,
      new URL("./tcp_transport_peer.ts", import.meta.url).pathname,
      String(a.address.port),
    ],
    env: { [SECRET_VARIABLE]: SECRET },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [], waiting: (() => void)[] = [];
  const reading = (async () => {
    let text = "";
    for await (const piece of child.stdout.pipeThrough(new TextDecoderStream())) {
      text += piece;
      for (let end; (end = text.indexOf("\n")) >= 0; text = text.slice(end + 1)) lines.push(text.slice(0, end));
      for (const wake of waiting.splice(0)) wake();
    }
  })();
  const line = async (index: number) => {
    while (lines.length <= index) await new Promise<void>((resolve) => waiting.push(resolve));
    return lines[index];
  };
  try {
    const { port } = JSON.parse(await line(0));
    await a.connect(1, { hostname: LOCALHOST, port });
    // Less than one of the peer's chunks: its link is paced on a clock that never moves, so only a first
    // chunk goes out.
    a.send(1, "training", "ping", "ping", pattern(60_000, 1), { n: 1 });
    const pong = await a.receive(1, "pong");
    assert.deepEqual([pong.bytes, pong.info], [pattern(60_000, 1).reverse(), { n: 1 }]);

    const stalled = a.receive(1, "stalled");
    a.send(1, "training", "ping", "ping", new Uint8Array(0), { stall: true });
    assert.equal(await line(1), "mid-transfer");
    Deno.kill(child.pid, "SIGKILL");
    await assert.rejects(stalled, PeerLostError);
    assert.equal((await child.status).signal, "SIGKILL");
  } finally {
    try {
      child.kill("SIGKILL"); // through its handle: never a PID the system may have given to another process since
    } catch {
      // It has ended already.
    }
    await child.status;
    await reading;
    await close();
  }
});
