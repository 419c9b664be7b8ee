// A cluster of processes on this computer, as `deno task cluster` and the tests start it: an etcd (a local
// one in a temporary folder unless one is given), a secret file, N + S machine processes and two root
// processes (one leads, the other stands by), every one a child process of ours that we know by its PID
// and stop by it. Everything binds 127.0.0.1.

import { clusterPrefix, Etcd } from "../etcd/client.ts";
import { EtcdHealthStore } from "../etcd/health.ts";
import { RootElection } from "../etcd/election.ts";
import { LocalEtcd } from "../etcd/local.ts";
import { DONE_KEY, LOSSES, PROCESSES, type ProcessRecord, valueOf } from "./registry.ts";
import { decodeState, type TrainingState } from "./root.ts";

export interface LaunchOptions {
  machines: number;
  spares: number;
  iterations: number;
  seed: number;
  /** An etcd to use (its client URL); a local one is started when absent. */
  etcd?: string;
  heartbeatTimeoutMs?: number;
  electionTtlSeconds?: number;
  /** Where the children's stderr lines go, with the child's name in front (stderr by default). */
  log?: (line: string) => void;
}

/** One child process: a machine or a root. */
export interface Child {
  name: string;
  pid: number;
  process: Deno.ChildProcess;
  /** Its first stdout line (a machine's id), once printed. */
  ready: Promise<string>;
  id?: string;
  /** Its exit status, once it has exited and every line it wrote to stderr has been logged. */
  status: Promise<Deno.CommandStatus>;
}

const CONFIG = new URL("../../deno.json", import.meta.url).pathname;
const MACHINE = new URL("../../cli/machine.ts", import.meta.url).pathname;
const ROOT = new URL("../../cli/root.ts", import.meta.url).pathname;
const PERMISSIONS = ["--allow-env", "--allow-read", "--allow-write", "--allow-net", "--allow-sys"];
/** How long a child stopped with SIGTERM has to leave before it is killed. */
const STOP_GRACE_MS = 5000;

async function lines(stream: ReadableStream<Uint8Array>, each: (line: string) => void) {
  let rest = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    const parts = (rest + decoder.decode(chunk, { stream: true })).split("\n");
    rest = parts.pop()!;
    parts.forEach(each);
  }
  if (rest) each(rest);
}

export class ProcessCluster {
  readonly options: LaunchOptions;
  readonly directory: string;
  /** A name of its own, so that an etcd given to many runs keeps each one's keys apart. */
  readonly cluster = `run-${
    Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
  readonly endpoint: string;
  readonly local: LocalEtcd | null;
  readonly client: Etcd;
  /** The cluster's keys in etcd, for watching it from outside. */
  readonly health: EtcdHealthStore;
  readonly machines: Child[] = [];
  readonly roots: Child[] = [];
  readonly #log: (line: string) => void;
  #roots = 0;

  private constructor(options: LaunchOptions, directory: string, local: LocalEtcd | null) {
    this.options = options;
    this.directory = directory;
    this.local = local;
    this.endpoint = options.etcd ?? local!.clientUrl;
    this.client = new Etcd({ endpoints: [this.endpoint] });
    this.health = new EtcdHealthStore(this.client, this.cluster);
    this.#log = options.log ?? ((line) => console.error(`${(performance.now() / 1000).toFixed(1)}s ${line}`));
  }

  /** Starts etcd (unless given), then every machine and both roots; resolves once they are started. */
  static async start(options: LaunchOptions): Promise<ProcessCluster> {
    const directory = await Deno.makeTempDir({ prefix: "gemini-processes-" });
    const local = options.etcd ? null : await LocalEtcd.start({ name: "gemini-processes" });
    const cluster = new ProcessCluster(options, directory, local);
    try {
      const secret = Array.from(crypto.getRandomValues(new Uint8Array(24)), (b) => b.toString(16).padStart(2, "0"));
      await Deno.writeTextFile(cluster.secretFile, secret.join(""), { mode: 0o600 });
      await Deno.mkdir(`${directory}/persistent`);
      for (let i = 0; i < options.machines + options.spares; i++) cluster.spawnMachine();
      cluster.spawnRoot();
      cluster.spawnRoot();
    } catch (error) {
      await cluster.close();
      throw error;
    }
    return cluster;
  }

  get secretFile(): string {
    return `${this.directory}/secret`;
  }

  get out(): string {
    return `${this.directory}/final.safetensors`;
  }

  #common(): string[] {
    return ["--etcd", this.endpoint, "--cluster", this.cluster, "--secret-file", this.secretFile];
  }

  #spawn(name: string, script: string, args: string[]): Child {
    const process = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, "--config", CONFIG, script, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let first!: (line: string) => void;
    const ready = new Promise<string>((resolve) => first = resolve);
    lines(process.stdout, (line) => first(line.trim())).catch(() => {});
    const logged = lines(process.stderr, (line) => this.#log(`[${name} ${process.pid}] ${line}`)).catch(() => {});
    // A child has ended once its last lines are logged too: what it said before it exited can be read then.
    const status = Promise.all([process.status, logged]).then(([status]) => status);
    const child: Child = { name, pid: process.pid, process, ready, status };
    ready.then((id) => child.id = id);
    return child;
  }

  /** Starts a machine process: it joins as a spare. */
  spawnMachine(): Child {
    const child = this.#spawn(`machine`, MACHINE, this.#common());
    this.machines.push(child);
    return child;
  }

  /** Starts a root process: it leads if no root does, else stands by. */
  spawnRoot(): Child {
    const { machines, iterations, seed, heartbeatTimeoutMs = 2000, electionTtlSeconds = 2 } = this.options;
    const id = `root-${this.#roots++}`;
    const child = this.#spawn(id, ROOT, [
      ...this.#common(),
      ...["--id", id, "--machines", `${machines}`, "--iterations", `${iterations}`, "--seed", `${seed}`],
      ...["--persist-dir", `${this.directory}/persistent`, "--out", this.out],
      ...["--heartbeat-timeout", `${heartbeatTimeoutMs}`, "--election-ttl", `${electionTtlSeconds}`],
    ]);
    this.roots.push(child);
    return child;
  }

  /** The machine process that runs `rank` now, by its registration in etcd. */
  async holderOf(rank: number): Promise<Child> {
    const records = await this.health.get(PROCESSES);
    const record = [...records.values()].find((value) => (value as ProcessRecord).rank === rank) as ProcessRecord;
    if (!record) throw new Error(`no process runs rank ${rank}`);
    const child = this.machines.find((machine) => machine.id === record.control);
    if (child) return child;
    throw new Error(`rank ${rank} runs in ${record.control}, which is not a process of ours`);
  }

  /** The root process that leads now, by the election. */
  async leader(): Promise<Child> {
    const leader = await new RootElection(this.client, this.cluster).leader();
    const child = this.roots.find((root) => root.name === leader);
    if (!child) throw new Error(`the leader is ${leader}, not a root of ours`);
    return child;
  }

  /** Waits for the run to end: every iteration's loss (by iteration) and the final state. */
  async finished(): Promise<{ losses: number[]; state: TrainingState }> {
    const rootsEnded = Promise.all(this.roots.map((root) => root.status)).then(() => {
      throw new Error("every root process ended before the run was done");
    });
    await Promise.race([valueOf(this.health, DONE_KEY), rootsEnded]);
    // Every process leaves once the run is done: one that lingers hangs here, which a test should see.
    await Promise.all([...this.machines, ...this.roots].map((child) => child.status));
    const losses: number[] = [];
    for (const [key, loss] of await this.health.get(LOSSES)) losses[Number(key.slice(LOSSES.length))] = loss as number;
    return { losses, state: decodeState(await Deno.readFile(this.out), this.out) };
  }

  /** Stops every child still running (SIGTERM, then SIGKILL), etcd if ours, and removes the folder. */
  async close() {
    await Promise.all([...this.machines, ...this.roots].map(async (child) => {
      const running = await Promise.race([child.status.then(() => false), Promise.resolve(true)]);
      if (!running) return;
      const kill = (signal: Deno.Signal) => {
        try {
          Deno.kill(child.pid, signal);
        } catch { /* it has just exited */ }
      };
      kill("SIGCONT"); // a stopped child cannot act on SIGTERM
      kill("SIGTERM");
      const timer = setTimeout(() => kill("SIGKILL"), STOP_GRACE_MS);
      await child.status;
      clearTimeout(timer);
    }));
    await this.health.close().catch(() => {});
    // An etcd that is not ours keeps nothing of the run.
    if (!this.local) {
      await this.client.call(
        "removing the run's keys",
        () => this.client.delete(clusterPrefix(this.cluster), { prefix: true }),
      )
        .catch((error) => this.#log(`cluster: removing the run's keys from etcd failed: ${error.message}`));
    }
    this.client.close();
    await this.local?.close();
    await Deno.remove(this.directory, { recursive: true }).catch(() => {});
  }
}
