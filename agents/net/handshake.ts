// The handshake that opens every connection (docs/transport.md): mutual challenge and response over both
// sides' random nonces with HMAC-SHA-256 under the cluster's secret. The MAC binds the protocol version,
// which side computed it, the cluster's name, both ranks and both nonces, so a MAC is good for one
// connection, one direction and one pair of ranks only: it can be neither replayed nor reflected. The
// acceptor reads nothing but these small frames until the dialer has proved it knows the secret, and the
// dialer sends nothing else until the acceptor has proved it too.

import { FRAME, type FrameStream, ProtocolError } from "./frame.ts";

const VERSION = "gemini-lab transport 1";
const NONCE_BYTES = 32;
const HEX = /^[0-9a-f]+$/;

/** Who this side is: its rank in its cluster, and the key from the cluster's secret. */
export interface Credentials {
  cluster: string;
  rank: number;
  key: CryptoKey;
}

/** The HMAC-SHA-256 key of a cluster's secret (at least 16 bytes: a shorter one is too easy to guess). */
export function importSecret(secret: string | Uint8Array): Promise<CryptoKey> {
  const bytes = typeof secret === "string" ? new TextEncoder().encode(secret) : new Uint8Array(secret);
  if (bytes.length < 16) throw new Error(`the cluster's secret must be at least 16 bytes, got ${bytes.length}`);
  return crypto.subtle.importKey("raw", bytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

/** What a MAC covers: every field is JSON-quoted, so no two different inputs encode alike. */
function transcript(role: "dialer" | "acceptor", cluster: string, dialer: number, acceptor: number, nonces: string[]) {
  return new TextEncoder().encode(JSON.stringify([VERSION, role, cluster, dialer, acceptor, ...nonces]));
}

const toHex = (bytes: Uint8Array) => Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
const fromHex = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));

function nonce(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(NONCE_BYTES)));
}

function hexField(frame: Record<string, unknown>, name: string, bytes: number): string {
  const value = frame[name];
  if (typeof value !== "string" || value.length !== 2 * bytes || !HEX.test(value)) {
    throw new ProtocolError(`the handshake's ${name} is not ${bytes} bytes of hex`);
  }
  return value;
}

async function sign(key: CryptoKey, data: Uint8Array<ArrayBuffer>): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.sign("HMAC", key, data)));
}

/** Checks a MAC in constant time (WebCrypto's verify). */
function verify(key: CryptoKey, mac: string, data: Uint8Array<ArrayBuffer>): Promise<boolean> {
  return crypto.subtle.verify("HMAC", key, fromHex(mac), data);
}

/** Opens a connection to rank `to`: resolves once both sides have proved the secret. */
export async function dialHandshake(stream: FrameStream, self: Credentials, to: number) {
  const dialerNonce = nonce();
  await stream.writeJson(FRAME.hello, {
    version: VERSION,
    cluster: self.cluster,
    from: self.rank,
    to,
    nonce: dialerNonce,
  });
  const challenge = await stream.expectJson(FRAME.challenge);
  const acceptorNonce = hexField(challenge, "nonce", NONCE_BYTES), mac = hexField(challenge, "mac", 32);
  const nonces = [dialerNonce, acceptorNonce];
  if (!await verify(self.key, mac, transcript("acceptor", self.cluster, self.rank, to, nonces))) {
    throw new ProtocolError(`rank ${to} did not prove that it knows the cluster's secret`);
  }
  await stream.writeJson(FRAME.proof, {
    mac: await sign(self.key, transcript("dialer", self.cluster, self.rank, to, nonces)),
  });
  await stream.expectJson(FRAME.welcome);
}

/** Answers a connection: the dialer's rank, once both sides have proved the secret. */
export async function acceptHandshake(stream: FrameStream, self: Credentials): Promise<number> {
  const hello = await stream.expectJson(FRAME.hello);
  if (hello.version !== VERSION) throw new ProtocolError(`unknown protocol version ${JSON.stringify(hello.version)}`);
  if (hello.cluster !== self.cluster) {
    throw new ProtocolError(`the dialer is of cluster ${JSON.stringify(hello.cluster)}, not ${self.cluster}`);
  }
  if (hello.to !== self.rank) throw new ProtocolError(`the dialer wants rank ${JSON.stringify(hello.to)}`);
  const from = hello.from;
  if (!Number.isSafeInteger(from) || (from as number) < 0) {
    throw new ProtocolError(`the dialer's rank ${JSON.stringify(from)} is not a rank`);
  }
  const dialer = from as number, nonces = [hexField(hello, "nonce", NONCE_BYTES), nonce()];
  const mac = await sign(self.key, transcript("acceptor", self.cluster, dialer, self.rank, nonces));
  await stream.writeJson(FRAME.challenge, { nonce: nonces[1], mac });
  const proof = await stream.expectJson(FRAME.proof);
  if (
    !await verify(self.key, hexField(proof, "mac", 32), transcript("dialer", self.cluster, dialer, self.rank, nonces))
  ) {
    throw new ProtocolError(`rank ${dialer} did not prove that it knows the cluster's secret`);
  }
  await stream.writeJson(FRAME.welcome, {});
  return dialer;
}
