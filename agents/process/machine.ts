// A machine as an OS process. Its main thread holds what outlives the trainer: the host memory (the
// checkpoint arena, its own shard's and its peers' replicas), the TCP transport to its peers, its control
// port (the root's requests, answered by the trainer) and its registration in etcd under a lease it keeps
// alive itself. The trainer is the simulated machine's Worker (agents/sim/worker.ts: the worker agent with
// the GPU engine), its network port bridged to the TCP transport instead of the simulated switch, and its
// heartbeats passed on to the root over the control connection.
//
// A process that joins without a rank is a spare, and a hot one: from the job's settings in etcd it commits
// its arena and has its trainer Worker build everything but the rank (its GPU device, the model's buffers,
// every pipeline compiled and run once, its heartbeat thread) before it registers in etcd with no rank.
// Given a rank, it only binds it: the arena and the engine take the rank, the shard is restored, and it
// goes. A software failure ends the trainer Worker (SIGUSR1 does it on purpose): the process tells the
// root, keeps its memory, and a later launch of the same rank starts a new trainer, prepared the same way,
// on that memory. A fenced process, or one whose lease ran out in etcd (it was stopped past it, say),
// stops its trainer and leaves.

import * as Comlink from "comlink";
import type { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import type { Etcd } from "../etcd/client.ts";
import { EtcdHealthStore } from "../etcd/health.ts";
import { type PeerAddress, TcpTransport } from "../net/tcp-transport.ts";
import type { Delivery, TrafficKind } from "../protocol/transport.ts";
import { type ClusterSettings, type Heartbeat, hostMemory, machinePlace, type MachineSpec } from "../protocol/spec.ts";
import type { Outgoing } from "../sim/network.ts";
import { WORKER_TEARDOWN_MS } from "../sim/cluster.ts";
import type { MachineApi } from "../sim/worker.ts";
import { ControlConnection, controlCredentials } from "./control.ts";
import {
  DONE_KEY,
  formatAddress,
  parseAddress,
  PROCESSES,
  type ProcessRecord,
  SETTINGS_KEY,
  valueOf,
} from "./registry.ts";

export interface MachineProcessOptions {
  etcd: Etcd;
  cluster: string;
  secret: string | Uint8Array;
  /** The control port; the transport listens on the next port (both picked by the system for port 0). */
  listen: PeerAddress;
  /** Where peers and roots reach it, when not where it listens (behind NAT): the control port, as `listen`. */
  advertise?: PeerAddress;
  log?: (line: string) => void;
}

/** The lease a machine process keeps alive itself (etcd's whole seconds; its minimum is 2 s by default). */
const PROCESS_LEASE_MS = 2000;
const KEEP_ALIVE_MS = 500;

interface Trainer {
  worker: Worker;
  api: Comlink.Remote<MachineApi>;
  ports: MessagePort[];
}

const KINDS: TrafficKind[] = ["training", "checkpoint", "retrieval"];
const silence = () => new Promise<never>(() => {});

export class MachineProcess {
  readonly id: string;
  readonly control: PeerAddress;
  /** Settles when the process has stopped, with why. */
  readonly exited: Promise<string>;
  readonly #options: MachineProcessOptions;
  readonly #health: EtcdHealthStore;
  readonly #listener: Deno.TcpListener;
  readonly #log: (line: string) => void;
  #settings!: ClusterSettings;
  #lease = 0;
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  #renewing = false;
  #rank: number | null = null;
  #incarnation = -1;
  /** The host memory, committed before the process has a rank, and given the rank at its first launch. */
  #store!: InMemoryCheckpointStore;
  #transport: TcpTransport | null = null;
  /** A trainer Worker started ahead and prepared for the job: the next launch uses it. */
  #prepared: Promise<Trainer> | null = null;
  #trainer: Trainer | null = null;
  /** Where heartbeats and events go: the root that launched or adopted this machine. */
  #owner: ControlConnection | null = null;
  #leave!: (why: string) => void;
  #leaving = false;
  readonly #connections = new Set<ControlConnection>();
  readonly #unwatchDone: () => void;

  static async start(options: MachineProcessOptions): Promise<MachineProcess> {
    const machine = new MachineProcess(options);
    try {
      await machine.#join();
    } catch (error) {
      machine.stop(`it could not join: ${(error as Error).message}`);
      await machine.exited;
      throw error;
    }
    return machine;
  }

  private constructor(options: MachineProcessOptions) {
    this.#options = options;
    this.#log = options.log ?? ((line) => console.error(line));
    this.#health = new EtcdHealthStore(options.etcd, options.cluster);
    this.#listener = Deno.listen({ hostname: options.listen.hostname, port: options.listen.port });
    const { hostname, port } = this.#listener.addr;
    this.control = options.advertise ?? { hostname, port };
    this.id = formatAddress(this.control);
    this.exited = new Promise<string>((resolve) => this.#leave = resolve).then(async (why) => {
      await this.#shutdown();
      return why;
    });
    this.#unwatchDone = this.#health.watch(DONE_KEY, (event) => {
      if (event.type === "put") this.stop("the run is done");
    });
  }

  get rank(): number | null {
    return this.#rank;
  }

  /** Stops the process (its trainer, its connections, its registration); `exited` then settles. */
  stop(why: string) {
    if (this.#leaving) return;
    this.#leaving = true;
    this.#leave(why);
  }

  /** Waits for the job's settings, commits its memory and prepares a trainer ahead, and registers as a spare. */
  async #join() {
    const accepting = this.#accept();
    accepting.catch(() => {});
    this.#settings = await valueOf(this.#health, SETTINGS_KEY) as ClusterSettings;
    // Every rank's arena has the same size: it is made (and its pages committed) as rank 0's, and assigned.
    this.#store = hostMemory(this.#settings, 0);
    this.#prepared = this.#prepare();
    await this.#prepared;
    this.#lease = await this.#health.grant(PROCESS_LEASE_MS);
    this.#keepAlive = setInterval(() => this.#renew(), KEEP_ALIVE_MS);
    await this.#register();
    // SIGUSR1 ends the trainer as a software failure would.
    Deno.addSignalListener("SIGUSR1", this.#onSignal);
  }

  readonly #onSignal = () => this.#trainerEnded("its trainer was ended (SIGUSR1)");

  #register(): Promise<void> {
    const record: ProcessRecord = { control: this.id, rank: this.#rank, incarnation: this.#incarnation };
    return this.#health.put(PROCESSES + this.id, record, this.#lease);
  }

  /** Keeps the process's lease alive (see `#leaseEnded` for one found ended). */
  #renew() {
    if (this.#renewing || this.#leaving) return;
    this.#renewing = true;
    this.#health.keepAlive(this.#lease).then((alive) => alive ? undefined : this.#leaseEnded()).catch(
      (error) => this.#log(`machine ${this.id}: keeping its lease alive failed: ${error.message}`),
    ).finally(() => this.#renewing = false);
  }

  /**
   * Its lease found ended: a machine with a rank has been given up on (its rank may already be another's), so
   * it leaves; a spare holds nothing anyone relies on, so it registers again under a new lease. Under heavy
   * load every spare's lease once ran out as they joined, and the cluster waited for machines forever.
   */
  async #leaseEnded() {
    if (this.#rank !== null) return this.stop("its lease in etcd ran out (it was stopped or cut off past it): fenced");
    this.#log(`machine ${this.id}: its lease as a spare ran out (it was stalled past it); it registers again`);
    this.#lease = await this.#health.grant(PROCESS_LEASE_MS);
    await this.#register();
  }

  async #accept() {
    const credentials = await controlCredentials(this.#options.cluster, this.#options.secret, 0);
    for await (const conn of this.#listener) {
      ControlConnection.accept(conn, credentials).then((control) => {
        this.#connections.add(control);
        control.onRequest = (op, args) => this.#handle(control, op, args);
        control.ended.then(() => this.#connections.delete(control));
      }, (error) => this.#log(`machine ${this.id}: refused a control connection: ${error.message}`));
    }
  }

  /** A trainer Worker prepared for the job (see MachineApi.prepare), not yet started as any rank. */
  async #prepare(): Promise<Trainer> {
    const worker = new Worker(new URL("../sim/worker.ts", import.meta.url), { type: "module", name: "trainer" });
    const api = Comlink.wrap<MachineApi>(worker);
    const crashed = new Promise<never>((_, reject) => {
      worker.onerror = (event) => {
        event.preventDefault();
        reject(new Error(`the trainer crashed while starting: ${event.message}`));
      };
    });
    const { training, persistent, machines } = this.#settings;
    await Promise.race([api.prepare({ training, persistent, machines }), crashed]);
    return { worker, api, ports: [] };
  }

  #handle(control: ControlConnection, op: string, args: Record<string, unknown>): Promise<unknown> {
    switch (op) {
      case "launch":
        return this.#launch(control, args as unknown as LaunchRequest);
      case "adopt": {
        if (args.rank !== this.#rank || args.incarnation !== this.#incarnation || !this.#trainer) {
          return Promise.reject(new Error(`this process does not run rank ${args.rank} as ${args.incarnation}`));
        }
        this.#owner = control;
        return this.#trainer.api.status().then((status) => ({ status, address: this.#dataAddress() }));
      }
    }
    // Only the root that launched or adopted this machine drives it: a root that was superseded (stopped,
    // and gone on after another took over) is not obeyed, however long its connection stayed open.
    if (control !== this.#owner) return Promise.reject(new Error(`${op}: another root drives this machine now`));
    switch (op) {
      case "peer":
        this.#connect(args.rank as number, args.address as string);
        return Promise.resolve(null);
      case "fence":
        queueMicrotask(() => this.stop("fenced by the root"));
        return Promise.resolve(null);
      case "shutdown":
        queueMicrotask(() => this.stop("the root shut the cluster down"));
        return Promise.resolve(null);
      case "abort":
        this.#transport?.abort(args.epoch as number);
        return this.#call((api) => api.abort(args.epoch as number));
      case "step":
        return this.#call((api) => api.step(args.plan as Parameters<MachineApi["step"]>[0]));
      case "fetch":
        return this.#call((api) => api.fetch(args.iteration as number, args.source as never));
      case "load":
        return this.#call((api) => api.load(args.iteration as number, args.initial as boolean));
      case "serve":
        return this.#call((api) => api.serve(args.owner as number, args.iteration as number, args.to as number));
      case "synchronize":
        return this.#call((api) => api.synchronize());
      case "status":
        return this.#call((api) => api.status());
      case "state":
        return this.#call((api) => api.state());
      default:
        return Promise.reject(new Error(`unknown request ${JSON.stringify(op)}`));
    }
  }

  /** A call on the trainer; a machine whose trainer has ended answers nothing, as a failed machine. */
  #call<T>(body: (api: Comlink.Remote<MachineApi>) => Promise<T>): Promise<T> {
    return this.#trainer ? body(this.#trainer.api) : silence();
  }

  #dataAddress(): string {
    const port = this.#transport!.address.port;
    return formatAddress({
      hostname: this.control.hostname,
      port: this.#options.advertise ? this.control.port + 1 : port,
    });
  }

  #connect(rank: number, address: string) {
    if (rank === this.#rank || !this.#transport) return;
    this.#transport.connect(rank, parseAddress(address, `rank ${rank}'s address`)).catch((error) =>
      this.#log(`machine ${this.id}: cannot reach rank ${rank} at ${address}: ${error.message}`)
    );
  }

  async #launch(control: ControlConnection, request: LaunchRequest) {
    const { rank, incarnation, epoch, fencing, replicaPeers, peers } = request;
    if (this.#rank !== null && this.#rank !== rank) throw new Error(`this process runs rank ${this.#rank}`);
    // Its rank is written first, and only while the cluster's epoch in etcd is the launching root's: the launch
    // of a root that was superseded (stopped, and gone on after another took over) is refused by etcd itself.
    const record: ProcessRecord = { control: this.id, rank, incarnation };
    await this.#health.putAtEpoch(fencing, PROCESSES + this.id, record, this.#lease);
    // A new start of the rank this process runs (a root that took over lost its registration): the old
    // trainer ends as in a software failure, and the new one starts on the same memory.
    this.#trainerEnded(`rank ${rank} is started again here, as incarnation ${incarnation}`);
    if (this.#rank === null) this.#store.assign(rank);
    this.#rank = rank;
    this.#incarnation = incarnation;
    this.#transport ??= await this.#startTransport(rank, epoch);
    if (this.#transport.epoch !== epoch) this.#transport.abort(epoch);
    for (const [peer, address] of peers) this.#connect(peer, address);
    this.#owner = control;
    const trainer = await (this.#prepared ?? this.#prepare());
    this.#prepared = null;
    const status = await this.#startTrainer(trainer, { rank, incarnation, epoch, replicaPeers });
    return { status, address: this.#dataAddress() };
  }

  async #startTransport(rank: number, epoch: number): Promise<TcpTransport> {
    const { listen, cluster, secret } = this.#options;
    const transport = await TcpTransport.start({
      rank,
      cluster,
      secret,
      epoch,
      listen: { hostname: listen.hostname, port: listen.port ? listen.port + 1 : 0 },
      log: this.#log,
    });
    // Everything that arrives goes to the trainer's network port (its own mailbox matches it to receives).
    for (const kind of KINDS) {
      transport.handle(kind, (delivery: Delivery) => {
        const port = this.#trainer?.ports[0];
        port?.postMessage(delivery, [delivery.bytes.buffer as ArrayBuffer]);
      });
    }
    return transport;
  }

  async #startTrainer(
    trainer: Trainer,
    { rank, incarnation, epoch, replicaPeers }: Omit<LaunchRequest, "peers" | "fencing">,
  ) {
    const settings = this.#settings, transport = this.#transport!;
    const network = new MessageChannel(), heartbeats = new MessageChannel(), life = new MessageChannel();
    trainer.ports = [network.port1, heartbeats.port1, life.port1];
    this.#trainer = trainer;
    network.port1.onmessage = ({ data }: MessageEvent<Outgoing>) => {
      // A message of an epoch this machine has left (sent before the abort reached the trainer) is dropped:
      // stamped with the transport's newer epoch, it would be taken as part of the new one.
      if (data.epoch !== transport.epoch) return;
      const sequence = data.sequence;
      const onSent = sequence === undefined ? undefined : () => network.port1.postMessage({ sent: sequence });
      transport.send(data.to, data.kind, data.label, data.tag, new Uint8Array(data.bytes), data.info, onSent);
    };
    let beating!: () => void;
    const firstHeartbeat = new Promise<void>((resolve) => beating = resolve);
    heartbeats.port1.onmessage = ({ data }: MessageEvent<Heartbeat>) => {
      beating();
      if (this.#owner && !this.#owner.closed) this.#owner.notify({ heartbeat: data }).catch(() => {});
    };
    life.port1.onmessage = ({ data }: MessageEvent<{ where: string }>) => this.#trainerEnded(`it died ${data.where}`);
    const crashed = new Promise<never>((_, reject) => {
      trainer.worker.onerror = (event) => {
        event.preventDefault();
        reject(new Error(`the trainer crashed: ${event.message}`));
        this.#trainerEnded(`its trainer crashed: ${event.message}`);
      };
    });
    crashed.catch(() => {});
    const spec: MachineSpec = {
      ...machinePlace(settings, rank, incarnation, epoch, replicaPeers),
      memory: this.#store.memory,
      network: network.port2,
      root: heartbeats.port2,
      life: life.port2,
    };
    const status = await Promise.race([
      trainer.api.start(Comlink.transfer(spec, [network.port2, heartbeats.port2, life.port2])),
      crashed,
    ]);
    await Promise.race([firstHeartbeat, crashed]);
    return status;
  }

  /** The trainer has ended (a software failure): the memory stays, and the root hears of it. */
  #trainerEnded(why: string) {
    const trainer = this.#trainer;
    if (!trainer) return;
    this.#trainer = null;
    trainer.worker.terminate();
    for (const port of trainer.ports) port.close();
    this.#log(`machine ${this.id} (rank ${this.#rank}): ${why}`);
    this.#owner?.notify({ trainerEnded: { rank: this.#rank, incarnation: this.#incarnation, why } }).catch(() => {});
    if (!this.#leaving) {
      this.#prepared = this.#prepare();
      this.#prepared.catch((error) => this.stop(`a new trainer could not start: ${error.message}`));
    }
  }

  async #shutdown() {
    clearInterval(this.#keepAlive);
    this.#unwatchDone();
    try {
      Deno.removeSignalListener("SIGUSR1", this.#onSignal);
    } catch { /* never added */ }
    this.#listener.close();
    for (const connection of this.#connections) connection.close();
    // The trainer releases its GPU device in its own thread before it ends (see SimulatedCluster.shutdown).
    const trainers = [this.#trainer, await this.#prepared?.catch(() => null)].filter((t): t is Trainer => !!t);
    this.#trainer = this.#prepared = null;
    for (const trainer of trainers) {
      await Promise.race([trainer.api.shutdown().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 2000))]);
      trainer.worker.terminate();
      for (const port of trainer.ports) port.close();
    }
    // A Worker ends some time after terminate(), its GPU objects dropped in its thread: a process that exits
    // meanwhile crashed (glibc's malloc_consolidate abort, or SIGSEGV) after a fenced machine had left.
    if (trainers.length) await new Promise((resolve) => setTimeout(resolve, WORKER_TEARDOWN_MS));
    this.#transport?.close();
    await this.#health.close().catch(() => {});
  }
}

/** What a root asks of a process when it gives it a rank. */
export interface LaunchRequest {
  rank: number;
  incarnation: number;
  epoch: number;
  /** The cluster's epoch in etcd that the launching root advanced it to when it was elected (see state.ts). */
  fencing: number;
  replicaPeers: number[];
  /** Where every other running rank's transport listens. */
  peers: [number, string][];
}
