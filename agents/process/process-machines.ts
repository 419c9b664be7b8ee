// The root's `Machines` for machine processes (machine.ts), found through etcd: a launch gives the rank to
// the process that ran it if only its trainer ended (its memory is still there), else to a spare (a process
// registered with no rank), waiting for one to join if there is none. The machine's control calls go over
// an authenticated control connection (control.ts); its heartbeats come back on it. A machine that the
// root declares failed while it may still run is fenced: told to leave, and never used again. A root that
// takes over finds each machine by the rank and incarnation its process registered (`adopt`).

import { WallClock } from "../protocol/clock.ts";
import type { EtcdHealthStore } from "../etcd/health.ts";
import type { MemberRecord } from "../etcd/state.ts";
import type { Credentials } from "../net/handshake.ts";
import type {
  ClusterSettings,
  Heartbeat,
  IterationPlan,
  Machine,
  MachineControl,
  Machines,
  MachineStatus,
  RestoreSource,
  StepResult,
} from "../protocol/spec.ts";
import { ControlConnection, controlCredentials, ControlLost } from "./control.ts";
import type { LaunchRequest } from "./machine.ts";
import { INCARNATIONS, parseAddress, PROCESSES, type ProcessRecord } from "./registry.ts";

/** A machine process this root drives. */
interface Member {
  id: string;
  control: ControlConnection;
  /** Where its transport listens. */
  address: string;
  /** Set when it told us that its trainer ended: its memory lives on, and its rank restarts there. */
  trainerEnded: boolean;
}

/** What a machine whose control link is lost answers: nothing, as a failed machine (its lease tells the root). */
const silence = () => new Promise<never>(() => {});

/** The calls of `MachineControl` over a control connection. */
function remoteControl(control: ControlConnection): MachineControl {
  const call = <T>(op: string, args: Record<string, unknown> = {}) =>
    control.request(op, args).catch((error) =>
      error instanceof ControlLost ? silence() : Promise.reject(error)
    ) as Promise<
      T
    >;
  return {
    step: (plan: IterationPlan) => call<StepResult>("step", { plan }),
    abort: (epoch: number) => call<void>("abort", { epoch }),
    fetch: (iteration: number, source: RestoreSource) => call<number>("fetch", { iteration, source }),
    load: (iteration: number, initial: boolean) => call<number>("load", { iteration, initial }),
    serve: (owner: number, iteration: number, to: number) => call<number>("serve", { owner, iteration, to }),
    synchronize: () => call<void>("synchronize"),
    status: () => call<MachineStatus>("status"),
    state: () => call<{ params: Float32Array; m: Float32Array; v: Float32Array }>("state"),
    shutdown: () => call<void>("shutdown"),
  };
}

export class ProcessMachines implements Machines {
  readonly settings: ClusterSettings;
  readonly clock = new WallClock();
  readonly #fencing: number;
  readonly #health: EtcdHealthStore;
  readonly #credentials: Credentials;
  /** The process running each rank. */
  readonly #members = new Map<number, Member>();
  /** Processes claimed as spares by a launch under way. */
  readonly #claimed = new Set<string>();
  /** Processes this root fenced: never used again. */
  readonly #fenced = new Set<string>();
  readonly #log: (line: string) => void;
  /** Hears each change of which process runs which rank (null: it runs none any more), for the cluster's state. */
  onMember: (id: string, member: MemberRecord | null) => void = () => {};

  /** `fencing`: the cluster's epoch in etcd that the root advanced it to when elected; its launches carry it. */
  static async open(
    settings: ClusterSettings,
    health: EtcdHealthStore,
    cluster: string,
    secret: string | Uint8Array,
    fencing: number,
    log?: (line: string) => void,
  ): Promise<ProcessMachines> {
    return new ProcessMachines(settings, health, await controlCredentials(cluster, secret, 1), fencing, log);
  }

  private constructor(
    settings: ClusterSettings,
    health: EtcdHealthStore,
    credentials: Credentials,
    fencing: number,
    log = (line: string) => console.error(line),
  ) {
    this.settings = settings;
    this.#fencing = fencing;
    this.#health = health;
    this.#credentials = credentials;
    this.#log = log;
  }

  async launch(
    rank: number,
    epoch: number,
    replicaPeers: number[],
    onHeartbeat: (heartbeat: Heartbeat) => void,
  ): Promise<Machine> {
    const previous = this.#members.get(rank);
    this.#members.delete(rank);
    const { id, control } = previous?.trainerEnded && !previous.control.closed
      ? previous
      : await this.#holder(rank) ?? await this.#spare();
    let incarnation: number, status: MachineStatus, address: string;
    try {
      incarnation = await this.#nextIncarnation(rank);
      const peers = [...this.#members].map(([peer, member]): [number, string] => [peer, member.address]);
      const request: LaunchRequest = { rank, incarnation, epoch, fencing: this.#fencing, replicaPeers, peers };
      ({ status, address } = await control.request("launch", { ...request }) as {
        status: MachineStatus;
        address: string;
      });
    } catch (error) {
      // The process left while it was being launched (its own lease ran out under load, say) or could not
      // start the rank: it is fenced as a failed one is (a process that still runs leaves, and its record,
      // which names the rank since the launch wrote it, is passed over), and the root starts the rank again
      // elsewhere. Nor is it a member any more: the cluster's state (which a root that takes over reads)
      // would otherwise keep it beside the rank's next holder.
      this.#log(`root: starting rank ${rank} on ${id} failed: ${(error as Error).message}`);
      this.#fenced.add(id);
      this.onMember(id, null);
      control.tell("fence").catch(() => {}).finally(() => control.close());
      throw error;
    }
    this.#claimed.delete(id);
    const member: Member = { id, control, address, trainerEnded: false };
    this.#follow(member, rank, onHeartbeat);
    this.#members.set(rank, member);
    this.onMember(id, { address, rank, incarnation });
    // Every other machine learns where the rank now is, and it where they are (ranks launched at the same
    // time were not in each other's lists), before anything is asked of any.
    const others = [...this.#members].filter(([peer]) => peer !== rank);
    await Promise.all(others.flatMap(([peer, other]) => [
      other.control.request("peer", { rank, address }).catch(() => {}),
      control.request("peer", { rank: peer, address: other.address }).catch(() => {}),
    ]));
    return { rank, incarnation, control: remoteControl(control), status };
  }

  async adopt(rank: number, incarnation: number, onHeartbeat: (heartbeat: Heartbeat) => void) {
    const records = await this.#health.get(PROCESSES);
    const record = [...records.values()].find((value) => {
      const process = value as ProcessRecord;
      return process.rank === rank && process.incarnation === incarnation;
    }) as ProcessRecord | undefined;
    if (!record) return null;
    let control: ControlConnection;
    try {
      control = await ControlConnection.dial(parseAddress(record.control, "a process's address"), this.#credentials);
    } catch (error) {
      this.#log(`root: cannot reach rank ${rank}'s process at ${record.control}: ${(error as Error).message}`);
      return null;
    }
    try {
      const { status, address } = await control.request("adopt", { rank, incarnation }) as {
        status: MachineStatus;
        address: string;
      };
      const member: Member = { id: record.control, control, address, trainerEnded: false };
      this.#follow(member, rank, onHeartbeat);
      this.#members.set(rank, member);
      this.onMember(record.control, { address, rank, incarnation });
      return { rank, incarnation, control: remoteControl(control), status };
    } catch (error) {
      this.#log(`root: rank ${rank}'s process would not be adopted: ${(error as Error).message}`);
      control.close();
      return null;
    }
  }

  fence(rank: number) {
    const member = this.#members.get(rank);
    // A process whose trainer ended on its own is not suspect: its memory serves the rank's next start.
    if (!member || member.trainerEnded) return;
    this.#members.delete(rank);
    this.#fenced.add(member.id);
    this.onMember(member.id, null);
    // Written before the connection closes: a stopped process reads it when it goes on.
    member.control.tell("fence").catch(() => {}).finally(() => member.control.close());
  }

  async shutdown() {
    const members = [...this.#members.values()];
    this.#members.clear();
    await Promise.all(members.map((member) => member.control.request("shutdown").catch(() => {})));
    for (const member of members) member.control.close();
  }

  /** Heartbeats to the root; a trainer that ended is remembered (the rank restarts on its memory). */
  #follow(member: Member, rank: number, onHeartbeat: (heartbeat: Heartbeat) => void) {
    member.control.onEvent = (event) => {
      if (event.heartbeat) onHeartbeat(event.heartbeat as Heartbeat);
      if (event.trainerEnded) {
        member.trainerEnded = true;
        this.#log(`root: rank ${rank}'s trainer ended: ${(event.trainerEnded as { why: string }).why}`);
      }
    };
  }

  /** The incarnation of the rank's next start, kept in etcd so that a root that takes over goes on counting. */
  async #nextIncarnation(rank: number): Promise<number> {
    const key = `${INCARNATIONS}${rank}`;
    const last = (await this.#health.get(key)).get(key);
    const next = typeof last === "number" ? last + 1 : 0;
    await this.#health.put(key, next);
    return next;
  }

  /**
   * The process registered as running `rank` that this root does not drive (its registration as a machine
   * ran out while a root took over, say), connected: the rank restarts there, on its memory. Null if none
   * is, or it cannot be reached.
   */
  async #holder(rank: number): Promise<{ id: string; control: ControlConnection } | null> {
    const records = [...(await this.#health.get(PROCESSES)).values()] as ProcessRecord[];
    const record = records.find((process) => process.rank === rank && !this.#fenced.has(process.control));
    if (!record) return null;
    try {
      const address = parseAddress(record.control, "a process's address");
      return { id: record.control, control: await ControlConnection.dial(address, this.#credentials) };
    } catch (error) {
      this.#log(`root: rank ${rank}'s process ${record.control} cannot be reached: ${(error as Error).message}`);
      return null;
    }
  }

  /** A spare process, connected: one registered now, or the first to register. */
  async #spare(): Promise<{ id: string; control: ControlConnection }> {
    let joined!: () => void;
    let wake = new Promise<void>((resolve) => joined = resolve), waited = false;
    const unwatch = this.#health.watch(PROCESSES, (event) => event.type === "put" && joined());
    try {
      await this.#health.watching();
      for (;;) {
        const records = await this.#health.get(PROCESSES);
        for (const value of records.values()) {
          const record = value as ProcessRecord;
          if (record.rank !== null || this.#claimed.has(record.control)) continue;
          this.#claimed.add(record.control);
          try {
            const address = parseAddress(record.control, "a process's address");
            return { id: record.control, control: await ControlConnection.dial(address, this.#credentials) };
          } catch (error) {
            this.#log(`root: spare ${record.control} cannot be reached: ${(error as Error).message}`);
          }
        }
        if (!waited) this.#log("root: waiting for a spare machine process to join");
        waited = true;
        await wake;
        wake = new Promise<void>((resolve) => joined = resolve);
      }
    } finally {
      unwatch();
    }
  }
}
