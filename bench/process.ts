// The process-mode section: the cluster as OS processes on a local etcd (agents/process/), four machines
// training the tiny model, struck with SIGKILL once iteration 5 is done (a persistent checkpoint of
// iteration 4 exists): one machine replaced by a hot spare (its arena committed, its engine built and its
// pipelines run once, waiting in etcd) against a cold replacement (a process started only once the root has
// detected the failure), and a whole placement group lost, its shards from the persistent store, against
// one machine served from a peer's memory. Each row is the recovery as the root timed it, from the
// detection to training resumed.

import { ProcessCluster } from "../agents/process/launcher.ts";
import { RECOVERIES, type RecoveryRecord, waitFor } from "../agents/process/registry.ts";
import type { BenchContext, Section } from "./measure.ts";

const CASES = [
  { name: "one machine, a hot spare", spares: 1, ranks: [2], cold: false },
  { name: "one machine, a cold replacement", spares: 0, ranks: [2], cold: true },
  { name: "a whole group, hot spares", spares: 2, ranks: [0, 1], cold: false },
];

async function recover({ spares, ranks, cold }: (typeof CASES)[number]): Promise<RecoveryRecord> {
  const cluster = await ProcessCluster.start({ machines: 4, spares, iterations: 7, seed: 1, log: () => {} });
  try {
    await waitFor(cluster.health, "root/state", (_, value) => (value as { iteration: number }).iteration >= 5);
    const holders = await Promise.all(ranks.map((rank) => cluster.holderOf(rank)));
    // The root detects a failure when the machine's registration leaves etcd (its lease runs out).
    let detected!: () => void;
    const detection = new Promise<void>((resolve) => detected = resolve);
    const unwatch = cluster.health.watch(`machines/${ranks[0]}`, (event) => event.type === "delete" && detected());
    await cluster.health.watching();
    for (const holder of holders) Deno.kill(holder.pid, "SIGKILL");
    await Promise.all(holders.map((holder) => holder.status));
    // No spare: the root waits for a process to join, started only now, so that it starts from nothing.
    if (cold) await detection.then(() => cluster.spawnMachine());
    unwatch();
    const [, record] = await waitFor(cluster.health, RECOVERIES);
    await cluster.finished();
    return record as RecoveryRecord;
  } finally {
    await cluster.close();
  }
}

export const processSection: Section = {
  name: "process",
  steps: () => CASES.length,
  async run({ progress }: BenchContext) {
    const records: RecoveryRecord[] = [];
    for (const item of CASES) {
      records.push(await recover(item));
      progress.step(`process cluster: ${item.name}`);
    }
    const [hot, cold, group] = records, s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    return {
      title: "Machines as processes: recovery with a hot spare, a cold replacement, and from the persistent store",
      summary: `hot spare ${s(hot.phases.total)} against a cold replacement ${s(cold.phases.total)}; a group from ` +
        `the persistent store ${s(group.phases.total)}`,
      intro: "Four machine processes and two roots on a local etcd, all on 127.0.0.1, the tiny model; SIGKILL once " +
        "iteration 5 is done. Times are the root's, from the first detection to training resumed (detection itself, " +
        "a lease running out in etcd, comes before). The cold replacement's process is started at the detection.",
      header: ["case", "sources", "replacement", "retrieval", "load", "synchronize", "total"],
      rows: records.map((record, i) => [
        CASES[i].name,
        record.sources.join(", "),
        ...[record.phases.replacement, record.phases.retrieval, record.phases.load, record.phases.synchronize].map(s),
        s(record.phases.total),
      ]),
      raw: records,
    };
  },
};
