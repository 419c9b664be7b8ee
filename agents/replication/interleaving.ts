// Traffic interleaving, GEMINI's second idea: a machine's checkpoint goes on the network only where its
// training traffic (the reduce-scatter and the all-gather) leaves the NIC idle, so replicating a checkpoint
// every iteration does not slow training down.
//
// - `IdleProfile` learns, over the first iterations, the idle spans of one machine's NIC in an iteration:
//   the time from the end of each burst of training traffic to the start of the next, each span taken as
//   its minimum over the profiled iterations (as the paper's artifact does).
// - `CheckpointScheduler` decides which bytes of a checkpoint go out when. With the interleaved policy it
//   releases a piece only while training traffic is idle, only if the piece's last byte is expected off
//   the wire within `usableFraction` of the profiled span (pieces are cut to the room left, at most a
//   chunk), and only while the staging buffer has room: at most `stagingBytes` of checkpoint are copied
//   out and not yet off the wire, so the next piece is copied while the previous one is on the wire.
//   A checkpoint that does not fit in one iteration's spans goes on in the next iterations' spans, and
//   the checkpoints that become ready meanwhile are kept in local memory only. Which ones are replicated
//   must be the same on every machine (a recovery rolls every machine back to one iteration that every
//   shard has), so once profiled each machine says how many iterations a checkpoint needs (as its spans
//   predict, or as its last checkpoints took where that is longer), the cluster takes the largest
//   (`clusterInterval`) and every machine replicates the checkpoints of the iterations that are multiples
//   of it: the effective checkpoint interval, reported as such. Until the cluster has an interval, every
//   checkpoint is replicated (those still waiting when it comes, and not due under it, are dropped). The
//   newest iteration every machine has replicated is kept in every machine's memory. A checkpoint due
//   while another is being sent waits in a queue, in order, so that every machine replicates the same
//   iterations however late; only a queue longer than `MAX_QUEUED` (an interval too short for the spans)
//   drops its oldest, counted as skipped. Where the interval changes, machines may differ on the
//   checkpoints on their way then (one finished sending what another dropped from its queue): a recovery
//   takes what each machine's memory really holds, and may go back further.
//   The naive policy sends a checkpoint whole as soon as it is ready; "none" sends nothing.
//
// The scheduler does no I/O and reads no clock: its caller tells it the time and the traffic's state, and
// sends what it releases. The worker agent drives it on the live network, the discrete-event simulation
// (sim/simulation.ts) on simulated time; the same code decides in both.

export const REPLICATION_POLICIES = ["none", "naive", "interleaved"] as const;
export type ReplicationPolicy = (typeof REPLICATION_POLICIES)[number];

export interface InterleavingSettings {
  policy: ReplicationPolicy;
  /** Iterations whose idle spans are profiled before pieces are fitted to them (until then: any idle moment). */
  profileIterations: number;
  /**
   * An iteration's idle spans (ms), when they are known already (from an earlier run's profile, or a
   * model's): used as they are, with no profiling. A run's replication interval then does not depend on how
   * busy this computer's cores happen to be.
   */
  idleSpansMs?: number[];
  /** Idle spans shorter than this (ms) are left unused. */
  minIdleMs: number;
  /** The share of a span that checkpoint bytes may fill (the rest is a margin for jitter). */
  usableFraction: number;
  /** Bytes of checkpoint copied out for sending and not yet off the wire, at most. */
  stagingBytes: number;
}

export const DEFAULT_INTERLEAVING: InterleavingSettings = {
  policy: "interleaved",
  profileIterations: 3,
  minIdleMs: 2,
  usableFraction: 0.8,
  // A few MiB, as GEMINI reserves a few staging buffers on the GPU. On a software adapter a machine's thread
  // is held by its GPU work (llvmpipe runs it inside queue.submit), so its NIC's pipeline only moves on between
  // submits: with 256 KiB the 2.4 MiB shards of the small model fell iterations behind, with 8 MiB none did.
  stagingBytes: 8 << 20,
};

/** Checkpoints that may wait behind the one being sent; more means the interval is too short, and the oldest go. */
const MAX_QUEUED = 3;

/** Replicated checkpoints whose median time (in iterations) bounds the interval from below (see `neededInterval`). */
const TOOK_WINDOW = 3;

/** The smallest piece worth a message of its own (a remainder may be smaller). */
const MIN_PIECE_BYTES = 4096;

/** Throws a clear error unless `policy` is one of the three. */
export function validatePolicy(policy: ReplicationPolicy): ReplicationPolicy {
  if (!REPLICATION_POLICIES.includes(policy)) {
    throw new Error(`replication policy must be one of ${REPLICATION_POLICIES.join(", ")}, got "${policy}"`);
  }
  return policy;
}

export function validateInterleaving(settings: InterleavingSettings, chunkBytes: number): InterleavingSettings {
  validatePolicy(settings.policy);
  if (!Number.isInteger(settings.profileIterations) || settings.profileIterations < 1) {
    throw new Error(`profiled iterations must be a positive integer, got ${settings.profileIterations}`);
  }
  if (!(settings.minIdleMs >= 0)) throw new Error(`the shortest idle span used must be >= 0 ms`);
  if (settings.idleSpansMs && !(settings.idleSpansMs.length && settings.idleSpansMs.every((span) => span >= 0))) {
    throw new Error(`known idle spans must be a non-empty list of durations >= 0 ms, got ${settings.idleSpansMs}`);
  }
  if (!(settings.usableFraction > 0 && settings.usableFraction <= 1)) {
    throw new Error(`the usable share of an idle span must be in (0, 1], got ${settings.usableFraction}`);
  }
  if (!(settings.stagingBytes >= chunkBytes)) {
    throw new Error(`the staging buffer (${settings.stagingBytes} bytes) must hold a chunk (${chunkBytes} bytes)`);
  }
  return settings;
}

/**
 * The idle spans of a NIC in one iteration. Span k follows the k-th burst of training traffic of an
 * iteration and lasts until the next burst (the last one until the next iteration's first).
 */
export class IdleProfile {
  readonly iterations: number;
  readonly #known: number[] | undefined;
  readonly #profiled: number[][] = [];
  #current: number[] = [];
  #idleSince: number | null = null;
  #iterationBegun = false;

  /** Profiles `iterations` iterations, unless the spans are `known`. */
  constructor(iterations: number, known?: number[]) {
    this.iterations = iterations;
    this.#known = known;
  }

  /** A new iteration begins (its first burst closes the previous iteration's last span). */
  beginIteration() {
    this.#iterationBegun = true;
  }

  /** Training traffic starts at `at`. */
  busy(at: number) {
    if (this.#idleSince !== null) this.#current.push(at - this.#idleSince);
    this.#idleSince = null;
    if (!this.#iterationBegun) return;
    this.#iterationBegun = false;
    if (this.#current.length && this.#profiled.length < this.iterations) this.#profiled.push(this.#current);
    this.#current = [];
  }

  /** Training traffic stops at `at`; returns the index of the span that opens. */
  idle(at: number): number {
    this.#idleSince = at;
    return this.#current.length;
  }

  /** Forgets the iteration under way (a recovery interrupted it); what was profiled stays. */
  interrupt() {
    this.#current = [];
    this.#idleSince = null;
    this.#iterationBegun = false;
  }

  get complete(): boolean {
    return this.#known !== undefined || this.#profiled.length >= this.iterations;
  }

  /** Span `index`'s shortest duration over the profiled iterations (ms), once profiling is complete. */
  spanMs(index: number): number | undefined {
    if (this.#known) return this.#known[index];
    if (!this.complete) return undefined;
    const seen = this.#profiled.filter((spans) => index < spans.length).map((spans) => spans[index]);
    return seen.length ? Math.min(...seen) : undefined;
  }

  /** Every span's profiled duration, in order (empty until profiling is complete). */
  get spans(): number[] {
    if (this.#known) return [...this.#known];
    if (!this.complete) return [];
    const count = Math.max(...this.#profiled.map((spans) => spans.length));
    return Array.from({ length: count }, (_, index) => this.spanMs(index)!);
  }
}

/** A piece of a checkpoint to send: bytes [offset, offset + bytes) of checkpoint `iteration` to `peer`. */
export interface PieceOrder {
  iteration: number;
  peer: number;
  offset: number;
  bytes: number;
}

/** A checkpoint being replicated. */
interface Job {
  iteration: number;
  total: number;
  /** Per peer (in `peers` order), how many bytes have been released. */
  released: number[];
  /** Pieces released and not yet off the wire. */
  outstanding: number;
  /** The peer the next piece goes to (peers take turns). */
  turn: number;
  /** The iteration (counted by `beginIteration`) it began in. */
  began: number;
}

export class CheckpointScheduler {
  /** The settings it started with (the policy may change since: see `policy`). */
  readonly settings: InterleavingSettings;
  readonly profile: IdleProfile;
  /** Checkpoints whose every byte has left this machine for every peer: iteration and time (ms). */
  readonly replicated: { iteration: number; at: number }[] = [];
  /** Checkpoints due that were dropped from a full queue, never replicated. */
  skipped = 0;
  #interval: number | null = null;
  #policy: ReplicationPolicy;
  readonly #bandwidth: number;
  readonly #chunkBytes: number;
  readonly #peers: number[];
  #job: Job | null = null;
  /** The checkpoints due next, oldest first, waiting for the one being sent. */
  #queued: { iteration: number; total: number }[] = [];
  /** The size of the checkpoints offered so far. */
  #checkpointBytes: number | null = null;
  #staged = 0;
  /** Iterations begun. */
  #iterations = 0;
  /**
   * How many iterations each of the last `TOOK_WINDOW` replicated checkpoints took (those begun while it
   * was being sent, at least one), oldest first.
   */
  readonly #took: number[] = [];
  /** When this machine's released checkpoint bytes are expected to have left its NIC (ms). */
  #linkFree = 0;
  /** The idle span open now, if training traffic is idle. */
  #idle: { since: number; span: number } | null = null;

  /** `bandwidth` of the machine's send link in bytes/s; `peers` receive every checkpoint. */
  constructor(settings: InterleavingSettings, bandwidth: number, chunkBytes: number, peers: number[]) {
    this.settings = validateInterleaving(settings, chunkBytes);
    this.#policy = settings.policy;
    this.profile = new IdleProfile(settings.profileIterations, settings.idleSpansMs);
    this.#bandwidth = bandwidth;
    this.#chunkBytes = chunkBytes;
    this.#peers = peers;
  }

  /**
   * Only the checkpoints of iterations that are multiples of this are replicated (the cluster sets it);
   * while it is null, every one is.
   */
  get interval(): number | null {
    return this.#interval;
  }

  /**
   * Sets the interval. Checkpoints queued before it was known that it does not make due are dropped (not
   * counted as skipped): a backlog of them would delay the due ones differently on each machine.
   */
  set interval(interval: number | null) {
    this.#interval = interval;
    if (interval !== null) this.#queued = this.#queued.filter((checkpoint) => checkpoint.iteration % interval === 0);
  }

  get policy(): ReplicationPolicy {
    return this.#policy;
  }

  /** Changes the policy from the next piece on; with "none", the checkpoint being sent is abandoned. */
  set policy(policy: ReplicationPolicy) {
    this.#policy = validatePolicy(policy);
    if (policy === "none") this.#abandon();
  }

  /** Bytes copied out for sending and not yet off the wire. */
  get staged(): number {
    return this.#staged;
  }

  /** The iteration of the checkpoint being sent, if any. */
  get sending(): number | null {
    return this.#job?.iteration ?? null;
  }

  /** The iterations of the checkpoints waiting to be sent, oldest first. */
  get queued(): number[] {
    return this.#queued.map((checkpoint) => checkpoint.iteration);
  }

  beginIteration() {
    this.#iterations++;
    this.profile.beginIteration();
  }

  /** Training traffic starts: no piece is released until it stops. */
  trainingBusy(now: number) {
    this.profile.busy(now);
    this.#idle = null;
  }

  /** Training traffic stops: an idle span opens. */
  trainingIdle(now: number) {
    this.#idle = { since: now, span: this.profile.idle(now) };
  }

  /**
   * Checkpoint `iteration` (`bytes` long) is ready in local memory. Returns whether it is to be replicated
   * (now, or after the one being sent): not with the policy "none", nor unless it is due.
   */
  offer(iteration: number, bytes: number): boolean {
    this.#checkpointBytes = bytes;
    if (this.#policy === "none" || !this.#peers.length || (this.#interval !== null && iteration % this.#interval)) {
      return false;
    }
    if (this.#job) {
      this.#queued.push({ iteration, total: bytes });
      if (this.#queued.length > MAX_QUEUED) this.#queued.shift(), this.skipped++;
    } else {
      this.#job = newJob(iteration, bytes, this.#peers.length, this.#iterations);
    }
    return true;
  }

  /** The next piece to send now, or null until something changes (time passes, traffic stops, a piece is sent). */
  next(now: number): PieceOrder | null {
    const job = this.#job;
    if (!job) return null;
    const peerIndex = this.#nextPeer(job);
    if (peerIndex < 0) return null;
    const remaining = job.total - job.released[peerIndex];
    const bytes = this.#policy === "naive" ? Math.min(this.#chunkBytes, remaining) : this.#fit(now, remaining);
    if (bytes <= 0) return null;
    const order = { iteration: job.iteration, peer: this.#peers[peerIndex], offset: job.released[peerIndex], bytes };
    job.released[peerIndex] += bytes;
    job.turn = (peerIndex + 1) % this.#peers.length;
    job.outstanding++;
    this.#staged += bytes;
    this.#linkFree = Math.max(now, this.#linkFree) + (bytes / this.#bandwidth) * 1000;
    return order;
  }

  /** A released piece has left the NIC at `now`; returns whether it was its checkpoint's last one. */
  sent(order: PieceOrder, now: number): boolean {
    this.#staged -= order.bytes;
    const job = this.#job;
    if (!job || job.iteration !== order.iteration) return false; // of a checkpoint a recovery abandoned
    job.outstanding--;
    if (job.outstanding || job.released.some((bytes) => bytes !== job.total)) return false;
    this.replicated.push({ iteration: job.iteration, at: now });
    this.#took.push(Math.max(1, this.#iterations - job.began));
    if (this.#took.length > TOOK_WINDOW) this.#took.shift();
    const next = this.#queued.shift();
    this.#job = next ? newJob(next.iteration, next.total, this.#peers.length, this.#iterations) : null;
    return true;
  }

  /**
   * How many iterations' idle spans one checkpoint needs, once the spans are profiled and a checkpoint has
   * been offered (null until then); 1 for the naive policy, Infinity when no span is usable. Where the
   * spans were profiled, at least the median of what the last three checkpoints took (of two, the lower):
   * the spans' bytes assume the NIC moves on through a whole span, but it moves on only while its machine's
   * thread does (on a software adapter GPU work holds the thread: GPT-2 124M's 356 MiB shards, predicted to
   * take one iteration, took two to four), and every checkpoint due while one is still being sent waits as a
   * copy in host memory. The median, so that one checkpoint held up (a loaded computer) does not move the
   * interval: the queue absorbs it.
   */
  neededInterval(): number | null {
    if (this.#policy !== "interleaved") return 1;
    if (!this.profile.complete || this.#checkpointBytes === null) return null;
    const { usableFraction, minIdleMs, idleSpansMs } = this.settings;
    const usableMs = this.profile.spans.filter((span) => span >= minIdleMs).reduce((sum, span) => sum + span, 0);
    const bytesPerIteration = (usableFraction * usableMs * this.#bandwidth) / 1000;
    const predicted = Math.ceil((this.#checkpointBytes * this.#peers.length) / bytesPerIteration);
    const took = [...this.#took].sort((a, b) => a - b)[Math.floor((this.#took.length - 1) / 2)] ?? 1;
    return Math.max(1, predicted, idleSpansMs ? 1 : took);
  }

  /** A recovery began: the checkpoint being sent is abandoned, and the iteration under way forgotten. */
  reset() {
    this.#abandon();
    this.#idle = null;
    this.profile.interrupt();
  }

  #abandon() {
    this.#job = null;
    this.#queued = [];
  }

  /** The peer whose turn it is among those still owed bytes, or -1. */
  #nextPeer(job: Job): number {
    for (let i = 0; i < this.#peers.length; i++) {
      const index = (job.turn + i) % this.#peers.length;
      if (job.released[index] < job.total) return index;
    }
    return -1;
  }

  /** How many of `remaining` bytes the interleaved policy sends now (0: none yet). */
  #fit(now: number, remaining: number): number {
    if (!this.#idle) return 0;
    let room = Math.min(this.#chunkBytes, remaining, this.settings.stagingBytes - this.#staged);
    const span = this.profile.spanMs(this.#idle.span);
    if (span !== undefined) {
      if (span < this.settings.minIdleMs) return 0;
      const deadline = this.#idle.since + this.settings.usableFraction * span;
      const wireFrom = Math.max(now, this.#linkFree);
      room = Math.min(room, Math.floor(((deadline - wireFrom) / 1000) * this.#bandwidth));
    }
    return room >= Math.min(MIN_PIECE_BYTES, remaining) ? room : 0;
  }
}

function newJob(iteration: number, total: number, peers: number, began: number): Job {
  return { iteration, total, released: new Array(peers).fill(0), outstanding: 0, turn: 0, began };
}

/**
 * The interval every machine replicates at: the largest any needs, null while none knows yet. A machine
 * that has not profiled yet (a replacement) does not hold the others back: where a failure came before the
 * cluster had an interval, waiting for it left every checkpoint due for its profiled iterations too, each a
 * copy in host memory while it waited to be sent (GPT-2 124M: 356 MiB a machine each).
 */
export function clusterInterval(needed: (number | null)[]): number | null {
  const known = needed.filter((interval) => interval !== null);
  return known.length ? Math.max(...known) : null;
}
