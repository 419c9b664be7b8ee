// The connection to etcd, through its v3 JSON gateway over `fetch` (see docs/etcd.md for why not gRPC), and
// how every call waits out an etcd that is briefly away: a call that fails for a reason that can pass (etcd
// restarting, a lost connection, a deadline) is tried again, with a growing pause on the injected clock,
// until `unavailableMs` have passed; then it fails with one `EtcdUnavailableError`.
//
// Keys and values are UTF-8 strings here (base64 on the wire); lease ids are etcd's decimal 64-bit ids.

import { Buffer } from "node:buffer";
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

/** etcd answered, with an error (gRPC's status `code`, and etcd's message). */
export class EtcdError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
    this.name = "EtcdError";
  }
}

/** No answer: the connection failed or broke, or the call's deadline passed. */
export class EtcdConnectionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EtcdConnectionError";
  }
}

/** gRPC's codes for a call that may pass if tried again: cancelled, deadline exceeded, unavailable. */
const PASSING_CODES = new Set([1, 4, 14]);
/** etcd's own errors of a moment: an election in etcd's raft, or an overloaded member. */
const PASSING_MESSAGES = /etcdserver: (request timed out|leader changed|no leader|too many requests)/;

/** Whether a failed call may succeed if tried again. */
export function isPassing(error: unknown): boolean {
  if (error instanceof EtcdConnectionError) return true;
  return error instanceof EtcdError && (PASSING_CODES.has(error.code) || PASSING_MESSAGES.test(error.message));
}

/** A lease etcd no longer has: expired, or revoked. */
export function isLeaseGone(error: unknown): boolean {
  return error instanceof EtcdError && /requested lease not found/.test(error.message);
}

export interface KeyValue {
  key: string;
  value: string;
  /** The revision that created the key, and the one that last changed it (decimal). */
  createRevision: string;
  modRevision: string;
  /** The lease the key is bound to, if any (decimal). */
  lease?: string;
}

export interface WatchEvent {
  type: "put" | "delete";
  kv: KeyValue;
}

/** A comparison in a transaction: the key's value, or its create revision (0: the key does not exist). */
export type Compare =
  | { key: string; value: string }
  | { key: string; createRevision: number };

/** An operation in a transaction's branch. */
export type Operation =
  | { put: string; value: string; lease?: string }
  | { delete: string }
  | { get: string };

export interface TxnResult {
  succeeded: boolean;
  /** For each operation of the branch taken: the keys a `get` found (empty for the others). */
  found: KeyValue[][];
}

/** A running watch. */
export interface EtcdWatch {
  /** Resolves once etcd has confirmed the watch: events from then on are seen. */
  readonly started: Promise<void>;
  cancel(): void;
}

/** The key of an elected candidate, as etcd's election service names it. */
export interface LeaderKey {
  name: string;
  key: string;
  rev: string;
  lease: string;
}

const FIRST_PAUSE_MS = 50, LONGEST_PAUSE_MS = 1000;

const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");
const decode = (base64: string | undefined) => Buffer.from(base64 ?? "", "base64").toString("utf8");

/** The end of the range of keys that start with `prefix` (etcd's `range_end`). */
function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, "utf8");
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] === 0xff) continue;
    const end = Buffer.from(bytes.subarray(0, i + 1));
    end[i]++;
    return end.toString("base64");
  }
  return encode("\0"); // every key from `prefix` on
}

/** The range for a key, or for every key under a prefix. */
function range(key: string, prefix = false) {
  return prefix ? { key: encode(key), range_end: prefixEnd(key) } : { key: encode(key) };
}

// deno-lint-ignore no-explicit-any
type Json = any;

function keyValue(kv: Json): KeyValue {
  return {
    key: decode(kv.key),
    value: decode(kv.value),
    createRevision: kv.create_revision ?? "0",
    modRevision: kv.mod_revision ?? "0",
    ...(kv.lease ? { lease: kv.lease } : {}),
  };
}

/** The gateway's JSON error (`{"code", "message"}`, or `{"error": {...}}` in a stream). */
function errorOf(json: Json, status: number): EtcdError {
  const error = json?.error && typeof json.error === "object" ? json.error : json;
  const code = Number(error?.code ?? error?.grpc_code ?? NaN);
  const message = String(error?.message ?? error?.error ?? `HTTP ${status}`);
  return new EtcdError(Number.isInteger(code) ? code : codeOfStatus(status), message);
}

/**
 * gRPC's code for an HTTP error without one: the gateway answers 503 when nothing behind it answered, which
 * passes like a lost connection (unavailable); anything else is unknown.
 */
function codeOfStatus(status: number): number {
  return status === 503 ? 14 : 2;
}

function checkOptions(options: EtcdOptions): void {
  if (options.endpoints.length === 0) throw new Error("etcd needs at least one endpoint");
  for (const endpoint of options.endpoints) {
    if (!URL.canParse(endpoint) || !["http:", "https:"].includes(new URL(endpoint).protocol)) {
      throw new Error(`etcd endpoint "${endpoint}" should be http://host:port or https://host:port`);
    }
  }
  if (new Set(options.endpoints.map((endpoint) => new URL(endpoint).protocol)).size > 1) {
    throw new Error("etcd endpoints are all http:// or all https://");
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

function readPem(path: string, what: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    throw new Error(`cannot read the etcd ${what} "${path}": ${(error as Error).message}`);
  }
}

/** One client of etcd, and its bounded retries. */
export class Etcd {
  readonly endpoints: string[];
  readonly clock: Clock;
  readonly callTimeoutMs: number;
  readonly unavailableMs: number;
  readonly #http: Deno.HttpClient;
  readonly #user?: { name: string; password: string };
  /** Aborts every request under way, streams included, when the client is closed. */
  readonly #closing = new AbortController();
  /** The auth token, once fetched (etcd's users on). */
  #token: Promise<string> | null = null;
  /** Endpoints are tried in turn: the next call after a connection failure goes to the next one. */
  #endpoint = 0;
  #waiting = 0;

  constructor(options: EtcdOptions, clock: Clock = new WallClock()) {
    checkOptions(options);
    this.endpoints = options.endpoints;
    this.clock = clock;
    this.callTimeoutMs = options.callTimeoutMs ?? 5000;
    this.unavailableMs = options.unavailableMs ?? 30_000;
    if (options.user !== undefined) this.#user = { name: options.user, password: options.password! };
    const ca = options.caFile ? [readPem(options.caFile, "CA file")] : undefined;
    const identity = options.certFile
      ? { cert: readPem(options.certFile, "certificate file"), key: readPem(options.keyFile!, "key file") }
      : {};
    try {
      this.#http = Deno.createHttpClient({ caCerts: ca, ...identity });
    } catch (error) {
      throw new Error(`etcd's TLS files could not be used: ${(error as Error).message}`);
    }
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
        if (!isPassing(error) || this.#closing.signal.aborted) throw error;
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

  /**
   * One POST to the gateway, answered with one JSON object. With no `signal` the call has a deadline of
   * `callTimeoutMs`; a long call (a campaign) passes its own signal instead.
   */
  async request(path: string, body: object, signal?: AbortSignal): Promise<Json> {
    signal ??= AbortSignal.timeout(this.callTimeoutMs);
    const response = await this.#post(path, body, signal);
    const text = await response.text().catch((error) => {
      throw this.#connectionError(error, path, signal);
    });
    let json: Json;
    try {
      json = JSON.parse(text.split("\n")[0]); // a stream's first message (a keep-alive's answer)
    } catch {
      const what = response.ok ? "with something that is not JSON" : `HTTP ${response.status}`;
      throw new EtcdError(
        codeOfStatus(response.status),
        `etcd's gateway answered ${path} ${what}: ${text.trim().slice(0, 200)}`,
      );
    }
    if (!response.ok || json?.error) throw errorOf(json, response.status);
    return json.result ?? json;
  }

  // --- keys ---

  async get(key: string, { prefix = false } = {}): Promise<KeyValue[]> {
    const { kvs } = await this.request("/v3/kv/range", range(key, prefix));
    return (kvs ?? []).map(keyValue);
  }

  async put(key: string, value: string, lease?: string): Promise<void> {
    await this.request("/v3/kv/put", { key: encode(key), value: encode(value), ...(lease ? { lease } : {}) });
  }

  async delete(key: string, { prefix = false } = {}): Promise<void> {
    await this.request("/v3/kv/deleterange", range(key, prefix));
  }

  /** If every comparison holds, runs `success`, else `failure`: one atomic step in etcd. */
  async txn(compare: Compare[], success: Operation[], failure: Operation[] = []): Promise<TxnResult> {
    const request = (operation: Operation) =>
      "put" in operation
        ? {
          request_put: {
            key: encode(operation.put),
            value: encode(operation.value),
            ...(operation.lease ? { lease: operation.lease } : {}),
          },
        }
        : "delete" in operation
        ? { request_delete_range: { key: encode(operation.delete) } }
        : { request_range: { key: encode(operation.get) } };
    const json = await this.request("/v3/kv/txn", {
      compare: compare.map((c) =>
        "value" in c
          ? { key: encode(c.key), result: "EQUAL", target: "VALUE", value: encode(c.value) }
          : { key: encode(c.key), result: "EQUAL", target: "CREATE", create_revision: String(c.createRevision) }
      ),
      success: success.map(request),
      failure: failure.map(request),
    });
    return {
      succeeded: json.succeeded === true,
      found: (json.responses ?? []).map((r: Json) => (r.response_range?.kvs ?? []).map(keyValue)),
    };
  }

  // --- leases ---

  /** Grants a lease of `ttlSeconds`, numbered `id` if given; returns its id and the time to live etcd gave. */
  async leaseGrant(ttlSeconds: number, id?: string): Promise<{ id: string; ttlSeconds: number }> {
    const json = await this.request("/v3/lease/grant", { TTL: ttlSeconds, ...(id ? { ID: id } : {}) });
    return { id: json.ID, ttlSeconds: Number(json.TTL) };
  }

  /** One keep-alive: the lease's time to live from now, in seconds; 0 for a lease that has ended. */
  async leaseKeepAlive(id: string): Promise<number> {
    return Number((await this.request("/v3/lease/keepalive", { ID: id })).TTL ?? 0);
  }

  async leaseRevoke(id: string): Promise<void> {
    await this.request("/v3/lease/revoke", { ID: id });
  }

  // --- watches ---

  /**
   * Watches every key under `prefix`. After a broken stream (etcd restarted, say) the watch starts again
   * from the revision after the last event it delivered, so that nothing in between is missed: a key whose
   * lease expired meanwhile is still seen deleted.
   */
  watch(prefix: string, listener: (event: WatchEvent) => void, log: (line: string) => void): EtcdWatch {
    const stop = new AbortController();
    this.#closing.signal.addEventListener("abort", () => stop.abort(), { once: true, signal: stop.signal });
    let confirmed!: () => void;
    const started = new Promise<void>((resolve) => confirmed = resolve);
    let next: bigint | null = null; // the revision to resume from
    let connected = false; // said once when the watch is lost, not at every try while etcd is away
    const run = async () => {
      for (let pause = FIRST_PAUSE_MS; !stop.signal.aborted; pause = Math.min(pause * 2, LONGEST_PAUSE_MS)) {
        try {
          const create = { ...range(prefix, true), ...(next !== null ? { start_revision: String(next) } : {}) };
          const response = await this.#post("/v3/watch", { create_request: create }, stop.signal);
          for await (const json of jsonLines(response.body!)) {
            if (json.error) throw errorOf(json, response.status);
            const result = json.result ?? {};
            if (result.canceled) {
              // etcd ended the watch but not the stream: from a compacted revision (resumed from now on, the
              // changes in between lost), or refused (a token etcd forgot when it restarted: fetched again).
              if (result.compact_revision && result.compact_revision !== "0") {
                log(
                  `etcd watch on ${prefix}: revisions to ${result.compact_revision} were compacted; changes are lost`,
                );
                next = null;
              }
              this.#token = null;
              throw new EtcdConnectionError(`etcd cancelled the watch: ${result.cancel_reason ?? "no reason given"}`);
            }
            if (result.created) {
              pause = FIRST_PAUSE_MS;
              connected = true;
              // A new watch sees changes after the revision etcd is at; a resumed one, after the last it saw.
              next ??= BigInt(result.header?.revision ?? "0") + 1n;
              confirmed();
            }
            for (const event of result.events ?? []) {
              next = BigInt(event.kv.mod_revision) + 1n;
              listener({ type: event.type === "DELETE" ? "delete" : "put", kv: keyValue(event.kv) });
            }
          }
          throw new EtcdConnectionError("the watch's stream ended");
        } catch (error) {
          if (stop.signal.aborted) return;
          if (connected) log(`etcd watch on ${prefix} lost (${(error as Error).message}); it starts again`);
          connected = false;
          await new Promise<void>((resolve) => this.clock.setTimer(pause, resolve));
        }
      }
    };
    run();
    return { started, cancel: () => stop.abort() };
  }

  // --- elections (etcd's election service) ---

  /** Campaigns in election `name` with `lease` and `value`; resolves once elected (no deadline: use `signal`). */
  async campaign(name: string, lease: string, value: string, signal: AbortSignal): Promise<LeaderKey> {
    const { leader } = await this.request(
      "/v3/election/campaign",
      { name: encode(name), lease, value: encode(value) },
      signal,
    );
    return leader;
  }

  /** The leader's value in election `name`, if there is a leader. */
  async leader(name: string): Promise<string | undefined> {
    try {
      return decode((await this.request("/v3/election/leader", { name: encode(name) })).kv?.value);
    } catch (error) {
      if (error instanceof EtcdError && /election: no leader/.test(error.message)) return undefined;
      throw error;
    }
  }

  async resign(leader: LeaderKey): Promise<void> {
    await this.request("/v3/election/resign", { leader });
  }

  /** Ends every request under way (watches, campaigns) and closes the connections. */
  close(): void {
    this.#closing.abort(new Error("the etcd client was closed"));
    this.#http.close();
  }

  /** A POST with the auth token (fetched first when etcd's users are on); any answer, error or not, is returned. */
  async #post(path: string, body: object, signal: AbortSignal, retried = false): Promise<Response> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.#user && path !== "/v3/auth/authenticate") headers.authorization = await this.#authToken();
    const endpoint = this.endpoints[this.#endpoint % this.endpoints.length];
    let response: Response;
    try {
      const init: RequestInit & { client: Deno.HttpClient } = {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        client: this.#http,
        signal: AbortSignal.any([signal, this.#closing.signal]),
      };
      response = await fetch(`${endpoint}${path}`, init);
    } catch (error) {
      this.#endpoint++;
      throw this.#connectionError(error, path, signal);
    }
    // A token that etcd no longer knows (it restarted, or the token's time ran out): fetched again, once.
    if (this.#user && !retried && response.status === 401) {
      await response.body?.cancel();
      this.#token = null;
      return this.#post(path, body, signal, true);
    }
    return response;
  }

  #authToken(): Promise<string> {
    this.#token ??= this.request(
      "/v3/auth/authenticate",
      { name: this.#user!.name, password: this.#user!.password },
    ).then((json) => json.token as string, (error) => {
      this.#token = null;
      throw error;
    });
    return this.#token;
  }

  /** What a request that got no answer fails with: the reason it was aborted for, or a connection error. */
  #connectionError(error: unknown, path: string, signal: AbortSignal): Error {
    if (this.#closing.signal.aborted) return this.#closing.signal.reason;
    const timedOut = signal.reason instanceof DOMException && signal.reason.name === "TimeoutError";
    if (signal.aborted && !timedOut) return signal.reason; // the caller's own abort: not a failure to retry
    const message = timedOut ? `no answer within ${this.callTimeoutMs} ms` : (error as Error)?.message ?? String(error);
    return new EtcdConnectionError(`${path}: ${message}`, { cause: error });
  }
}

/** The JSON messages of a gateway stream, one per line. */
async function* jsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<Json> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const bytes of body) {
    buffered += decoder.decode(bytes, { stream: true });
    for (let end = buffered.indexOf("\n"); end >= 0; end = buffered.indexOf("\n")) {
      const line = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
      if (line) yield JSON.parse(line);
    }
  }
}

/** A cluster's name is a part of every key it has: letters, digits, `.`, `_` and `-`. */
export function clusterPrefix(cluster: string): string {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(cluster)) {
    throw new Error(`a cluster name is 1 to 64 letters, digits, ".", "_" or "-", got "${cluster}"`);
  }
  return `gemini/${cluster}/`;
}
