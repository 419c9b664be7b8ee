// A root process: it campaigns in the cluster's root election (etcd), and once elected drives the machine
// processes with the root agent: from the start if no root has led yet, else taking over from what the
// lost root saved in etcd (`RootAgent.takeOver`). It keeps the cluster's state in etcd (ClusterStateStore:
// the members, the newest complete iteration of every shard, the recovery under way), every write fenced
// by the epoch it moved the cluster to when it was elected: a root that was superseded and goes on has its
// first write refused, and stops. Standbys wait in the election. Each iteration's loss is
// written to etcd (a root that takes over goes on writing them); at the end the leader writes the final
// state to a safetensors file, marks the run done in etcd (every process then leaves) and shuts the
// machines down.

import { encodeSafetensors, parseSafetensors, tensorAsF32 } from "../../core/safetensors.ts";
import type { Etcd } from "../etcd/client.ts";
import { RootElection } from "../etcd/election.ts";
import { EtcdHealthStore } from "../etcd/health.ts";
import { ClusterStateStore, FencedError, type StateChange } from "../etcd/state.ts";
import { type RecoveryReport, RootAgent } from "../root-agent.ts";
import { type ClusterSettings, describeSource } from "../protocol/spec.ts";
import { ProcessMachines } from "./process-machines.ts";
import { DONE_KEY, LOSSES, RECOVERIES, type RecoveryRecord, SETTINGS_KEY, valueOf } from "./registry.ts";

export interface RootProcessOptions {
  etcd: Etcd;
  cluster: string;
  secret: string | Uint8Array;
  /** This root's name in the election. */
  id: string;
  /** The job, written to etcd unless a root wrote it first. */
  settings?: ClusterSettings;
  iterations: number;
  heartbeatTimeoutMs: number;
  /** How long a dead leader's lease keeps the standbys waiting (whole seconds). */
  electionTtlSeconds: number;
  /** Where the leader writes the final state (safetensors: params, m, v). */
  out: string;
  log?: (line: string) => void;
}

/** The key the root agent keeps its epoch and iteration under (see RootAgent). */
const SAVED_KEY = "root/state";

export type TrainingState = Awaited<ReturnType<RootAgent["state"]>>;

export function encodeState(state: TrainingState): Uint8Array {
  return encodeSafetensors(
    (["params", "m", "v"] as const).map((name) => ({ name, shape: [state[name].length], data: state[name] })),
  );
}

export function decodeState(bytes: Uint8Array, source: string): TrainingState {
  const file = parseSafetensors(bytes, source);
  const tensor = (name: string) => tensorAsF32(file, name, file.tensors.get(name)?.shape ?? [0], source);
  return { params: tensor("params"), m: tensor("m"), v: tensor("v") };
}

function describeRecovery(report: RecoveryReport): string {
  const ranks = report.detections.map((detection) => detection.rank);
  const sources = report.machines.map((machine, rank) => `${rank} from ${describeSource(machine.source)}`);
  const what = ranks.length ? `recovered ranks ${ranks.join(", ")}` : "rolled every machine back";
  const phases = (["replacement", "retrieval", "load", "synchronize"] as const).map((phase) =>
    `${phase} ${Math.round(report[phase])} ms`
  );
  const failedStarts = report.failedStarts.map((failed) => `; rank ${failed.rank}'s start failed: ${failed.error}`);
  const recovered = `${what} to iteration ${report.iteration}: ${sources.join(", ")}`;
  return `${recovered} (${phases.join(", ")})${failedStarts.join("")}`;
}

/**
 * Runs one root process to the end of the job: "led" if it led the run to its end, "done" if another
 * root finished it while this one stood by.
 */
export async function runRootProcess(options: RootProcessOptions): Promise<"led" | "done"> {
  const log = options.log ?? ((line: string) => console.error(line));
  const health = new EtcdHealthStore(options.etcd, options.cluster);
  let finished!: () => void;
  const done = new Promise<"done">((resolve) => finished = () => resolve("done"));
  const unwatch = health.watch(DONE_KEY, (event) => event.type === "put" && finished());
  try {
    // Read before the watch is confirmed: an etcd that cannot be reached fails this, after bounded retries.
    if ((await health.get(DONE_KEY)).has(DONE_KEY)) return "done";
    await health.watching();
    if (options.settings && !(await health.get(SETTINGS_KEY)).has(SETTINGS_KEY)) {
      await health.put(SETTINGS_KEY, options.settings);
    }
    const settings = await valueOf(health, SETTINGS_KEY) as ClusterSettings;
    const election = new RootElection(options.etcd, options.cluster, options.electionTtlSeconds);
    const standing = new AbortController();
    const leadership = await Promise.race([election.campaign(options.id, { signal: standing.signal, log }), done]);
    if (leadership === "done") {
      standing.abort(new Error("the run is done"));
      return "done";
    }
    if ((await health.get(DONE_KEY)).has(DONE_KEY)) { // finished as this root was being elected
      await leadership.resign();
      return "done";
    }
    log(`root ${options.id}: elected`);
    // The leader moves the cluster's epoch on: whatever a superseded root still tries to write is refused.
    const clusterState = await ClusterStateStore.open(options.etcd, options.cluster);
    const fencing = await clusterState.advanceEpoch(await clusterState.epoch());
    let superseded!: (error: Error) => void;
    const fencedOut = new Promise<never>((_, reject) => superseded = reject);
    // Writes still being tried (etcd may be away for a while): the run is marked done only after them.
    const pending = new Set<Promise<unknown>>();
    const track = (write: Promise<unknown>) => {
      pending.add(write);
      write.finally(() => pending.delete(write));
    };
    const write = (changes: StateChange[]) =>
      track(
        clusterState.write(fencing, changes).catch((error) => {
          if (error instanceof FencedError) {
            superseded(new Error(`root ${options.id} was superseded: ${error.message}`));
          } else log(`root ${options.id}: writing the cluster's state failed: ${error.message}`);
        }),
      );
    const shards = (iteration: number): StateChange[] =>
      Array.from({ length: settings.machines }, (_, rank) => ({ kind: "shard", rank, iteration }));
    const machines = await ProcessMachines.open(settings, health, options.cluster, options.secret, fencing, log);
    machines.onMember = (id, member) => write([{ kind: "member", id, member }]);
    let failed: number[] = [];
    const rootSettings = { heartbeatTimeoutMs: options.heartbeatTimeoutMs, health };
    const root = (await health.get(SAVED_KEY)).has(SAVED_KEY)
      ? await RootAgent.takeOver(machines, rootSettings)
      : await RootAgent.start(machines, rootSettings);
    log(`root ${options.id}: leads from iteration ${root.iteration}, epoch ${root.epoch}`);
    root.onEvent((event) => {
      if (event.type === "failure") failed = [...failed, event.detection.rank];
      if (event.type === "recovering") {
        write([{ kind: "recovery", recovery: { epoch: event.epoch, phase: event.phase, failed, iteration: null } }]);
      }
      if (event.type === "iteration" && event.plan.checkpoint) write(shards(event.iteration));
      if (event.type === "recovery") {
        failed = [];
        write([{ kind: "recovery", recovery: null }, ...shards(event.iteration)]);
      }
      if (event.type === "iteration") {
        log(`root ${options.id}: iteration ${event.iteration} loss ${event.loss}`);
        track(
          health.put(`${LOSSES}${event.iteration}`, event.loss).catch((error) =>
            log(`root ${options.id}: recording a loss failed: ${error.message}`)
          ),
        );
      } else if (event.type === "recovery") {
        log(`root ${options.id}: ${describeRecovery(event)}`);
        const record: RecoveryRecord = {
          root: options.id,
          ranks: event.detections.map((detection) => detection.rank),
          iteration: event.iteration,
          sources: event.machines.map((machine) => describeSource(machine.source)),
          phases: {
            replacement: event.replacement,
            retrieval: event.retrieval,
            load: event.load,
            synchronize: event.synchronize,
            total: event.resumedAt - Math.min(event.resumedAt, ...event.detections.map((d) => d.detectedAt)),
          },
        };
        track(
          health.put(`${RECOVERIES}${event.epoch}`, record).catch((error) =>
            log(`root ${options.id}: recording a recovery failed: ${error.message}`)
          ),
        );
      }
    });
    const lost = leadership.lost.then((error) => {
      throw new Error(`root ${options.id} lost its leadership: ${error.message}`);
    });
    try {
      await Promise.race([root.runUntil(options.iterations), lost, fencedOut]);
      await Deno.writeFile(options.out, encodeState(await root.state()));
      while (pending.size) await Promise.all(pending);
      await health.put(DONE_KEY, { iteration: root.iteration, out: options.out, root: options.id });
      await root.close();
      await health.close();
      await leadership.resign();
      return "led";
    } catch (error) {
      // The machines' leases are left as they are, for the root that takes over.
      root.lose();
      // A root that failed because another took over (the machines no longer obey it) says so.
      const epoch = await clusterState.epoch().catch(() => fencing);
      if (epoch !== fencing) throw new FencedError(fencing, epoch);
      throw error;
    }
  } finally {
    unwatch();
  }
}
