// The simulated network: every byte between machines crosses it, training traffic and checkpoint traffic
// alike. Each machine has a NIC with a send and a receive link of the same bandwidth. A message occupies
// the sender's send link and the receiver's receive link for bytes / bandwidth, in the order it was sent
// (one queue per link, as a NIC serialises its frames), and arrives one latency after its last byte. The
// bytes are copied for real and delivered in real time, and every transfer is recorded on a timeline
// (who, what kind, bytes, queued, start, end) that the bench and the lab read.
//
// Senders decide what goes out when: a message is the unit of scheduling, so a checkpoint sent as chunks
// of its own lets a scheduler put each chunk where training traffic leaves the link idle.
//
// `Network` is the switch, in the thread that owns the cluster; `NetworkEndpoint` is a machine's NIC
// driver, in its Worker, connected to the switch by a MessagePort. The switch keeps time on an injected
// clock (the wall clock when live, a virtual one in tests).

import { type Clock, WallClock } from "../protocol/clock.ts";
import type { NetworkSettings } from "../protocol/spec.ts";
import { MailboxTransport } from "../protocol/mailbox.ts";
import { collectGarbage } from "./collect-garbage.ts";
import type { Delivery, TrafficKind } from "../protocol/transport.ts";

/** One message on the timeline. Times are milliseconds since the network started. */
export interface TransferRecord {
  id: number;
  from: number;
  to: number;
  kind: TrafficKind;
  /** What it is within its kind: "reduce-scatter", "all-gather", "replica", ... */
  label: string;
  bytes: number;
  queuedAt: number;
  start: number;
  end: number;
  /** Set when the message never arrived, with the reason (a machine failed, nobody was attached). */
  dropped?: string;
}

/**
 * The links of a switched network: each machine's send and receive link, reserved in the order messages
 * are sent. Both the live network and the discrete-event simulation (simulation.ts) time transfers with it,
 * so they cannot disagree on what contention costs.
 */
export class LinkSchedule {
  readonly #bandwidth: number;
  readonly #sendFree = new Map<number, number>();
  readonly #receiveFree = new Map<number, number>();

  /** `bandwidth` in bytes per second; times are in milliseconds. */
  constructor(bandwidth: number) {
    this.#bandwidth = bandwidth;
  }

  /** Reserves `from`'s send link and `to`'s receive link for `bytes`, queued at `at`: when it starts and ends. */
  reserve(from: number, to: number, bytes: number, at: number): { start: number; end: number } {
    const start = Math.max(at, this.#sendFree.get(from) ?? 0, this.#receiveFree.get(to) ?? 0);
    const end = start + (bytes / this.#bandwidth) * 1000;
    this.#sendFree.set(from, end);
    this.#receiveFree.set(to, end);
    return { start, end };
  }
}

/** A message as a machine sends it. */
export interface Outgoing {
  /** Set when the sender wants to hear when the message's last byte has left its NIC (see `sent`). */
  sequence?: number;
  to: number;
  kind: TrafficKind;
  label: string;
  tag: string;
  epoch: number;
  bytes: ArrayBuffer;
  info?: unknown;
}

export function validateNetworkSettings(settings: NetworkSettings): NetworkSettings {
  if (!(settings.bandwidth > 0)) {
    throw new Error(`network bandwidth must be positive bytes/s, got ${settings.bandwidth}`);
  }
  if (!(settings.latencyMs >= 0)) throw new Error(`network latency must be at least 0 ms, got ${settings.latencyMs}`);
  return settings;
}

export class Network {
  readonly settings: NetworkSettings;
  /** Every transfer so far, in the order sent (the oldest dropped past `timelineLimit`). */
  readonly timeline: TransferRecord[] = [];
  readonly #clock: Clock;
  readonly #ports = new Map<number, Port>();
  readonly #links: LinkSchedule;
  /** Messages queued or on the wire, by id: a message dropped from here is never delivered. */
  readonly #inFlight = new Map<number, TransferRecord>();
  readonly #listeners = new Set<(record: TransferRecord) => void>();
  readonly #timelineLimit: number;
  #nextId = 0;

  constructor(settings: NetworkSettings, options: { timelineLimit?: number; clock?: Clock } = {}) {
    this.settings = validateNetworkSettings({ ...settings });
    this.#clock = options.clock ?? new WallClock();
    this.#links = new LinkSchedule(this.settings.bandwidth);
    this.#timelineLimit = options.timelineLimit ?? 200_000;
  }

  /** Milliseconds on the network's clock: the timeline's times. */
  now(): number {
    return this.#clock.now();
  }

  get clock(): Clock {
    return this.#clock;
  }

  /** Plugs machine `rank`'s NIC (the other end of `port` is its `NetworkEndpoint`) into the switch. */
  attach(rank: number, port: Port) {
    this.detach(rank, `machine ${rank} was replaced`);
    this.#ports.set(rank, port);
    port.onmessage = ({ data }: MessageEvent<Outgoing>) => this.#send(rank, data);
  }

  /** Unplugs a machine: what it was sending or receiving is lost, as when a machine fails. */
  detach(rank: number, why: string) {
    const port = this.#ports.get(rank);
    if (!port) return;
    port.onmessage = null;
    port.close();
    this.#ports.delete(rank);
    for (const [id, record] of this.#inFlight) {
      if (record.from !== rank && record.to !== rank) continue;
      this.#inFlight.delete(id);
      record.dropped = why;
    }
  }

  /** Calls `listener` with each transfer as it is queued (it is updated in place if later dropped). */
  onTransfer(listener: (record: TransferRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Bytes in flight (queued or on the wire) now. */
  get bytesInFlight(): number {
    let bytes = 0;
    for (const record of this.#inFlight.values()) bytes += record.bytes;
    return bytes;
  }

  close() {
    for (const rank of [...this.#ports.keys()]) this.detach(rank, "the network was shut down");
  }

  /** Runs `run` at `time` on the network's clock. */
  #at(time: number, run: () => void) {
    this.#clock.setTimer(time - this.now(), run);
  }

  #send(from: number, message: Outgoing) {
    const queuedAt = this.now(), bytes = message.bytes.byteLength, to = message.to;
    const { start, end } = this.#links.reserve(from, to, bytes, queuedAt);
    const record: TransferRecord = {
      id: this.#nextId++,
      from,
      to,
      kind: message.kind,
      label: message.label,
      bytes,
      queuedAt,
      start,
      end,
    };
    this.timeline.push(record);
    if (this.timeline.length > this.#timelineLimit) this.timeline.splice(0, this.timeline.length / 2);
    this.#inFlight.set(record.id, record);
    if (message.sequence !== undefined) {
      // The transmit-complete notice a NIC gives: the sender may reuse the message's buffer space.
      const sequence = message.sequence;
      this.#at(end, () => this.#ports.get(from)?.postMessage({ sent: sequence }));
    }
    this.#at(end + this.settings.latencyMs, () => {
      if (!this.#inFlight.delete(record.id)) return; // dropped on the way
      const port = this.#ports.get(to);
      if (!port) {
        record.dropped = `no machine ${to} on the network`;
        return;
      }
      const delivery: Delivery = {
        from,
        kind: message.kind,
        label: message.label,
        tag: message.tag,
        epoch: message.epoch,
        bytes: new Uint8Array(message.bytes),
        info: message.info,
      };
      port.postMessage(delivery, [message.bytes]);
    });
    for (const listener of this.#listeners) listener(record);
  }
}

/**
 * One end of the link between a machine's NIC and the switch: a MessagePort between threads, or one of a
 * `directChannel`'s ends in one thread.
 */
export interface Port {
  onmessage: ((event: MessageEvent) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
  close(): void;
}

/**
 * Two linked ports in one thread. Each message is handed over in a microtask of its own, in the order posted:
 * on a virtual clock, a network joined by these runs the same way every time (MessagePorts make no promise
 * about the order of messages on different ports).
 */
export function directChannel(): [Port, Port] {
  const open = [true, true];
  const end = (self: number): Port => ({
    onmessage: null,
    postMessage(data: unknown) {
      queueMicrotask(() =>
        open[self] && open[1 - self] && ends[1 - self].onmessage?.(new MessageEvent("message", { data }))
      );
    },
    close() {
      open[self] = false;
    },
  });
  const ends: [Port, Port] = [end(0), end(1)];
  return ends;
}

/** A message at least this large is sent after a garbage collection (see collect-garbage.ts). */
const COLLECT_BEFORE_BYTES = 16 << 20;

/**
 * A machine's side of the network (see `Transport`): what it sends goes to the switch through its port;
 * what arrives goes to its mailbox, which matches messages to receivers.
 */
export class NetworkEndpoint extends MailboxTransport {
  readonly #port: Port;
  readonly #sending = new Map<number, () => void>();
  #nextSequence = 0;

  constructor(rank: number, port: Port, epoch = 0) {
    super(rank, epoch);
    this.#port = port;
    port.onmessage = ({ data }: MessageEvent<Delivery | { sent: number }>) => {
      if ("sent" in data) {
        this.#sending.get(data.sent)?.();
        this.#sending.delete(data.sent);
      } else {
        this.mailbox.arrive(data);
      }
    };
  }

  /** See `Transport.send`: the notice that the last byte has left comes from the switch, at its time. */
  send(
    to: number,
    kind: TrafficKind,
    label: string,
    tag: string,
    bytes: Uint8Array,
    info?: unknown,
    onSent?: () => void,
  ) {
    let sequence: number | undefined;
    if (onSent) {
      sequence = this.#nextSequence++;
      this.#sending.set(sequence, onSent);
    }
    if (bytes.length >= COLLECT_BEFORE_BYTES) collectGarbage(); // the messages before it, received and spent
    const copy = bytes.slice().buffer;
    const message: Outgoing = { sequence, to, kind, label, tag, epoch: this.epoch, bytes: copy, info };
    this.#port.postMessage(message, [copy]);
  }

  close() {
    this.#port.onmessage = null;
    this.#port.close();
  }
}
