// Faults struck in a machine's host memory from outside it, as the chaos soak injects them into either
// cluster (in-process or Workers): both keep each machine's arena, and read or damage it the same way.

import { InMemoryCheckpointStore } from "../../core/memory-store.ts";

export type HostMemory = WebAssembly.Memory | SharedArrayBuffer;

export type MemoryStats = ReturnType<InMemoryCheckpointStore["stats"]>;

/** What the arena `memory` holds (a machine whose hardware is lost has none: null). */
export function memoryStats(memory: HostMemory | null): MemoryStats | null {
  return memory && InMemoryCheckpointStore.attach(memory).stats();
}

/**
 * Flips a byte in the middle of the newest replica that machine `rank`'s arena holds for a peer; returns that
 * peer (none held: null). A restore must never use the replica: its checksums no longer match.
 */
export function corruptNewestReplica(memory: HostMemory | null, rank: number): number | null {
  if (!memory) return null;
  const store = InMemoryCheckpointStore.attach(memory);
  const [owner, { newest }] = [...store.stats().byOwner].find(([owner]) => owner !== rank) ?? [-1, { newest: -1 }];
  if (owner < 0) return null;
  const flipped = store.withCheckpoint(owner, newest, (bytes) => {
    bytes[bytes.length >> 1] ^= 0xff;
    return true;
  });
  return flipped ? owner : null;
}
