// The connection to etcd, through the `etcd3` client (gRPC), and how every call waits out an etcd that is
// briefly away: a call that fails for a reason that can pass (etcd restarting, a lost connection, a
// deadline) is tried again, with a growing pause on the injected clock, until `unavailableMs` have passed;
// then it fails with one `EtcdUnavailableError`. etcd3's own retries and circuit breaker are replaced by
// this one bounded loop, so that an outage is waited out for a known time and a restarted etcd is used at
// once, not after a breaker's five seconds.

import { Buffer } from "node:buffer";
import { Etcd3, type IOptions, isRecoverableError } from "etcd3";
import { type Clock, WallClock } from "../protocol/clock.ts";

export interface EtcdOptions {
  /** Client URLs, `http://host:port` or `https://host:port` (all of one kind). */
  endpoints: string[];
  /** PEM files for TLS: the CA that signed etcd's certificate, and this client's certificate and key. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** etcd's own users (when its authentication is enabled). */
  user?: string;
  password?: string;
  /** The longest one call may take before it counts as failed and is tried again (default 5 s). */
  callTimeoutMs?: number;
  /** How long calls keep being tried while etcd cannot be reached (default 30 s). */
  unavailableMs?: number;
}

/** etcd could not be reached (or kept failing) for longer than the options allow. */
export class EtcdUnavailableError extends Error {
  constructor(endpoints: string[], what: string, waitedMs: number, cause: unknown) {
    super(
      `etcd at ${endpoints.join(", ")} did not answer ${what} for ${Math.round(waitedMs)} ms: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
    this.name = "EtcdUnavailableError";
  }
}

const FIRST_PAUSE_MS = 50, LONGEST_PAUSE_MS = 1000;

type FaultHandling = NonNullable<IOptions["faultHandling"]>;

/** A policy that runs the call once: our own loop (`Etcd.call`) does the retrying. */
const passThrough: NonNullable<FaultHandling["global"]> = {
  _altReturn: undefined as never,
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
  execute: (run) => Promise.resolve().then(() => run({ signal: new AbortController().signal })),
};

/** A watch reconnects after 50 ms, then twice as long each time, at most a second (etcd3's waits up to 30 s). */
function watchBackoff(ms = FIRST_PAUSE_MS): NonNullable<FaultHandling["watchBackoff"]> {
  return { duration: ms, next: () => watchBackoff(Math.min(ms * 2, LONGEST_PAUSE_MS)) };
}

function checkOptions(options: EtcdOptions): void {
  if (options.endpoints.length === 0) throw new Error("etcd needs at least one endpoint");
  for (const endpoint of options.endpoints) {
    if (!URL.canParse(endpoint) || !["http:", "https:"].includes(new URL(endpoint).protocol)) {
      throw new Error(`etcd endpoint "${endpoint}" should be http://host:port or https://host:port`);
    }
    // gRPC sends the host as TLS's server name, and Deno's TLS refuses one that is an IP address.
    const { protocol, hostname } = new URL(endpoint);
    if (protocol === "https:" && (/^[\d.]+$/.test(hostname) || hostname.startsWith("["))) {
      throw new Error(
        `etcd over TLS is reached by a host name its certificate names, not an IP address: "${endpoint}" ` +
          `(Deno's TLS refuses an IP address as the server name; localhost or /etc/hosts can name it)`,
      );
    }
  }
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    throw new Error("an etcd client certificate needs its key, and a key its certificate");
  }
  if ((options.certFile || options.keyFile) && !options.caFile) {
    throw new Error("an etcd client certificate needs the CA file that signed etcd's certificate");
  }
  if ((options.user === undefined) !== (options.password === undefined)) {
    throw new Error("an etcd user needs a password, and a password a user");
  }
  for (const [name, ms] of [["call timeout", options.callTimeoutMs], ["unavailable time", options.unavailableMs]]) {
    if (ms !== undefined && !(typeof ms === "number" && ms > 0)) {
      throw new Error(`the etcd ${name} must be a positive number of milliseconds, got ${ms}`);
    }
  }
}

function readPem(path: string, what: string): Buffer {
  try {
    return Buffer.from(Deno.readFileSync(path));
  } catch (error) {
    throw new Error(`cannot read the etcd ${what} "${path}": ${(error as Error).message}`);
  }
}

/** One client of etcd, and its bounded retries. */
export class Etcd {
  readonly client: Etcd3;
  readonly endpoints: string[];
  readonly clock: Clock;
  readonly callTimeoutMs: number;
  readonly unavailableMs: number;
  #waiting = 0;

  constructor(options: EtcdOptions, clock: Clock = new WallClock()) {
    checkOptions(options);
    this.endpoints = options.endpoints;
    this.clock = clock;
    this.callTimeoutMs = options.callTimeoutMs ?? 5000;
    this.unavailableMs = options.unavailableMs ?? 30_000;
    this.client = new Etcd3({
      hosts: options.endpoints,
      credentials: options.caFile
        ? {
          rootCertificate: readPem(options.caFile, "CA file"),
          certChain: options.certFile ? readPem(options.certFile, "certificate file") : undefined,
          privateKey: options.keyFile ? readPem(options.keyFile, "key file") : undefined,
        }
        : undefined,
      auth: options.user !== undefined ? { username: options.user, password: options.password! } : undefined,
      // Streams (watches, keep-alives) live on; every other call has a deadline, so a stopped etcd is
      // noticed instead of waited on forever.
      defaultCallOptions: (context) => context.isStream ? {} : { deadline: Date.now() + this.callTimeoutMs },
      dialTimeout: this.callTimeoutMs,
      faultHandling: { global: passThrough, host: () => passThrough, watchBackoff: watchBackoff() },
    });
  }

  /**
   * Runs `call`, trying again while it fails for a reason that can pass, for at most `unavailableMs`. A
   * call that etcd answered with an error (a failed comparison, a lease not found) is not tried again.
   */
  async call<T>(what: string, call: () => Promise<T>): Promise<T> {
    const start = this.clock.now();
    for (let pause = FIRST_PAUSE_MS;; pause = Math.min(pause * 2, LONGEST_PAUSE_MS)) {
      try {
        return await call();
      } catch (error) {
        if (!(error instanceof Error) || !isRecoverableError(error)) throw error;
        const waited = this.clock.now() - start;
        if (waited + pause > this.unavailableMs) throw new EtcdUnavailableError(this.endpoints, what, waited, error);
        this.#waiting++;
        await new Promise<void>((resolve) => this.clock.setTimer(pause, resolve)).finally(() => this.#waiting--);
      }
    }
  }

  /** Calls waiting now to try again, after a failure that can pass (etcd away, say). */
  get waiting(): number {
    return this.#waiting;
  }

  /** The deadline a stream call made now should carry, as gRPC wants it. */
  deadline(): { deadline: number } {
    return { deadline: Date.now() + this.callTimeoutMs };
  }

  close(): void {
    this.client.close();
  }
}

/** A cluster's name is a part of every key it has: letters, digits, `.`, `_` and `-`. */
export function clusterPrefix(cluster: string): string {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(cluster)) {
    throw new Error(`a cluster name is 1 to 64 letters, digits, ".", "_" or "-", got "${cluster}"`);
  }
  return `gemini/${cluster}/`;
}
