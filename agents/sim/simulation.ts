// A discrete-event simulation of the cluster's training traffic and checkpoint replication, for scales no
// single machine can run (the paper's 16 machines and 100B-parameter model) and to predict a live run.
// It runs the live cluster's own parts in simulated time: the same link model (`LinkSchedule`: each
// NIC's send and receive link reserved in the order messages are sent), the same ring collectives (N-1
// steps, each sending a 1/N piece to the next machine and waiting for the previous one's), the same
// checkpoint scheduler (`CheckpointScheduler`: profiling, idle spans, staging) and the same placement.
//
// An iteration is a list of phases every machine goes through: computation (the NIC idles), ring
// collectives, and the point at which the iteration's checkpoint becomes ready in host memory. Iterations
// are separated by a barrier, as the root agent drives them: the next begins `betweenIterationsMs` after
// the last machine has finished.

import { parameterLayout } from "../../core/model.ts";
import { type ClusterSettings, largestCheckpointBytes } from "../protocol/spec.ts";
import {
  CheckpointScheduler,
  clusterInterval,
  type InterleavingSettings,
  type PieceOrder,
  type ReplicationPolicy,
} from "../replication/interleaving.ts";
import { collectiveBytes, trafficEdges, TRAINING_ITERATION } from "../protocol/iteration.ts";
import type { TrafficKind } from "../protocol/transport.ts";
import { LinkSchedule, type TransferRecord } from "./network.ts";
import { placementPlan, type PlacementStrategy, replicaPeers } from "../replication/placement.ts";
import type { IterationReport } from "../root-agent.ts";

/** Milliseconds of a machine's (`rank`) computation in `iteration` (from 1): a constant, or a measured trace. */
export type Duration = number | ((rank: number, iteration: number) => number);

/** One phase of an iteration, the same on every machine. */
export type Phase =
  /** Computation; the NIC is idle (for training traffic). */
  | { compute: Duration }
  /** A ring collective over a state of `bytes`: each step moves a piece of bytes / N to the next machine. */
  | { collective: string; bytes: number }
  /** The iteration's checkpoint is ready in host memory `afterMs` after this point (its copy runs meanwhile). */
  | { checkpointReady: number };

export interface SimulationSpec {
  machines: number;
  /** Copies of each checkpoint in CPU memory, the owner's included (m). */
  replicas: number;
  placement: PlacementStrategy;
  /** Bytes/s of each NIC link, and ms from a message's last byte to its arrival. */
  bandwidth: number;
  latencyMs: number;
  iteration: Phase[];
  /** Milliseconds from the last machine finishing an iteration to every machine starting the next (rank 0's). */
  betweenIterationsMs: Duration;
  /** Bytes of each machine's checkpoint (its shard, encoded). */
  checkpointBytes: number;
  chunkBytes: number;
  replication: InterleavingSettings;
  iterations: number;
  /** What each iteration (from 1) does, as the root agent would ask (every iteration checkpoints when absent). */
  plan?: (iteration: number) => { checkpoint: boolean; policy: ReplicationPolicy };
}

export interface SimulationResult {
  /** Milliseconds of each iteration, as the root agent measures it (the round trip included). */
  iterationMs: number[];
  /** Every message, as the live network records it. */
  timeline: TransferRecord[];
  /** Per machine: the iterations whose checkpoint reached every peer. */
  replicated: number[][];
  /** Per machine: for each of those, ms from the checkpoint being ready to its last byte leaving the machine. */
  replicationMs: number[][];
  /** Per machine: checkpoints not replicated because an earlier one was still being sent. */
  skipped: number[];
  /** Per machine: the idle spans its scheduler profiled (ms). */
  idleSpans: number[][];
  /** The interval the checkpoints were replicated at, in the end (null: never set, nothing replicated). */
  replicationInterval: number | null;
  /** Per machine: [start, end] of each burst of its training traffic (ms). */
  busy: [number, number][][];
}

/** A min-heap of timed events; ties run in the order they were scheduled. */
class EventQueue {
  readonly #heap: { at: number; order: number; run: () => void }[] = [];
  #scheduled = 0;
  now = 0;

  at(time: number, run: () => void) {
    const heap = this.#heap;
    heap.push({ at: time, order: this.#scheduled++, run });
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (!this.#before(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }

  run() {
    const heap = this.#heap;
    while (heap.length) {
      const first = heap[0], last = heap.pop()!;
      if (heap.length) {
        heap[0] = last;
        for (let i = 0;;) {
          const left = 2 * i + 1, right = left + 1;
          let least = i;
          if (left < heap.length && this.#before(heap[left], heap[least])) least = left;
          if (right < heap.length && this.#before(heap[right], heap[least])) least = right;
          if (least === i) break;
          [heap[i], heap[least]] = [heap[least], heap[i]];
          i = least;
        }
      }
      this.now = first.at;
      first.run();
    }
  }

  #before(a: { at: number; order: number }, b: { at: number; order: number }) {
    return a.at < b.at || (a.at === b.at && a.order < b.order);
  }
}

const isCollectivePhase = (phase: Phase) => "collective" in phase;

const duration = (value: Duration, rank: number, iteration: number) =>
  typeof value === "number" ? value : value(rank, iteration);

/** Runs `spec.iterations` iterations of the cluster in simulated time. */
export function simulateTraining(spec: SimulationSpec): SimulationResult {
  const n = spec.machines, events = new EventQueue(), links = new LinkSchedule(spec.bandwidth);
  const placement = placementPlan(spec.placement, n, spec.replicas);
  const schedulers = Array.from(
    { length: n },
    (_, rank) =>
      new CheckpointScheduler(spec.replication, spec.bandwidth, spec.chunkBytes, replicaPeers(placement, rank)),
  );
  const timeline: TransferRecord[] = [], iterationMs: number[] = [];
  const busy: [number, number][][] = Array.from({ length: n }, () => []);
  /** Ring messages that arrived, by `${iteration}/${phase}/${step}/${to}`, and who is waiting for one. */
  const arrived = new Set<string>(), waiting = new Map<string, () => void>();
  /** When each machine's checkpoint of each iteration was ready, by `${rank}/${iteration}`. */
  const readyAt = new Map<string, number>();

  const transfer = (from: number, to: number, kind: TrafficKind, label: string, bytes: number) => {
    const queuedAt = events.now, { start, end } = links.reserve(from, to, bytes, queuedAt);
    timeline.push({ id: timeline.length, from, to, kind, label, bytes, queuedAt, start, end });
    return end;
  };

  const sendCheckpointPieces = (rank: number) => {
    for (let order: PieceOrder | null; (order = schedulers[rank].next(events.now));) {
      const piece = order, end = transfer(rank, piece.peer, "checkpoint", "replica", piece.bytes);
      events.at(end, () => {
        schedulers[rank].sent(piece, end);
        sendCheckpointPieces(rank);
      });
    }
  };

  let finished = 0, iteration = 0, iterationStart = 0;
  let plan = { checkpoint: true, policy: spec.replication.policy };

  const startIteration = () => {
    iteration++;
    finished = 0;
    iterationStart = events.now;
    plan = spec.plan?.(iteration) ?? plan;
    for (let rank = 0; rank < n; rank++) {
      schedulers[rank].policy = plan.policy;
      schedulers[rank].beginIteration();
      runPhase(rank, 0);
    }
  };

  const endMachineIteration = () => {
    if (++finished < n) return;
    // As the root agent does between iterations: one replication interval for every machine.
    const interval = clusterInterval(schedulers.map((scheduler) => scheduler.neededInterval()));
    if (interval !== null) { for (const scheduler of schedulers) scheduler.interval = interval; }
    const between = duration(spec.betweenIterationsMs, 0, iteration);
    iterationMs.push(events.now - iterationStart + between);
    if (iteration < spec.iterations) events.at(events.now + between, startIteration);
  };

  const runPhase = (rank: number, index: number) => {
    const phase = spec.iteration[index];
    if (!phase) return endMachineIteration();
    if ("compute" in phase) {
      return events.at(events.now + duration(phase.compute, rank, iteration), () => runPhase(rank, index + 1));
    }
    if ("checkpointReady" in phase) {
      if (!plan.checkpoint) return runPhase(rank, index + 1);
      const t = iteration;
      events.at(events.now + phase.checkpointReady, () => {
        readyAt.set(`${rank}/${t}`, events.now);
        if (schedulers[rank].offer(t, spec.checkpointBytes)) sendCheckpointPieces(rank);
      });
      return runPhase(rank, index + 1);
    }
    if (trafficEdges(spec.iteration, index, isCollectivePhase).opens) {
      schedulers[rank].trainingBusy(events.now);
      busy[rank].push([events.now, events.now]);
    }
    ringStep(rank, index, 0, phase);
  };

  const ringStep = (rank: number, index: number, step: number, phase: { collective: string; bytes: number }) => {
    if (step === n - 1) {
      if (trafficEdges(spec.iteration, index, isCollectivePhase).closes) {
        schedulers[rank].trainingIdle(events.now);
        busy[rank][busy[rank].length - 1][1] = events.now;
        sendCheckpointPieces(rank);
      }
      return runPhase(rank, index + 1);
    }
    const next = (rank + 1) % n, key = (to: number) => `${iteration}/${index}/${step}/${to}`;
    const end = transfer(rank, next, "training", phase.collective, phase.bytes / n);
    events.at(end + spec.latencyMs, () => {
      const waiter = waiting.get(key(next));
      waiting.delete(key(next));
      if (waiter) waiter();
      else arrived.add(key(next));
    });
    const proceed = () => ringStep(rank, index, step + 1, phase);
    if (arrived.delete(key(rank))) proceed();
    else waiting.set(key(rank), proceed);
  };

  startIteration();
  events.run();
  return {
    iterationMs,
    timeline,
    replicated: schedulers.map((scheduler) => scheduler.replicated.map((r) => r.iteration)),
    replicationMs: schedulers.map((scheduler, rank) =>
      scheduler.replicated.map((r) => r.at - readyAt.get(`${rank}/${r.iteration}`)!)
    ),
    skipped: schedulers.map((scheduler) => scheduler.skipped),
    idleSpans: schedulers.map((scheduler) => scheduler.profile.spans),
    replicationInterval: schedulers[0].interval,
    busy,
  };
}

/**
 * The simulation of a live run of the cluster (trace-driven): its shape, network and checkpoint settings,
 * its collectives' traffic, and each machine's computation in each iteration as the run measured it
 * (`reports`, by iteration from 1). What the simulation then predicts is the network's part: how long the
 * collectives take, and what the checkpoint traffic costs them. A live message also takes the hops between
 * threads and the time to handle it: that overhead, measured on the run's `timeline`, is the latency.
 */
export function replayOfLiveRun(
  settings: ClusterSettings,
  reports: IterationReport[],
  timeline: TransferRecord[],
): SimulationSpec {
  const stateFloats = parameterLayout(settings.training.config).totalFloats;
  const measured = (phase: "compute" | "update") => (rank: number, iteration: number) =>
    reports[iteration].machines[rank][phase];
  // The rest of an iteration's time is the root agent's: its calls to the machines and their answers.
  const between = (_rank: number, iteration: number) => {
    const { milliseconds, machines } = reports[iteration];
    const longest = Math.max(...machines.map((m) => m.compute + m.reduceScatter + m.update + m.allGather));
    return Math.max(0, milliseconds - longest);
  };
  return {
    machines: settings.machines,
    replicas: settings.replicas,
    placement: settings.placement,
    bandwidth: settings.network.bandwidth,
    latencyMs: messageOverheadMs(timeline),
    // The worker agent's own phases, each as the run measured it.
    iteration: TRAINING_ITERATION.map((phase): Phase => {
      if (phase.kind === "compute") return { compute: measured(phase.name === "gradients" ? "compute" : "update") };
      if (phase.kind === "collective") {
        return { collective: phase.name, bytes: collectiveBytes(phase, stateFloats, settings.machines) };
      }
      // The capture's copy is mapped just after the all-gather's first message has gone (as measured).
      return { checkpointReady: LIVE_CHECKPOINT_READY_MS };
    }),
    betweenIterationsMs: between,
    checkpointBytes: largestCheckpointBytes(settings),
    chunkBytes: settings.checkpoint.chunkBytes,
    replication: settings.checkpoint.replication,
    iterations: reports.length - 1,
    plan: (iteration) => reports[iteration].plan,
  };
}

const LIVE_CHECKPOINT_READY_MS = 1;

/**
 * The time from a training message's last byte on the wire to its receiver sending the next one (the
 * median over a run's ring steps): the network's latency plus what the live implementation adds, the hops
 * between threads, timer delays and the receiver's handling.
 */
export function messageOverheadMs(timeline: TransferRecord[]): number {
  const gaps: number[] = [];
  const lastArrival = new Map<number, number>();
  for (const record of [...timeline].filter((r) => r.kind === "training").sort((a, b) => a.queuedAt - b.queuedAt)) {
    const arrived = lastArrival.get(record.from);
    if (arrived !== undefined && arrived <= record.queuedAt) gaps.push(record.queuedAt - arrived);
    lastArrival.set(record.to, Math.max(lastArrival.get(record.to) ?? 0, record.end));
  }
  if (!gaps.length) throw new Error("the timeline holds no ring steps to measure the message overhead on");
  gaps.sort((a, b) => a - b);
  return gaps[gaps.length >> 1];
}
