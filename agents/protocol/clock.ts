// Time, as the protocol sees it: a clock to read and timers to set. The live cluster runs on the wall clock;
// tests and the deterministic simulation run on a virtual clock that moves only when told to, so that
// leases, failure detection and message delivery happen at exact, repeatable times and no test waits on
// the wall clock.

export interface Clock {
  /** Milliseconds since the clock's origin. */
  now(): number;
  /** Calls `run` once `ms` milliseconds have passed on this clock; returns the cancel function. */
  setTimer(ms: number, run: () => void): () => void;
}

/** The wall clock (`performance.now()`), from its creation. */
export class WallClock implements Clock {
  readonly #origin = performance.now();

  now(): number {
    return performance.now() - this.#origin;
  }

  setTimer(ms: number, run: () => void): () => void {
    const due = this.now() + ms;
    let timer: ReturnType<typeof setTimeout>;
    // A timer may fire a fraction of a millisecond early: it runs never before its time on this clock.
    const arm = () =>
      timer = setTimeout(() => this.now() >= due ? run() : arm(), Math.max(0, Math.ceil(due - this.now())));
    arm();
    return () => clearTimeout(timer);
  }
}

/**
 * A clock that stands still until `advance` moves it. Timers due by then run in time order (ties in the
 * order they were set), each with the clock at its due time.
 */
export class VirtualClock implements Clock {
  #now = 0;
  #order = 0;
  readonly #timers = new Map<number, { due: number; run: () => void }>();

  now(): number {
    return this.#now;
  }

  setTimer(ms: number, run: () => void): () => void {
    const id = this.#order++;
    this.#timers.set(id, { due: this.#now + Math.max(0, ms), run });
    return () => this.#timers.delete(id);
  }

  /** Moves the clock forward by `ms`, running every timer that falls due on the way. */
  advance(ms: number) {
    if (!(ms >= 0)) throw new Error(`a clock only moves forward, got ${ms} ms`);
    const end = this.#now + ms;
    for (let next; (next = this.#next(end));) {
      this.#timers.delete(next.id);
      this.#now = next.due;
      next.run();
    }
    this.#now = end;
  }

  /**
   * Advances the clock a millisecond at a time, letting the promises it wakes run between steps, until
   * `work` settles; then its result. What runs in one thread on this clock (timers and promises, no I/O)
   * runs the same way every time.
   */
  async until<T>(work: Promise<T>, limitMs = 600_000): Promise<T> {
    let settled = false;
    work.then(() => settled = true, () => settled = true);
    for (let ms = 0; !settled; ms++) {
      if (ms > limitMs) throw new Error(`nothing settled in ${limitMs} ms of virtual time`);
      this.advance(1);
      for (let i = 0; i < 50; i++) await Promise.resolve();
    }
    return work;
  }

  /** Timers set and not yet run or cancelled. */
  get pending(): number {
    return this.#timers.size;
  }

  /** The earliest timer due by `end` (timers set while advancing included). */
  #next(end: number): { id: number; due: number; run: () => void } | null {
    let first: { id: number; due: number; run: () => void } | null = null;
    for (const [id, timer] of this.#timers) {
      if (timer.due <= end && (!first || timer.due < first.due)) first = { id, ...timer };
    }
    return first;
  }
}
