// A second process for the TCP transport's tests (tcp_transport_test.ts starts it): rank 1 of the test
// cluster, its link paced on a virtual clock that never moves, so a message's first chunk goes out at once
// and the rest never. It prints its port, dials rank 0 at the port given as its argument and answers each
// "ping" with a "pong" of its bytes reversed; on a ping marked "stall" it starts a message of many chunks
// and prints "mid-transfer" once the first is written, and the test kills it. Also exports the watched
// clock both sides use.

import { VirtualClock } from "../agents/protocol/clock.ts";
import { TcpTransport } from "../agents/net/tcp-transport.ts";

export const SECRET_VARIABLE = "TCP_TRANSPORT_TEST_SECRET";

/** A virtual clock that says when timers are set: what a paced link or a handshake waits on. */
export class WatchedClock extends VirtualClock {
  /** The delay of every timer set so far. */
  readonly timers: number[] = [];
  #waiters: { count: number; resolve: () => void }[] = [];

  override setTimer(ms: number, run: () => void): () => void {
    this.timers.push(ms);
    for (const waiter of this.#waiters.filter((waiter) => waiter.count <= this.timers.length)) waiter.resolve();
    this.#waiters = this.#waiters.filter((waiter) => waiter.count > this.timers.length);
    return super.setTimer(ms, run);
  }

  /** Resolves once `count` timers have been set, in all. */
  timersSet(count: number): Promise<void> {
    if (count <= this.timers.length) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }
}

async function main(parentPort: number) {
  const clock = new WatchedClock();
  const transport = await TcpTransport.start({
    rank: 1,
    cluster: "test",
    secret: Deno.env.get(SECRET_VARIABLE)!,
    clock,
    bandwidth: 1e6,
    chunkBytes: 64 * 1024,
  });
  console.log(JSON.stringify({ port: transport.address.port }));
  await transport.connect(0, { hostname: "127.0.0.1", port: parentPort });
  for (;;) {
    const ping = await transport.receive(0, "ping");
    if ((ping.info as { stall?: boolean } | undefined)?.stall) {
      const set = clock.timers.length;
      transport.send(0, "checkpoint", "replica", "stalled", new Uint8Array(4 * 1024 * 1024).fill(7));
      await clock.timersSet(set + 1);
      console.log("mid-transfer");
    } else {
      transport.send(0, "training", "pong", "pong", ping.bytes.reverse(), ping.info);
    }
  }
}

if (import.meta.main) await main(Number(Deno.args[0]));
