// A local etcd for tests and for a cluster started on one computer: Debian's `etcd-server` (installed
// when missing, as root on Debian, the way the browser tests install Chromium), run as our own process
// on 127.0.0.1 with free ports in a temporary data folder. It can be stopped and started again on the
// same folder and ports, as an etcd outage the cluster must wait out, or frozen and let go, as a stalled
// one. The package's own system service, if the install starts one, is never used.

import { ensureProgram, type SystemProgram } from "../../core/system-package.ts";

export const ETCD: SystemProgram = {
  name: "etcd",
  envVar: "ETCD_PATH",
  envHint: "an etcd 3.4+ executable",
  candidates: ["/usr/bin/etcd", "/usr/local/bin/etcd", "/opt/homebrew/bin/etcd"],
  installCommand: "apt-get update && apt-get install -y --no-install-recommends etcd-server",
};

/** How long, at most, a start waits for etcd to answer its health check: attempts, and the pause between. */
const HEALTH_ATTEMPTS = 600, HEALTH_PAUSE_MS = 100;
/** How long a pause looks for every thread of etcd to have stopped. */
const STOP_LOOKS = 1000, STOP_LOOK_MS = 10;
/** How long a stop waits for etcd to exit after SIGTERM before it kills it. */
const STOP_GRACE_MS = 10_000;
/** Starts retried with other ports when a port was taken between choosing it and etcd binding it. */
const PORT_ATTEMPTS = 3;
/** The end of etcd's log kept for an error message. */
const LOG_TAIL_BYTES = 8 << 10;

/** The etcd to run; on Debian or Ubuntu as root it installs Debian's `etcd-server` when none is found. */
export function ensureEtcd(): Promise<string> {
  return ensureProgram(ETCD);
}

/** A port on 127.0.0.1 that was free a moment ago (etcd binds it next; a lost race is retried). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** etcd's environment: ours without ETCD_* (they would shadow our flags), and the arch opt-in it needs off amd64. */
function etcdEnv(): Record<string, string> {
  const env = Object.fromEntries(Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("ETCD_")));
  if (Deno.build.arch === "aarch64") env.ETCD_UNSUPPORTED_ARCH = "arm64";
  return env;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether every thread of a process is stopped (state T in /proc; a thread that has exited is skipped). */
function threadsStopped(pid: number): boolean {
  for (const { name } of Deno.readDirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${pid}/task/${name}/stat`);
    } catch {
      continue;
    }
    // The state follows the command's name, which is in parentheses and may hold spaces.
    if (!"Tt".includes(stat.slice(stat.lastIndexOf(")") + 2)[0])) return false;
  }
  return true;
}

export interface LocalEtcdOptions {
  /** The etcd executable (default: found, or installed, by `ensureEtcd`). */
  binary?: string;
  /** Passed to etcd as --name, and in the folder's name. */
  name?: string;
  /**
   * Serve clients over TLS with this certificate and key, and accept only clients whose certificates the
   * CA signed. Health checks go to a plain metrics port on 127.0.0.1 instead.
   */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

/** The ports one etcd listens on: clients, its peers (none here, but etcd binds it), and /health. */
interface Ports {
  client: number;
  peer: number;
  metrics: number;
}

const freePorts = (): Ports => ({ client: freePort(), peer: freePort(), metrics: freePort() });

/** One etcd process of our own, a single-member cluster on 127.0.0.1. */
export class LocalEtcd {
  readonly binary: string;
  readonly name: string;
  readonly dataDir: string;
  readonly tls: LocalEtcdOptions["tls"];
  #ports = freePorts();
  #process: Deno.ChildProcess | null = null;
  #exited: Promise<Deno.CommandStatus> | null = null;
  #log = "";

  private constructor(binary: string, name: string, dataDir: string, tls: LocalEtcdOptions["tls"]) {
    this.binary = binary;
    this.name = name;
    this.dataDir = dataDir;
    this.tls = tls;
  }

  /** Starts an etcd in a new temporary folder and waits until it is healthy. */
  static async start(options: LocalEtcdOptions = {}): Promise<LocalEtcd> {
    const binary = options.binary ?? await ensureEtcd(), name = options.name ?? "gemini";
    const etcd = new LocalEtcd(binary, name, await Deno.makeTempDir({ prefix: `etcd-${name}-` }), options.tls);
    try {
      for (let attempt = 1;; attempt++) {
        try {
          await etcd.#launch();
          return etcd;
        } catch (error) {
          // A port taken by someone else since we chose it: the same start on other ports. Nothing was
          // written yet that names the old ones (a fresh member's folder is made by its first start).
          if (attempt >= PORT_ATTEMPTS || !/address already in use/.test(etcd.#log)) throw error;
          await Deno.remove(etcd.dataDir, { recursive: true });
          await Deno.mkdir(etcd.dataDir);
          etcd.#ports = freePorts();
        }
      }
    } catch (error) {
      await etcd.close();
      throw error;
    }
  }

  /** The URL clients connect to. */
  get clientUrl(): string {
    // Over TLS by name: Deno's TLS refuses an IP address as the server name (see client.ts).
    return this.tls ? `https://localhost:${this.#ports.client}` : `http://127.0.0.1:${this.#ports.client}`;
  }

  /** Stops the process (SIGTERM, then SIGKILL if it lingers), keeping its data folder and ports. */
  async stop(): Promise<void> {
    const process = this.#process, exited = this.#exited;
    if (!process || !exited) return;
    this.#process = this.#exited = null;
    const signal = (name: Deno.Signal) => {
      try {
        process.kill(name);
      } catch {
        // it has exited already
      }
    };
    const lingering = setTimeout(() => signal("SIGKILL"), STOP_GRACE_MS);
    signal("SIGTERM");
    await exited;
    clearTimeout(lingering);
  }

  /**
   * Freezes the process (SIGSTOP): it keeps its connections open and answers nothing, as a stalled etcd
   * does. Each thread stops only when it is next scheduled, and under load etcd answered calls made after
   * the signal: on Linux this waits until every thread is seen stopped.
   */
  async pause(): Promise<void> {
    const { pid } = this.#running();
    this.#running().kill("SIGSTOP");
    if (Deno.build.os !== "linux") return;
    for (let look = 0; !threadsStopped(pid); look++) {
      if (look >= STOP_LOOKS) throw new Error(`etcd (pid ${pid}) was not seen stopped after ${STOP_LOOKS} looks`);
      await sleep(STOP_LOOK_MS);
    }
  }

  /** Lets a paused process go on (SIGCONT). */
  resume(): void {
    this.#running().kill("SIGCONT");
  }

  /** Starts the process again on the same data folder and ports, once it was stopped. */
  async restart(): Promise<void> {
    if (this.#process) throw new Error("etcd is still running: stop it before restarting it");
    await this.#launch();
  }

  /** Stops the process and removes its data folder. */
  async close(): Promise<void> {
    await this.stop();
    await Deno.remove(this.dataDir, { recursive: true }).catch(() => {});
  }

  #running(): Deno.ChildProcess {
    if (!this.#process) throw new Error("etcd is not running");
    return this.#process;
  }

  async #launch(): Promise<void> {
    const client = this.clientUrl, peer = `http://127.0.0.1:${this.#ports.peer}`;
    const process = new Deno.Command(this.binary, {
      args: [
        `--name=${this.name}`,
        `--data-dir=${this.dataDir}`,
        `--listen-client-urls=${this.tls ? "https" : "http"}://127.0.0.1:${this.#ports.client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=${this.name}=${peer}`,
        "--initial-cluster-state=new",
        `--listen-metrics-urls=http://127.0.0.1:${this.#ports.metrics}`,
        ...(this.tls
          ? [
            `--cert-file=${this.tls.certFile}`,
            `--key-file=${this.tls.keyFile}`,
            `--trusted-ca-file=${this.tls.caFile}`,
            "--client-cert-auth",
          ]
          : []),
      ],
      env: etcdEnv(),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#process = process;
    this.#exited = process.status;
    this.#drain(process.stdout);
    this.#drain(process.stderr);
    let exited: Deno.CommandStatus | null = null;
    process.status.then((status) => exited = status);
    for (let attempt = 0; attempt < HEALTH_ATTEMPTS; attempt++) {
      if (exited) break;
      if (await this.#healthy()) return;
      await sleep(HEALTH_PAUSE_MS);
    }
    const status = exited as Deno.CommandStatus | null;
    if (!status) await this.stop();
    else this.#process = this.#exited = null;
    throw new Error(
      `etcd (${this.binary}) ${
        status ? `exited with code ${status.code}` : `was not healthy after ${HEALTH_ATTEMPTS} checks`
      } on ${client}; its log ends:\n${this.#log.slice(-2000)}`,
    );
  }

  async #healthy(): Promise<boolean> {
    try {
      const response = await fetch(`http://127.0.0.1:${this.#ports.metrics}/health`, {
        signal: AbortSignal.timeout(2000),
      });
      const body = await response.json();
      return response.ok && body?.health === "true";
    } catch {
      return false;
    }
  }

  async #drain(stream: ReadableStream<Uint8Array>) {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      this.#log = (this.#log + decoder.decode(chunk, { stream: true })).slice(-LOG_TAIL_BYTES);
    }
  }
}
