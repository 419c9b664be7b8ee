// The lab's model: one run of the simulated cluster in this page (the same agents code Deno runs, its
// machines in browser Workers on the browser's WebGPU adapter), and what the views show of it. The
// session owns the root agent; the Lit components only receive `LabState` snapshots and send requests.

import { type FailureKind, SimulatedCluster } from "../agents/sim/cluster.ts";
import type { TransferRecord } from "../agents/sim/network.ts";
import { REPLICATION_POLICIES, type ReplicationPolicy } from "../agents/replication/interleaving.ts";
import { PLACEMENT_STRATEGIES, type PlacementPlan, type PlacementStrategy } from "../agents/replication/placement.ts";
import {
  FailureObserver,
  type FailureReport,
  type ObservedEvent,
  type ObservedRecovery,
} from "../agents/sim/observer.ts";
import { RootAgent } from "../agents/root-agent.ts";
import { type ClusterSettings, defaultClusterSettings } from "../agents/protocol/spec.ts";
import type { StoredEntry } from "../core/store.ts";
import { BYTE_VOCAB_SIZE, encodeBytes } from "../core/data.ts";
import { type GenerateSettings, MODEL_PRESETS } from "../core/model.ts";
import { sameBits } from "../core/trainer.ts";
import { generateFrom } from "./generation.ts";
import { explainRecovery, type RecoveryWhy } from "./recovery-why.ts";

/** The model sizes the lab offers: the tiny ones, and GPT-2 124M where the memory allows. */
export const LAB_MODELS = ["tiny", "small", "gpt2"] as const;
export type LabModel = typeof LAB_MODELS[number];

export interface LabSettings {
  machines: number;
  replicas: number;
  placement: PlacementStrategy;
  checkpointEvery: number;
  persistEvery: number;
  /** MB/s of each network link and of the persistent store. */
  networkMBps: number;
  storageMBps: number;
  heartbeatTimeoutMs: number;
  model: LabModel;
  /** How checkpoints go to the peers; the one setting that may change while the cluster runs. */
  replication: ReplicationPolicy;
  /** The run stops after this many iterations. */
  iterations: number;
}

export const DEFAULT_LAB_SETTINGS: LabSettings = {
  machines: 4,
  replicas: 2,
  placement: "group",
  checkpointEvery: 1,
  persistEvery: 5,
  networkMBps: 400,
  storageMBps: 20,
  heartbeatTimeoutMs: 1500,
  model: "tiny",
  replication: "interleaved",
  iterations: 40,
};

export type NumberSetting = Exclude<keyof LabSettings, "placement" | "model" | "replication">;

/** The range of each number setting; the machines run in this page, so a few. */
export const SETTING_LIMITS: Record<NumberSetting, [number, number]> = {
  machines: [2, 8],
  replicas: [1, 8],
  checkpointEvery: [1, 100],
  persistEvery: [0, 100],
  networkMBps: [1, 100000],
  storageMBps: [1, 100000],
  heartbeatTimeoutMs: [200, 30000],
  iterations: [1, 10000],
};

/** Why settings cannot run, by the field to show it beside (none: they can). */
export function settingsProblems(settings: LabSettings): Partial<Record<keyof LabSettings, string>> {
  const problems: Partial<Record<keyof LabSettings, string>> = {};
  for (const [key, [min, max]] of Object.entries(SETTING_LIMITS) as [NumberSetting, [number, number]][]) {
    const value = settings[key];
    if (!Number.isInteger(value) || value < min || value > max) problems[key] = `a whole number from ${min} to ${max}`;
  }
  if (!PLACEMENT_STRATEGIES.includes(settings.placement)) problems.placement = "group, ring or mixed";
  if (!LAB_MODELS.includes(settings.model)) problems.model = LAB_MODELS.join(", ");
  if (!REPLICATION_POLICIES.includes(settings.replication)) problems.replication = "none, naive or interleaved";
  if (problems.machines || problems.replicas || problems.placement) return problems;
  // What placementPlan demands, in the page's words.
  if (settings.replicas > settings.machines) {
    problems.replicas = `replicas m can be at most the ${settings.machines} machines`;
  } else if (settings.placement === "group" && settings.machines % settings.replicas) {
    problems.replicas = `group placement needs replicas m to divide the ${settings.machines} machines`;
  }
  return problems;
}

/**
 * What the URL's query string says about the settings: a value that is not valid, or not with the others
 * (m = 3 of 4 machines in groups), is ignored, so the settings are always valid if `base` is.
 */
export function settingsFromQuery(query: string, base: LabSettings = DEFAULT_LAB_SETTINGS): LabSettings {
  const params = new URLSearchParams(query);
  let settings = { ...base };
  // Twice: a value may become valid with one that comes later (machines=6 with placement=ring).
  for (let pass = 0; pass < 2; pass++) {
    for (const key of Object.keys(base) as (keyof LabSettings)[]) {
      const text = params.get(key);
      if (text === null) continue;
      const next = { ...settings, [key]: typeof base[key] === "number" ? Number(text) : text };
      if (!Object.keys(settingsProblems(next)).length) settings = next;
    }
  }
  return settings;
}

export function settingsToQuery(settings: LabSettings): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(settings)) {
    if (value !== DEFAULT_LAB_SETTINGS[key as keyof LabSettings]) params.set(key, String(value));
  }
  return params.toString();
}

export type MachinePhase = "starting" | "running" | "failed" | "recovering";

export interface MachineView {
  rank: number;
  phase: MachinePhase;
  incarnation: number;
  /** The kind of failure it is down from (null while it runs): a software one leaves its host memory. */
  failure: FailureKind | null;
  iteration: number;
  /** Milliseconds since its last heartbeat reached the root. */
  heartbeatAge: number;
  /** What its host memory holds (kept through a software failure), and its size. */
  memory: StoredEntry[];
  arenaBytes: number;
  /** Checkpoints it wrote to the persistent store, and those it skipped while one was still being written. */
  persisted: number;
  persistSkipped: number;
  adapter: string;
}

/** A loss as the run computed it; `replay` is set when the iteration was computed again after a rollback. */
export interface LossPoint {
  iteration: number;
  loss: number;
  replay: boolean;
}

/** An iteration on the network's clock, with each machine's compute time (ms). */
export interface IterationSpan {
  iteration: number;
  start: number;
  compute: number[];
}

/** A policy's iterations so far: how many, their total time and the checkpoint bytes sent meanwhile. */
export interface PolicyStats {
  iterations: number;
  milliseconds: number;
  checkpointBytes: number;
}

/** From a failure to training resumed (null: not yet), on the network's clock and in iterations. */
export interface FaultPeriod {
  start: number;
  end: number | null;
  /** The iteration the failure struck in, and the one the recovery rolled back to (null: not yet). */
  iteration: number;
  rolledBackTo: number | null;
}

/** What to generate text from: a prompt, and the sampler's temperature (0: greedy) and seed. */
export interface GenerateRequest {
  prompt: string;
  temperature: number;
  seed: number;
}

/** Tokens generated after the prompt: a short continuation, within the tiny model's 64 positions. */
export const GENERATED_TOKENS = 24;
/** The longest prompt, in bytes (tokens of the byte tokenizer). */
export const PROMPT_LIMIT = 32;

/** Text generated from this run's parameters and from the failure-free run's, at the same iteration. */
export interface GenerationView {
  status: "running" | "done" | "error";
  /** Why it failed (status "error"). */
  message: string;
  iteration: number;
  prompt: number[];
  settings: GenerateSettings;
  /** The tokens drawn from the run's (recovered) parameters and from the failure-free run's. */
  recovered: number[];
  reference: number[];
  /** Whether the two sets of parameters are equal bit for bit (null until both are read). */
  sameParameters: boolean | null;
}

export interface LabState {
  status: "idle" | "starting" | "running" | "paused" | "recovering" | "done" | "error";
  message: string;
  settings: LabSettings;
  plan: PlacementPlan | null;
  iteration: number;
  machines: MachineView[];
  /** The losses of the same seeded run without failures, once `compare` has trained it. */
  reference: number[];
  referenceStatus: "none" | "running" | "done";
  /** Every loss in the order computed, replays included. */
  losses: LossPoint[];
  /** The recent iterations, for the timeline. */
  iterations: IterationSpan[];
  /** The mean iteration time so far (ms). */
  iterationMs: number;
  /** Iterations where a loss of this run (a replay included) differs from the reference (exact resume: none). */
  mismatches: number[];
  failures: (FailureReport & { iteration: number })[];
  recoveries: ObservedRecovery[];
  /** Why each recovery took each shard from where it did, by recovery. */
  explanations: RecoveryWhy[];
  /** Every failure of the run to its recovery (failures recovered together share one). */
  faults: FaultPeriod[];
  /** The iterations of each replication policy the run has used (after its first). */
  policies: Partial<Record<ReplicationPolicy, PolicyStats>>;
  /** The network's recent transfers and its clock. */
  transfers: TransferRecord[];
  now: number;
  /** The last text generated from the run and its failure-free reference (null: none yet). */
  generation: GenerationView | null;
}

const TRANSFER_WINDOW_MS = 4000;
/** The recording keeps this many of the newest states (a run of the lab makes a few thousand). */
const HISTORY_LIMIT = 20_000;

export class LabSession extends EventTarget {
  #state: LabState;
  #root: RootAgent | null = null;
  #cluster: SimulatedCluster | null = null;
  #running = false;
  #launching: Promise<void> | null = null;
  #closed = false;
  #loop: Promise<void> = Promise.resolve();
  readonly #heartbeats = new Map<number, number>();
  /** Every state the run has been in, oldest first: the views can show any earlier moment. */
  readonly history: LabState[] = [];
  /** Checkpoint bytes queued since the last iteration was reported. */
  #checkpointBytes = 0;
  /** The failure-free run's parameters at the iteration this run was at when it was last compared. */
  #reference: { iteration: number; params: Float32Array } | null = null;

  constructor(settings: LabSettings) {
    super();
    this.#state = {
      status: "idle",
      message: "",
      settings,
      plan: null,
      iteration: 0,
      machines: [],
      reference: [],
      referenceStatus: "none",
      losses: [],
      iterations: [],
      iterationMs: 0,
      mismatches: [],
      failures: [],
      recoveries: [],
      explanations: [],
      faults: [],
      policies: {},
      transfers: [],
      now: 0,
      generation: null,
    };
    this.history.push(this.#state);
  }

  get state(): LabState {
    return this.#state;
  }

  /** Starts the cluster (if it is not running yet) and trains until paused or done. */
  async start() {
    await (this.#launching ??= this.#launch());
    if (this.#closed) return;
    this.#running = true;
    this.#update({ status: "running" });
    this.#loop = this.#loop.then(() => this.#train());
    await this.#loop;
  }

  pause() {
    this.#running = false;
    if (this.#root) this.#update({ status: "paused" });
  }

  /** Switches how checkpoints are replicated, from the next iteration on (before or while the cluster runs). */
  setReplication(policy: ReplicationPolicy) {
    this.#root?.setCheckpointing({ policy });
    this.#update({ settings: { ...this.#state.settings, replication: policy } });
  }

  /** One iteration (or the recovery a failure calls for), then paused. */
  async step() {
    this.#running = false;
    await (this.#launching ??= this.#launch());
    if (this.#closed) return;
    this.#loop = this.#loop.then(() => this.#advance()).then(() => this.#update({ status: "paused" }));
    await this.#loop;
  }

  /** Fails machines now (the root will notice by their heartbeats). */
  async fail(ranks: number[], kind: FailureKind) {
    const root = this.#root;
    if (!root) return;
    const cluster = this.#cluster!;
    const running = ranks.filter((rank) => cluster.isRunning(rank));
    if (running.length) await cluster.inject(running, kind);
    this.#refresh();
  }

  /**
   * Trains the same seeded cluster without failures as far as this run has got (this run pauses
   * meanwhile), so that the chart can show whether training continued exactly as it would have.
   */
  async compare() {
    this.pause();
    await this.#loop;
    const iterations = Math.max(0, ...this.#state.losses.map((point) => point.iteration));
    if (!iterations || this.#state.referenceStatus === "running") return;
    // Where this run is now (behind `iterations` when paused during a replay): its parameters are compared there.
    const at = this.#state.iteration;
    this.#update({ referenceStatus: "running", message: `training the failure-free run to iteration ${iterations}` });
    const reference: number[] = [];
    const root = await RootAgent.start(
      new SimulatedCluster(clusterSettings(this.#state.settings), new URL("./machine.js", import.meta.url)),
      { heartbeatTimeoutMs: this.#state.settings.heartbeatTimeoutMs },
    );
    try {
      root.onEvent((event) => {
        if (event.type !== "iteration") return;
        reference[event.iteration] = event.loss;
        this.#update({ reference: [...reference] });
      });
      await root.runUntil(at);
      this.#reference = { iteration: at, params: (await root.state()).params };
      await root.runUntil(iterations);
    } finally {
      await root.close();
    }
    this.#update({
      reference,
      referenceStatus: "done",
      mismatches: mismatchesOf(this.#state.losses, reference),
      message: "",
    });
  }

  /**
   * Text from this run's parameters and from the failure-free run's at the same iteration (trained first
   * if it has not been), both with `generate`'s sampler on this page's GPU, to show that they are identical.
   */
  async generate(request: GenerateRequest) {
    await this.#loop;
    const root = this.#root;
    if (!root || this.#state.generation?.status === "running") return;
    const { settings, iteration } = this.#state, config = MODEL_PRESETS[settings.model];
    const prompt = [...encodeBytes(request.prompt)];
    const view: GenerationView = {
      status: "running",
      message: "",
      iteration,
      prompt,
      settings: { tokens: GENERATED_TOKENS, temperature: request.temperature, topK: 40, seed: request.seed },
      recovered: [],
      reference: [],
      sameParameters: null,
    };
    this.#update({ generation: view });
    try {
      const problem = generationProblem(settings, request);
      if (problem) throw new Error(problem);
      if (this.#reference?.iteration !== iteration) await this.compare();
      const reference = this.#reference;
      if (reference?.iteration !== iteration) {
        throw new Error(`the failure-free run did not reach iteration ${iteration}`);
      }
      const { params } = await root.state();
      const [recovered, expected] = await generateFrom(config, [params, reference.params], prompt, view.settings);
      const sameParameters = sameBits(params, reference.params);
      this.#update({ generation: { ...view, status: "done", recovered, reference: expected, sameParameters } });
    } catch (error) {
      this.#update({ generation: { ...view, status: "error", message: (error as Error).message } });
    }
  }

  /** Stops the run and its cluster for good; settles once the cluster's machines are down. */
  async close() {
    this.#closed = true;
    this.#running = false;
    const root = this.#root;
    this.#root = null;
    this.#cluster = null;
    await root?.close();
  }

  async #launch() {
    const { settings } = this.#state;
    this.#update({ status: "starting", message: `starting ${settings.machines} machines...` });
    const cluster = new SimulatedCluster(clusterSettings(settings), new URL("./machine.js", import.meta.url));
    let root: RootAgent;
    try {
      root = await RootAgent.start(cluster, { heartbeatTimeoutMs: settings.heartbeatTimeoutMs });
    } catch (error) {
      this.#update({ status: "error", message: (error as Error).message });
      throw error;
    }
    // Closed while its machines started: they stop at once.
    if (this.#closed) return await root.close();
    this.#root = root;
    this.#cluster = cluster;
    const observer = new FailureObserver(cluster);
    this.#root.onEvent((event) => this.#onEvent(observer.event(event)));
    this.#root.onHeartbeat((rank) => this.#heartbeats.set(rank, performance.now()));
    cluster.network.onTransfer((record) => {
      if (record.kind === "checkpoint") this.#checkpointBytes += record.bytes;
      this.#refreshSoon();
    });
    cluster.onFailure(() => this.#refresh());
    this.#update({ plan: this.#root.plan, message: "" });
    await this.#refresh();
  }

  async #train() {
    while (this.#running && this.#root && this.#state.iteration < this.#state.settings.iterations) {
      await this.#advance();
    }
    if (this.#running) this.#update({ status: "done" });
    this.#running = false;
  }

  async #advance() {
    const root = this.#root;
    if (!root) return;
    try {
      await root.advance();
    } catch (error) {
      this.#running = false;
      this.#update({ status: "error", message: (error as Error).message });
      return;
    }
    await this.#refresh();
  }

  #onEvent(event: ObservedEvent) {
    const state = this.#state;
    if (event.type === "iteration") {
      const replay = state.losses.some((point) => point.iteration === event.iteration);
      const losses = [...state.losses, { iteration: event.iteration, loss: event.loss, replay }];
      const end = this.#cluster?.network.now() ?? 0, count = state.losses.length;
      const span = {
        iteration: event.iteration,
        start: end - event.milliseconds,
        compute: event.machines.map((m) => m.compute),
      };
      const policy = state.settings.replication, stats = state.policies[policy];
      // The first iteration is left out: it also compiles every GPU pipeline.
      const policies = count === 0 ? state.policies : {
        ...state.policies,
        [policy]: {
          iterations: (stats?.iterations ?? 0) + 1,
          milliseconds: (stats?.milliseconds ?? 0) + event.milliseconds,
          checkpointBytes: (stats?.checkpointBytes ?? 0) + this.#checkpointBytes,
        },
      };
      this.#checkpointBytes = 0;
      this.#update({
        policies,
        iterations: [...state.iterations.slice(-60), span],
        iterationMs: (state.iterationMs * count + event.milliseconds) / (count + 1),
        iteration: event.iteration,
        losses,
        mismatches: mismatchesOf(losses, state.reference),
        status: this.#running ? "running" : state.status,
      });
    } else if (event.type === "failure") {
      const open = state.faults.find((fault) => fault.end === null);
      const faults = open ? state.faults : [
        ...state.faults,
        { start: event.failure.failedAt, end: null, iteration: state.iteration, rolledBackTo: null },
      ];
      this.#update({ faults, failures: [...state.failures, { ...event.failure, iteration: state.iteration }] });
      this.#refresh();
    } else if (event.type === "recovering") {
      this.#update({ status: "recovering", message: `recovery ${event.epoch}: ${event.phase}` });
      this.#refresh();
    } else {
      const faults = state.faults.map((fault) =>
        fault.end === null ? { ...fault, end: event.resumedAt, rolledBackTo: event.iteration } : fault
      );
      this.#update({
        faults,
        explanations: [...state.explanations, explainRecovery(event, state.machines, state.settings)],
        recoveries: [...state.recoveries, event],
        iteration: event.iteration,
        status: this.#running ? "running" : "paused",
        message: "",
      });
    }
  }

  #refreshPending = false;

  /** Redraws at most once a frame while transfers stream in. */
  #refreshSoon() {
    if (this.#refreshPending) return;
    this.#refreshPending = true;
    setTimeout(() => {
      this.#refreshPending = false;
      this.#update({});
    }, 50);
  }

  async #refresh() {
    const root = this.#root, cluster = this.#cluster;
    if (!root || !cluster) return;
    const now = performance.now();
    const machines = await Promise.all(root.members.map(async (machine, rank): Promise<MachineView> => {
      const previous = this.#state.machines[rank];
      // The page shows a failure at once (the cluster knows); the root agent learns of it by the heartbeats.
      const failed = !machine || !cluster.isRunning(rank);
      const failure = failed ? cluster.lastFailure(rank)?.kind ?? "hardware" : null;
      const status = failed ? null : await Promise.race([
        machine.control.status(),
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 500)),
      ]);
      return {
        rank,
        phase: failed ? "failed" : this.#state.status === "recovering" ? "recovering" : "running",
        incarnation: failed ? previous?.incarnation ?? 0 : machine.incarnation,
        failure,
        iteration: status?.iteration ?? previous?.iteration ?? 0,
        heartbeatAge: Math.max(0, now - (this.#heartbeats.get(rank) ?? now)),
        // Down, it cannot be asked; what it had is still there after a software failure, and nobody writes it.
        memory: failure === "hardware" ? [] : status?.memory ?? previous?.memory ?? [],
        arenaBytes: status?.arenaBytes ?? previous?.arenaBytes ?? 0,
        persisted: status?.persistentSaves ?? previous?.persisted ?? 0,
        persistSkipped: status?.persistentSkipped ?? previous?.persistSkipped ?? 0,
        adapter: status?.adapter ?? previous?.adapter ?? "",
      };
    }));
    this.#update({ machines });
  }

  #update(change: Partial<LabState>) {
    const network = this.#cluster?.network;
    const now = network?.now() ?? 0;
    const transfers = network ? network.timeline.filter((record) => record.end > now - TRANSFER_WINDOW_MS) : [];
    this.#state = { ...this.#state, ...change, transfers, now };
    if (this.history.push(this.#state) > HISTORY_LIMIT) this.history.shift();
    this.dispatchEvent(new Event("change"));
  }
}

/** Why text cannot be generated from a run with `settings` after `request` (empty: it can). */
export function generationProblem(settings: LabSettings, request: GenerateRequest): string {
  const config = MODEL_PRESETS[settings.model], bytes = encodeBytes(request.prompt).length;
  if (config.vocab_size !== BYTE_VOCAB_SIZE) {
    return `the lab generates bytes, and the ${settings.model} model's vocabulary is GPT-2's ${config.vocab_size} ` +
      "tokens: use deno task generate with its tokenizer";
  }
  if (bytes === 0 || bytes > PROMPT_LIMIT) return `the prompt must be 1 to ${PROMPT_LIMIT} bytes, not ${bytes}`;
  if (!(request.temperature >= 0)) return "the temperature must be 0 (greedy) or more";
  if (!Number.isInteger(request.seed)) return "the seed must be a whole number";
  return "";
}

/** The iterations where a computed loss differs from the reference's (those the reference has reached). */
function mismatchesOf(losses: LossPoint[], reference: number[]): number[] {
  const differ = losses.filter((p) => reference[p.iteration] !== undefined && reference[p.iteration] !== p.loss);
  return [...new Set(differ.map((p) => p.iteration))];
}

/** The cluster a lab run trains on: the defaults with the lab's settings, the persistent store in this browser. */
export function clusterSettings(settings: LabSettings): ClusterSettings {
  const cluster = defaultClusterSettings({
    kind: "browser",
    name: `gemini-lab-${Date.now()}`,
    bandwidth: settings.storageMBps * 1e6,
  });
  Object.assign(cluster, { machines: settings.machines, replicas: settings.replicas, placement: settings.placement });
  cluster.training = {
    ...cluster.training,
    config: MODEL_PRESETS[settings.model],
    batchPerMachine: 1,
    time: settings.model === "tiny" ? 32 : 64,
  };
  cluster.checkpoint = {
    ...cluster.checkpoint,
    every: settings.checkpointEvery,
    persistEvery: settings.persistEvery,
    replication: { ...cluster.checkpoint.replication, policy: settings.replication },
  };
  cluster.network = { ...cluster.network, bandwidth: settings.networkMBps * 1e6 };
  cluster.heartbeatMs = Math.max(50, Math.floor(settings.heartbeatTimeoutMs / 10));
  return cluster;
}
