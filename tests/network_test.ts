// The simulated network: messages are paced by each NIC's send and receive links in the order sent,
// delivered as copies, recorded on the timeline, and lost when a machine fails; an endpoint matches
// messages to receivers and drops those of an abandoned recovery epoch.

import assert from "node:assert/strict";
import { AbortedError, type Delivery, Network, NetworkEndpoint } from "../agents/network.ts";

/** A network of `count` machines in this thread. */
function connect(count: number, bandwidth = 1e6, latencyMs = 0.5) {
  const network = new Network({ bandwidth, latencyMs });
  const endpoints = Array.from({ length: count }, (_, rank) => {
    const channel = new MessageChannel();
    network.attach(rank, channel.port1);
    return new NetworkEndpoint(rank, channel.port2);
  });
  const close = () => {
    network.close();
    for (const endpoint of endpoints) endpoint.close();
  };
  return { network, endpoints, close };
}

const pattern = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 255);

Deno.test("a message arrives as a copy of what was sent, once its bytes have crossed both links", async () => {
  const { network, endpoints: [a, b], close } = connect(2);
  try {
    const sent = pattern(20_000, 1);
    a.send(1, "training", "all-gather", "x", sent);
    sent.fill(0); // the sender's buffer is its own again at once
    const delivery = await b.receive(0, "x");
    assert.deepEqual(delivery.bytes, pattern(20_000, 1));
    const [record] = network.timeline;
    assert.equal(record.bytes, 20_000);
    assert.equal(record.kind, "training");
    assert.ok(Math.abs(record.end - record.start - 20) < 1e-9, "20,000 bytes at 1 MB/s take 20 ms");
    assert.ok(network.now() >= record.end + 0.5, "it arrived one latency after its last byte");
  } finally {
    close();
  }
});

Deno.test("a NIC sends its messages one after another; other machines' links are independent", async () => {
  const { network, endpoints: [a, b, c, d], close } = connect(4);
  try {
    a.send(1, "checkpoint", "replica", "first", pattern(10_000, 1));
    a.send(2, "training", "reduce-scatter", "second", pattern(5_000, 2));
    c.send(3, "training", "reduce-scatter", "third", pattern(5_000, 3));
    await Promise.all([b.receive(0, "first"), c.receive(0, "second"), d.receive(2, "third")]);
    const find = (from: number, to: number) => network.timeline.find((r) => r.from === from && r.to === to)!;
    const [first, second, third] = [find(0, 1), find(0, 2), find(2, 3)];
    assert.equal(second.start, first.end, "the second message waited for the first on machine 0's link");
    assert.ok(third.start < first.end, "machine 2's link was free");
    // Two senders to one receiver share its receive link.
    b.send(3, "training", "all-gather", "to-d-1", pattern(8_000, 4));
    c.send(3, "training", "all-gather", "to-d-2", pattern(8_000, 5));
    await Promise.all([d.receive(1, "to-d-1"), d.receive(2, "to-d-2")]);
    const [toD1, toD2] = [find(1, 3), find(2, 3)].sort((x, y) => x.start - y.start);
    assert.ok(toD2.start >= toD1.end);
  } finally {
    close();
  }
});

Deno.test("messages to or from a failed machine are lost and marked so on the timeline", async () => {
  const { network, endpoints: [a, b], close } = connect(2, 1e5);
  try {
    a.send(1, "checkpoint", "replica", "lost", pattern(50_000, 1)); // 500 ms on the wire
    await new Promise((resolve) => setTimeout(resolve, 5));
    network.detach(1, "machine 1 failed");
    assert.equal(network.timeline[0].dropped, "machine 1 failed");
    assert.equal(network.bytesInFlight, 0);
  } finally {
    close();
    b.close();
  }
});

Deno.test("an abort fails pending receives and drops messages of the abandoned epoch", async () => {
  const { endpoints: [a, b], close } = connect(2);
  try {
    const pending = b.receive(0, "never");
    b.abort(1);
    await assert.rejects(pending, AbortedError);
    // A caller that began before the abort cannot receive any more.
    await assert.rejects(b.receive(0, "late", 0), AbortedError);
    a.send(1, "training", "all-gather", "stale", pattern(10, 1)); // a is still in epoch 0
    a.abort(1);
    a.send(1, "training", "all-gather", "fresh", pattern(10, 2));
    const fresh = await b.receive(0, "fresh");
    assert.deepEqual(fresh.bytes, pattern(10, 2));
    const handled: Delivery[] = [];
    b.handle("checkpoint", (delivery) => handled.push(delivery));
    a.send(1, "checkpoint", "replica", "r", pattern(10, 3), { owner: 0 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(handled.map((delivery) => delivery.info), [{ owner: 0 }]);
  } finally {
    close();
  }
});
