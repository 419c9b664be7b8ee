// Why a recovery took each shard from where it did: for every machine's shard, the copies of the iteration
// rolled back to that outlived the failure (its own memory, a peer's, the persistent store) and what each
// would have cost to fetch at the lab's link and store speeds; beside the root's rollback choice (the
// iterations it could have gone back to, and why it took this one).

import { describeSource } from "../agents/protocol/spec.ts";
import type { ObservedRecovery } from "../agents/sim/observer.ts";
import type { LabSettings, MachineView } from "./session.ts";

export interface CopyCost {
  /** "local memory", "machine 2's memory", "persistent storage". */
  where: string;
  /** Estimated milliseconds to have it in the owner's memory (0: it is there). */
  ms: number;
}

export interface ShardWhy {
  owner: number;
  /** The source the recovery used, as the root names it ("local", "peer 0", "persistent"). */
  used: string;
  /** Every copy that survived, cheapest first. */
  copies: CopyCost[];
}

export interface RecoveryWhy {
  shards: ShardWhy[];
  /** The root's reason for the iteration it rolled back to, and every iteration it weighed, newest first. */
  rollback: string;
  candidates: string[];
}

/**
 * The explanation of `recovery`, from what the machines' memories held when it finished (`machines`: a
 * machine that failed in hardware held nothing that survived) and the lab's speeds.
 */
export function explainRecovery(
  recovery: ObservedRecovery,
  machines: MachineView[],
  settings: LabSettings,
): RecoveryWhy {
  const lostMemory = new Set(recovery.failures.filter((f) => f.kind === "hardware").map((f) => f.rank));
  const ms = (bytes: number, mbps: number) => bytes / (mbps * 1e3);
  const shards = recovery.machines.map((restored, owner): ShardWhy => {
    const holders = machines.filter((m) =>
      !lostMemory.has(m.rank) &&
      m.memory.some((entry) => entry.owner === owner && entry.iteration === recovery.iteration)
    ).map((m) => m.rank);
    const copies: CopyCost[] = holders.map((holder) =>
      holder === owner
        ? { where: "local memory", ms: 0 }
        : { where: `machine ${holder}'s memory`, ms: ms(restored.bytes, settings.networkMBps) }
    );
    // The store holds the persistence boundaries (and whatever the recovery read from it).
    const persisted = settings.persistEvery > 0 && recovery.iteration > 0 &&
      recovery.iteration % settings.persistEvery === 0;
    if (persisted || restored.source.from === "persistent") {
      copies.push({ where: "persistent storage", ms: ms(restored.bytes, settings.storageMBps) });
    }
    return { owner, used: describeSource(restored.source), copies: copies.sort((a, b) => a.ms - b.ms) };
  });
  const candidates = recovery.choice.candidates.map((c) =>
    `iteration ${c.iteration}: ${c.retrievalMs.toFixed(0)} ms to retrieve + ${c.recomputeMs.toFixed(0)} ms to redo`
  );
  return { shards, rollback: recovery.choice.reason, candidates };
}

/** One line a shard: "shard 1: from peer 0 (survived: machine 0's memory 10 ms, persistent storage 98 ms)". */
export function describeShard(shard: ShardWhy): string {
  const copies = shard.copies.map((c) => `${c.where} ${c.ms.toFixed(0)} ms`).join(", ");
  return `shard ${shard.owner}: from ${shard.used} (survived: ${copies || "no copy but the initial state"})`;
}
