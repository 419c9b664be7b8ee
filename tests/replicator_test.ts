// A machine's replication bookkeeping, as a pure state machine: the pieces it releases, what it records
// once a checkpoint reached every peer, what it keeps, and what a recovery abandons. No network, no clock.

import assert from "node:assert/strict";
import {
  CheckpointScheduler,
  DEFAULT_INTERLEAVING,
  type ReplicationPolicy,
} from "../agents/replication/interleaving.ts";
import { type ReplicationCommand, Replicator, SlotCopy } from "../agents/replication/replicator.ts";

const CHUNK = 4096, PEERS = [2, 3];

function replicator(policy: ReplicationPolicy = "naive") {
  return new Replicator(new CheckpointScheduler({ ...DEFAULT_INTERLEAVING, policy }, 1e9, CHUNK, PEERS));
}

const plan = (keep: number, policy: ReplicationPolicy = "naive") => ({
  checkpoint: true,
  policy,
  replicateEvery: null,
  keep,
});
const sends = (commands: ReplicationCommand[]) => commands.flatMap((command) => command.do === "send" ? [command] : []);
const checkpoint = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 7 + seed) & 255);

/** Sends every piece of `commands` and those they lead to; returns every other command on the way. */
function deliverAll(replication: Replicator, commands: ReplicationCommand[]): ReplicationCommand[] {
  const others: ReplicationCommand[] = [];
  for (let queue = commands; queue.length;) {
    const [command, ...rest] = queue;
    queue = command.do === "send" ? [...rest, ...replication.sent(command.order, 0)] : rest;
    if (command.do !== "send") others.push(command);
  }
  return others;
}

Deno.test("a published checkpoint goes out whole to every peer from a copy of its own; once it is all off, it is recorded", () => {
  const replication = replicator();
  assert.deepEqual(replication.beginIteration(plan(0), false), []);
  const slot = checkpoint(10_000, 1);
  const commands = replication.published(1, new SlotCopy(slot), 0);
  slot.fill(0); // the slot is reused: the pieces come from the copy
  const pieces = sends(commands);
  for (const peer of PEERS) {
    const toPeer = pieces.filter((send) => send.order.peer === peer);
    const whole = new Uint8Array(10_000);
    for (const { order, piece, total } of toPeer) {
      assert.equal(total, 10_000);
      whole.set(piece, order.offset);
    }
    assert.deepEqual(whole, checkpoint(10_000, 1), `peer ${peer} gets every byte`);
  }
  assert.equal(replication.replicatedIteration, 0, "nothing is replicated before its last byte is off");
  assert.deepEqual(deliverAll(replication, commands), [{ do: "mark replicated", iteration: 1 }]);
  assert.equal(replication.replicatedIteration, 1);
});

Deno.test("the iteration the cluster keeps is kept, and stored again from its copy if newer checkpoints evicted it", () => {
  const replication = replicator();
  replication.beginIteration(plan(0), false);
  deliverAll(replication, replication.published(1, new SlotCopy(checkpoint(5000, 1)), 0));
  deliverAll(replication, replication.published(2, new SlotCopy(checkpoint(5000, 2)), 0));
  const commands = replication.beginIteration(plan(1), false);
  assert.deepEqual(commands.map((command) => command.do), ["store again", "keep"]);
  const again = commands[0];
  assert.ok(again.do === "store again");
  assert.deepEqual([again.iteration, again.bytes], [1, checkpoint(5000, 1)]);
  assert.deepEqual(replication.beginIteration(plan(1), false), [], "kept once");
  assert.deepEqual(replication.beginIteration(plan(2), true), [{ do: "keep", iteration: 2 }], "still stored");
  assert.deepEqual(replication.beginIteration(plan(1), false), [{ do: "keep", iteration: 1 }], "its copy was let go");
});

Deno.test("a recovery abandons what was being sent: late notices record nothing, and the next checkpoint starts afresh", () => {
  const replication = replicator();
  replication.beginIteration(plan(0), false);
  const abandoned = sends(replication.published(3, new SlotCopy(checkpoint(9000, 3)), 0));
  replication.reset();
  for (const { order } of abandoned) assert.deepEqual(replication.sent(order, 1), []);
  assert.equal(replication.replicatedIteration, 0);
  const fresh = replication.published(4, new SlotCopy(checkpoint(9000, 4)), 2);
  assert.ok(sends(fresh).every((send) => send.order.iteration === 4));
  assert.deepEqual(deliverAll(replication, fresh), [{ do: "mark replicated", iteration: 4 }]);
});

Deno.test("with the policy none nothing is copied or sent; interleaved sends only while training traffic is idle", () => {
  const none = replicator("none"), unsent = new TakesCounted(checkpoint(5000, 1));
  none.beginIteration(plan(0, "none"), false);
  assert.deepEqual(none.published(1, unsent, 0), []);
  assert.equal(unsent.takes, 0, "no copy is taken");
  const interleaved = replicator("interleaved");
  interleaved.beginIteration(plan(0, "interleaved"), false);
  interleaved.trainingBusy(0);
  assert.deepEqual(
    interleaved.published(1, new SlotCopy(checkpoint(5000, 1)), 1),
    [],
    "training traffic is on the wire",
  );
  assert.ok(sends(interleaved.trainingIdle(2)).length > 0, "the idle span is used");
});

/** A slot copy that counts how often it is asked for its copy. */
class TakesCounted extends SlotCopy {
  takes = 0;
  override take(): Uint8Array {
    this.takes++;
    return super.take();
  }
}

Deno.test("the peers and the persistent store read one copy of a checkpoint, taken once", () => {
  const replication = replicator(), copy = new TakesCounted(checkpoint(5000, 1));
  replication.beginIteration(plan(0), false);
  const [first] = sends(replication.published(1, copy, 0));
  const persisted = copy.take();
  assert.equal(first.piece.buffer, persisted.buffer, "the pieces come from the copy the persistent store writes");
  assert.notEqual(persisted.buffer, copy.slot.buffer, "a copy, not the slot");
  assert.deepEqual(persisted, checkpoint(5000, 1));
  assert.equal(copy.takes, 2);
});
