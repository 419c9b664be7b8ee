// The simulated network, on a virtual clock: messages are paced by each NIC's send and receive links in
// the order sent, delivered as copies one latency after their last byte, recorded on the timeline, and lost
// when a machine fails; an endpoint matches messages to receivers and drops those of an abandoned epoch.

import assert from "node:assert/strict";
import { VirtualClock } from "../agents/protocol/clock.ts";
import { AbortedError, type Delivery } from "../agents/protocol/transport.ts";
import { directChannel, Network, NetworkEndpoint, type Port, type TransferRecord } from "../agents/sim/network.ts";

type Channel = () => [Port, Port];

/** Both ways of joining a NIC to the switch: MessagePorts (as between Workers), and direct ports in one thread. */
const CHANNELS: Record<string, Channel> = {
  "message ports": () => {
    const channel = new MessageChannel();
    return [channel.port1, channel.port2];
  },
  "direct ports": directChannel,
};

/** A network of `count` machines in this thread, on a virtual clock. */
function connector(channel: Channel) {
  return (count: number, bandwidth = 1e6, latencyMs = 0.5) => {
    const clock = new VirtualClock(), network = new Network({ bandwidth, latencyMs }, { clock });
    const endpoints = Array.from({ length: count }, (_, rank) => {
      const [switchSide, machineSide] = channel();
      network.attach(rank, switchSide);
      return new NetworkEndpoint(rank, machineSide);
    });
    /** Resolves once the switch has taken `messages` more messages from the endpoints (they cross a port). */
    const queued = (messages: number) =>
      new Promise<TransferRecord[]>((resolve) => {
        const seen: TransferRecord[] = [];
        const stop = network.onTransfer((record) => {
          seen.push(record);
          if (seen.length === messages) stop(), resolve(seen);
        });
      });
    const close = () => {
      network.close();
      for (const endpoint of endpoints) endpoint.close();
    };
    return { clock, network, endpoints, queued, close };
  };
}

/** Registers the test once for each kind of channel: the network behaves the same over both. */
function networkTest(name: string, body: (connect: ReturnType<typeof connector>) => Promise<void>) {
  for (const [kind, channel] of Object.entries(CHANNELS)) {
    Deno.test(`${name} (${kind})`, () => body(connector(channel)));
  }
}

const pattern = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 255);

/** `promise`'s value if it has settled already, else "pending" (an already settled promise wins a race). */
const now = <T>(promise: Promise<T>) => Promise.race([promise, Promise.resolve("pending" as const)]);

networkTest(
  "a message arrives as a copy of what was sent, one latency after its last byte has crossed both links",
  async (connect) => {
    const { clock, network, endpoints: [a, b], queued, close } = connect(2);
    try {
      const sent = pattern(20_000, 1), taken = queued(1);
      a.send(1, "training", "all-gather", "x", sent);
      sent.fill(0); // the sender's buffer is its own again at once
      const [record] = await taken;
      assert.deepEqual([record.bytes, record.kind, record.start, record.end], [20_000, "training", 0, 20]);
      const delivery = b.receive(0, "x");
      clock.advance(20.4);
      assert.equal(network.bytesInFlight, 20_000, "nothing is delivered before the latency has passed");
      clock.advance(0.1);
      assert.deepEqual((await delivery).bytes, pattern(20_000, 1));
    } finally {
      close();
    }
  },
);

networkTest("a NIC sends its messages one after another; other machines' links are independent", async (connect) => {
  const { clock, network, endpoints: [a, b, c, d], queued, close } = connect(4);
  try {
    let taken = queued(3);
    a.send(1, "checkpoint", "replica", "first", pattern(10_000, 1));
    a.send(2, "training", "reduce-scatter", "second", pattern(5_000, 2));
    c.send(3, "training", "reduce-scatter", "third", pattern(5_000, 3));
    await taken;
    clock.advance(100);
    await Promise.all([b.receive(0, "first"), c.receive(0, "second"), d.receive(2, "third")]);
    const find = (from: number, to: number) => network.timeline.find((r) => r.from === from && r.to === to)!;
    assert.deepEqual([find(0, 1).start, find(0, 1).end], [0, 10]);
    assert.deepEqual(
      [find(0, 2).start, find(0, 2).end],
      [10, 15],
      "the second waited for the first on machine 0's link",
    );
    assert.deepEqual([find(2, 3).start, find(2, 3).end], [0, 5], "machine 2's link was free");
    // Two senders to one receiver share its receive link.
    taken = queued(2);
    b.send(3, "training", "all-gather", "to-d-1", pattern(8_000, 4));
    c.send(3, "training", "all-gather", "to-d-2", pattern(8_000, 5));
    const [toD1, toD2] = await taken;
    clock.advance(100);
    await Promise.all([d.receive(1, "to-d-1"), d.receive(2, "to-d-2")]);
    assert.deepEqual([toD1.start, toD1.end, toD2.start, toD2.end], [100, 108, 108, 116]);
  } finally {
    close();
  }
});

networkTest("a sender hears when its message's last byte has left its NIC, before it arrives", async (connect) => {
  const { clock, network, endpoints: [a, b], queued, close } = connect(2);
  try {
    const taken = queued(1);
    const sentAt = new Promise<number>((resolve) =>
      a.send(1, "checkpoint", "replica", "r", pattern(10_000, 1), undefined, () => resolve(clock.now()))
    );
    const arrival = b.receive(0, "r");
    await taken;
    clock.advance(10);
    assert.equal(await sentAt, 10);
    assert.equal(network.bytesInFlight, 10_000, "it is delivered a latency later");
    clock.advance(0.5);
    await arrival;
  } finally {
    close();
  }
});

networkTest("messages to or from a failed machine are lost and marked so on the timeline", async (connect) => {
  const { clock, network, endpoints: [a, b], queued, close } = connect(2, 1e5);
  try {
    const taken = queued(1);
    a.send(1, "checkpoint", "replica", "lost", pattern(50_000, 1)); // 500 ms on the wire
    await taken;
    clock.advance(5);
    network.detach(1, "machine 1 failed");
    assert.equal(network.timeline[0].dropped, "machine 1 failed");
    assert.equal(network.bytesInFlight, 0);
    clock.advance(1000);
    assert.equal(network.timeline[0].dropped, "machine 1 failed");
  } finally {
    close();
    b.close();
  }
});

networkTest("an abort fails pending receives and drops messages of the abandoned epoch", async (connect) => {
  const { clock, endpoints: [a, b], queued, close } = connect(2);
  try {
    const pending = b.receive(0, "never");
    b.abort(1);
    await assert.rejects(pending, AbortedError);
    // A caller that began before the abort cannot receive any more.
    await assert.rejects(b.receive(0, "late", 0), AbortedError);
    let taken = queued(2);
    a.send(1, "training", "all-gather", "stale", pattern(10, 1)); // a is still in epoch 0
    a.abort(1);
    a.send(1, "training", "all-gather", "fresh", pattern(10, 2));
    await taken;
    const stale = b.receive(0, "stale");
    clock.advance(10);
    assert.deepEqual((await b.receive(0, "fresh")).bytes, pattern(10, 2));
    // Messages between two machines arrive in the order sent: had the stale one been taken, it would be by now.
    assert.equal(await now(stale), "pending", "the stale message was dropped");
    const handled: Delivery[] = [];
    const delivered = new Promise<void>((resolve) =>
      b.handle("checkpoint", (delivery) => {
        handled.push(delivery);
        resolve();
      })
    );
    taken = queued(1);
    a.send(1, "checkpoint", "replica", "r", pattern(10, 3), { owner: 0 });
    await taken;
    clock.advance(10);
    await delivered;
    assert.deepEqual(handled.map((delivery) => delivery.info), [{ owner: 0 }]);
  } finally {
    close();
  }
});

Deno.test("over direct ports on a virtual clock, a busy network runs the same way every time", async () => {
  const run = async () => {
    const { clock, network, endpoints, queued, close } = connector(directChannel)(6, 1e6, 0.25);
    const arrivals: string[] = [];
    for (const endpoint of endpoints) {
      endpoint.handle("checkpoint", (d) => arrivals.push(`${clock.now()} ${d.from}->${endpoint.rank} ${d.tag}`));
    }
    try {
      const taken = queued(30);
      for (let i = 0; i < 30; i++) {
        const from = (i * 7) % 6, to = (from + 1 + (i % 5)) % 6;
        endpoints[from].send(to, "checkpoint", "replica", `m${i}`, pattern(1000 + 97 * i, i));
      }
      await taken;
      for (let ms = 0; ms < 200; ms++) {
        clock.advance(1);
        for (let i = 0; i < 5; i++) await Promise.resolve();
      }
      return { arrivals, timeline: network.timeline.map((r) => [r.from, r.to, r.start, r.end]) };
    } finally {
      close();
    }
  };
  const first = await run(), second = await run();
  assert.equal(first.arrivals.length, 30);
  assert.deepEqual(second, first);
});
