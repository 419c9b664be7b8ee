// A small seeded random number generator whose whole state is one u32, so it can be saved in a
// checkpoint and restored: the same seed gives the same stream in Deno, the page and every Worker.
// Mulberry32: fast, passes the usual statistical tests for this use (initialisation, data order).

export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** The whole state: `new Rng(0).restore(rng.state)` continues the same stream. */
  get state(): number {
    return this.#state;
  }

  restore(state: number): this {
    this.#state = state >>> 0;
    return this;
  }

  /** A uniform u32. */
  nextU32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return (z ^ (z >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** Uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box-Muller, one of the pair). */
  normal(): number {
    const u = 1 - this.uniform(); // (0, 1]: log(0) never happens
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
}

/** `count` seeded values, uniform in [-1, 1). */
export function seededFloats(count: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: count }, () => 2 * rng.uniform() - 1);
}
