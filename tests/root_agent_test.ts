// The root agent's driver on a virtual clock: leases, failure detection, fencing and recovery orchestration
// at exact times, with no wall clock anywhere. The machines here are in-process stand-ins that keep the
// protocol's side of a machine (heartbeats, checkpoints in memory and replicated to their placement peers,
// silence once failed) and do no training; the live Worker cluster is tested in cluster_test.ts.

import assert from "node:assert/strict";
import { VirtualClock } from "../agents/protocol/clock.ts";
import type { RecoveryReport, RootEvent } from "../agents/protocol/root.ts";
import {
  type ClusterSettings,
  defaultClusterSettings,
  describeSource,
  type Heartbeat,
  type Machine,
  type MachineControl,
  type Machines,
  type MachineStatus,
  type RestoreSource,
} from "../agents/protocol/spec.ts";
import { RootAgent } from "../agents/root-agent.ts";
import { InMemoryCheckpointStore } from "../core/memory-store.ts";
import type { StoredEntry } from "../core/store.ts";

const HEARTBEAT_MS = 50, TIMEOUT_MS = 200, STEP_MS = 30;

/** A promise that never settles: what a failed machine answers. */
const silence = <T>() => new Promise<T>(() => {});

/** One incarnation of a machine: whether it has gone silent, whether its heartbeats get through, and a heartbeat. */
interface Life {
  incarnation: number;
  silent: boolean;
  beats: boolean;
  heartbeat: () => void;
}

class StandInMachines implements Machines {
  readonly settings: ClusterSettings;
  readonly clock = new VirtualClock();
  /** Each rank's host memory (a hardware failure empties it) and its running incarnation. */
  readonly memory: StoredEntry[][];
  readonly running: (Life | null)[];
  readonly fenced: number[] = [];
  /** Launches of each rank so far. */
  readonly launches: number[];
  /** Virtual ms a launch of a rank takes (0 when absent). */
  readonly launchMs = new Map<number, number>();
  #incarnations: number[];

  constructor(settings: ClusterSettings) {
    this.settings = settings;
    this.memory = Array.from({ length: settings.machines }, () => []);
    this.running = new Array(settings.machines).fill(null);
    this.#incarnations = new Array(settings.machines).fill(-1);
    this.launches = new Array(settings.machines).fill(0);
  }

  launch(rank: number, _epoch: number, peers: number[], onHeartbeat: (heartbeat: Heartbeat) => void) {
    // As the Worker cluster does: a rank runs on one machine at a time.
    if (this.running[rank]) return Promise.reject(new Error(`machine ${rank} is already running`));
    const incarnation = ++this.#incarnations[rank];
    this.launches[rank]++;
    return new Promise<Machine>((resolve) =>
      this.clock.setTimer(this.launchMs.get(rank) ?? 0, () => {
        const life: Life = {
          incarnation,
          silent: false,
          beats: true,
          heartbeat: () => onHeartbeat({ rank, incarnation, iteration: 0 }),
        };
        this.running[rank] = life;
        const beat = () => {
          if (this.running[rank] !== life || life.silent) return;
          if (life.beats) life.heartbeat();
          this.clock.setTimer(HEARTBEAT_MS, beat);
        };
        beat();
        resolve({ rank, incarnation, control: this.#control(rank, life, peers), status: this.#status(rank) });
      })
    );
  }

  /** The machine fails: silent from now on; a hardware failure takes its memory with it. */
  fail(rank: number, kind: "software" | "hardware") {
    this.running[rank]!.silent = true;
    this.running[rank] = null;
    if (kind === "hardware") this.memory[rank] = [];
  }

  fence(rank: number) {
    this.fenced.push(rank);
    if (this.running[rank]) this.fail(rank, "software");
  }

  shutdown() {
    this.running.fill(null);
    return Promise.resolve();
  }

  #status(rank: number): MachineStatus {
    return {
      rank,
      incarnation: this.#incarnations[rank],
      iteration: 0,
      adapter: "stand-in",
      memory: [...this.memory[rank]],
      arenaBytes: 0,
      persistentSaves: 0,
      persistentSkipped: 0,
    };
  }

  #control(rank: number, life: { silent: boolean }, peers: number[]): MachineControl {
    let iteration = 0;
    const answer = <T>(ms: number, value: () => T) =>
      life.silent
        ? silence<T>()
        : new Promise<T>((resolve) => this.clock.setTimer(ms, () => life.silent ? undefined : resolve(value())));
    const store = (holder: number, owner: number, t: number) => {
      const entry: StoredEntry = { owner, iteration: t, bytes: 100, savedAt: 0, kind: "own", replicatedTo: [] };
      this.memory[holder] = [entry, ...this.memory[holder].filter((e) => e.owner !== owner || e.iteration > t - 3)];
    };
    return {
      step: () =>
        answer(STEP_MS, () => {
          iteration++;
          // The checkpoint, in memory and replicated at once (the replication scheduler is tested elsewhere).
          for (const holder of [rank, ...peers]) store(holder, rank, iteration);
          return {
            iteration,
            loss: iteration,
            compute: STEP_MS,
            reduceScatter: 0,
            update: 0,
            allGather: 0,
            checkpointBlocked: 0,
            replicatedIteration: iteration,
            idleSpans: [],
            neededInterval: 1,
          };
        }),
      abort: () => answer(1, () => {}),
      status: () => answer(1, () => this.#status(rank)),
      serve: (owner: number, t: number, to: number) => answer(5, () => (store(to, owner, t), 100)),
      fetch: (_t: number, source: RestoreSource) => answer(source.from === "local" ? 0 : 1, () => 100),
      load: (t: number) => answer(10, () => (iteration = t, 10)),
      synchronize: () => answer(5, () => {}),
      state: () => answer(0, () => ({ params: new Float32Array(), m: new Float32Array(), v: new Float32Array() })),
      shutdown: () => Promise.resolve(),
    };
  }
}

async function withRoot(story: (root: RootAgent, machines: StandInMachines, events: RootEvent[]) => Promise<void>) {
  const settings = defaultClusterSettings({ kind: "files", directory: "unused: the root is given its store" });
  settings.heartbeatMs = HEARTBEAT_MS;
  const machines = new StandInMachines(settings);
  // An empty persistent store in memory: its answers take no real I/O, so virtual time alone moves the run.
  const persistent = InMemoryCheckpointStore.create(0, 1 << 16);
  const root = await machines.clock.until(RootAgent.start(machines, { heartbeatTimeoutMs: TIMEOUT_MS, persistent }));
  const events: RootEvent[] = [];
  root.onEvent((event) => events.push(event));
  try {
    await story(root, machines, events);
  } finally {
    await root.close();
  }
}

const sources = (report: RecoveryReport) => report.machines.map(({ source }) => describeSource(source));

Deno.test("a machine that falls silent is declared failed one lease after its last heartbeat, then replaced from its peer", async () => {
  await withRoot(async (root, machines, events) => {
    const { clock } = machines;
    await clock.until(root.runUntil(3));
    // Heartbeats go out at multiples of 50 ms; the machine fails 10 ms after one of them.
    clock.advance(HEARTBEAT_MS - (clock.now() % HEARTBEAT_MS) + 10);
    const lastBeat = clock.now() - 10;
    machines.fail(1, "hardware");
    const report = await clock.until(root.advance());
    assert.equal(report.type, "recovery");
    if (report.type !== "recovery") return;
    assert.deepEqual(report.detections, [{ rank: 1, incarnation: 0, detectedAt: lastBeat + TIMEOUT_MS }]);
    assert.deepEqual(machines.fenced, [1]);
    assert.deepEqual([report.epoch, report.iteration, report.lostIterations], [1, 3, 0]);
    assert.deepEqual(sources(report), ["local", "peer 0", "local", "local"]);
    assert.deepEqual(
      events.filter((event) => event.type === "recovering").map((event) => event.type === "recovering" && event.phase),
      ["stop", "replace", "retrieve", "load", "synchronize"],
    );
    assert.equal((await clock.until(root.advance())).type, "iteration", "training goes on");
    assert.equal(root.iteration, 4);
  });
});

Deno.test("a second failure during a recovery cancels it: a new epoch, and one recovery from both failures", async () => {
  await withRoot(async (root, machines) => {
    const { clock } = machines;
    await clock.until(root.runUntil(4));
    machines.launchMs.set(1, 400); // a replacement takes a while to start
    machines.fail(1, "hardware");
    const recovered = root.advance();
    // Machine 2 fails while machine 1's replacement is starting.
    await clock.until(
      new Promise<void>((resolve) =>
        root.onEvent((event) => event.type === "recovering" && event.phase === "replace" && resolve())
      ),
    );
    const replacing = root.protocol.epoch;
    machines.fail(2, "hardware");
    const report = await clock.until(recovered);
    assert.equal(report.type, "recovery");
    if (report.type !== "recovery") return;
    assert.equal(report.epoch, replacing + 1, "the first attempt was abandoned");
    assert.deepEqual(report.detections.map((d) => d.rank), [1, 2]);
    assert.deepEqual([report.iteration, report.lostIterations], [4, 0]);
    assert.deepEqual(sources(report), ["local", "peer 0", "peer 3", "local"]);
    assert.deepEqual(machines.launches, [1, 2, 2, 1], "each failed rank started once more, no more");
  });
});

Deno.test("a slow machine wrongly suspected is fenced: its late heartbeats renew nothing, and it restarts with its memory", async () => {
  await withRoot(async (root, machines) => {
    const { clock } = machines;
    await clock.until(root.runUntil(2));
    const slow = machines.running[3]!;
    slow.beats = false; // alive and answering, but its heartbeats stop reaching the root
    let report;
    do report = await clock.until(root.advance()); while (report.type !== "recovery");
    const reached = report.iteration;
    assert.deepEqual(machines.fenced, [3]);
    assert.equal(slow.silent, true, "the suspected incarnation was stopped");
    assert.notEqual(machines.running[3], slow, "a new incarnation runs rank 3");
    assert.deepEqual(sources(report), ["local", "local", "local", "local"], "its memory survived the fence");
    assert.ok(reached >= 2);
    assert.equal(report.lostIterations, 0);
    const heard: number[] = [];
    root.onHeartbeat((rank) => heard.push(rank));
    slow.heartbeat(); // a zombie's heartbeat, from the fenced incarnation
    assert.equal(heard.length, 0, "a fenced incarnation's heartbeat is not taken");
    clock.advance(HEARTBEAT_MS);
    assert.ok(heard.includes(3), "the new incarnation's are");
  });
});

Deno.test("a replacement that is already running when a newer failure restarts the recovery is not started again", async () => {
  await withRoot(async (root, machines) => {
    const { clock } = machines;
    await clock.until(root.runUntil(4));
    machines.launchMs.set(1, 100).set(3, 600);
    machines.fail(1, "software");
    machines.fail(3, "software");
    const recovered = root.advance();
    // Machine 1 runs again while machine 3 is still starting: then machine 2 fails.
    await clock.until(
      new Promise<void>((resolve) =>
        root.onEvent((e) => e.type === "recovering" && e.phase === "replace" && resolve())
      ),
    );
    while (!machines.running[1]) clock.advance(1);
    const replacing = root.protocol.epoch;
    machines.fail(2, "hardware");
    const report = await clock.until(recovered);
    assert.equal(report.type, "recovery");
    if (report.type !== "recovery") return;
    assert.equal(report.epoch, replacing + 1);
    assert.deepEqual(machines.launches, [1, 2, 2, 2], "machine 1 was not started a third time");
    assert.deepEqual(report.detections.map((d) => d.rank).sort(), [1, 2, 3]);
    assert.deepEqual(sources(report), ["local", "local", "peer 3", "local"]);
    assert.deepEqual([report.iteration, report.lostIterations], [4, 0]);
  });
});
