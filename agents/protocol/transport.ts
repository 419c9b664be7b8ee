// How a machine's agent talks to its peers: framed messages between ranks, matched to receivers by sender
// and tag, with each message stamped with its sender's recovery epoch so that nothing of an abandoned
// iteration or recovery leaks into the next. The collectives and the worker agent speak only this; the
// simulated switch (`NetworkEndpoint` in sim/network.ts) implements it in one process, paced like a NIC.

/** What a transfer carries: the collectives of training, checkpoint replicas, or a shard fetched in recovery. */
export type TrafficKind = "training" | "checkpoint" | "retrieval";

/** A message as it arrives. */
export interface Delivery {
  from: number;
  kind: TrafficKind;
  label: string;
  tag: string;
  /** The sender's recovery epoch when it sent the message. */
  epoch: number;
  bytes: Uint8Array;
  info?: unknown;
}

/** A receive or a collective was abandoned because the cluster began a recovery. */
export class AbortedError extends Error {
  override name = "AbortedError";
}

export interface Transport {
  readonly rank: number;
  /** The recovery epoch this machine is in: messages it sends carry it. */
  readonly epoch: number;
  /**
   * Sends a copy of `bytes` to machine `to` (`label` names it on the timeline; `tag` matches it to a receive).
   * `onSent`, if given, is called when its last byte has left this machine (never, if the machine fails
   * first): a sender that bounds what it has queued (a staging buffer) frees the space then.
   */
  send(
    to: number,
    kind: TrafficKind,
    label: string,
    tag: string,
    bytes: Uint8Array,
    info?: unknown,
    onSent?: () => void,
  ): void;
  /** The next message from `from` with `tag`, for a caller that began in `epoch` (AbortedError once it passed). */
  receive(from: number, tag: string, epoch?: number): Promise<Delivery>;
  /** Hands every message of `kind` to `handler` as it arrives, instead of to receives. */
  handle(kind: TrafficKind, handler: (delivery: Delivery) => void): void;
  /** Moves to `epoch`: pending receives fail with AbortedError and older messages are dropped. */
  abort(epoch: number): void;
  close(): void;
}
