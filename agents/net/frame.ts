// The TCP transport's wire format (docs/transport.md): every frame is a 5-byte header, its type (u8) and its
// payload's length (u32, little-endian), then the payload. Control frames (the handshake and each message's
// header) carry JSON; data frames carry a message's bytes, a chunk at a time, so no frame needs a buffer of
// its own: a data frame is read straight into the message it belongs to. Every length is checked against a
// limit before anything is read or allocated.

/** The frame types, by their byte on the wire. */
export const FRAME = { hello: 1, challenge: 2, proof: 3, welcome: 4, message: 5, data: 6 } as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

const NAMES = new Map<number, string>(Object.entries(FRAME).map(([name, type]) => [type, name]));

export const HEADER_BYTES = 5;
/** A handshake frame is a few short fields: anything larger is not a peer of ours. */
export const HANDSHAKE_FRAME_BYTES = 1024;

/** How large a frame and a message may be, as a receiver enforces it. */
export interface FrameLimits {
  /** A message's header (its kind, label, tag, epoch, size and info, as JSON). */
  controlBytes: number;
  /** One data frame (one chunk of a message). */
  dataFrameBytes: number;
  /** One whole message. */
  messageBytes: number;
}

export const DEFAULT_LIMITS: FrameLimits = {
  controlBytes: 64 * 1024,
  dataFrameBytes: 16 * 1024 * 1024,
  messageBytes: 2 ** 31,
};

/** The peer broke the wire format (a malformed, oversized or unexpected frame): its connection is closed. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

/** The connection ended where a frame was still due. */
export class ConnectionLost extends Error {
  override name = "ConnectionLost";
}

export function frameName(type: number): string {
  return NAMES.get(type) ?? `unknown (${type})`;
}

/** A connection read and written as frames. */
export class FrameStream {
  readonly conn: Deno.Conn;
  readonly #header = new Uint8Array(HEADER_BYTES);
  #scratch: Uint8Array | undefined;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /**
   * The next frame's type and length, checked against `limitOf(type)` (a type the caller does not expect
   * has no limit: a ProtocolError). Null when the connection ends cleanly between frames.
   */
  async readHeader(limitOf: (type: number) => number | undefined): Promise<{ type: number; length: number } | null> {
    const got = await this.#fill(this.#header);
    if (got === 0) return null;
    if (got < HEADER_BYTES) throw new ConnectionLost(`the connection ended inside a frame header`);
    const view = new DataView(this.#header.buffer);
    const type = view.getUint8(0), length = view.getUint32(1, true);
    const limit = limitOf(type);
    if (limit === undefined) throw new ProtocolError(`unexpected ${frameName(type)} frame`);
    if (length > limit) {
      throw new ProtocolError(`oversized ${frameName(type)} frame of ${length} bytes (the limit is ${limit})`);
    }
    return { type, length };
  }

  /** Reads exactly `into.length` bytes of the current frame. */
  async readInto(into: Uint8Array) {
    if (await this.#fill(into) < into.length) throw new ConnectionLost(`the connection ended inside a frame`);
  }

  /** Reads and discards `length` bytes of the current frame (a message nobody will take). */
  async skip(length: number) {
    this.#scratch ??= new Uint8Array(64 * 1024);
    for (let left = length; left > 0; left -= Math.min(left, this.#scratch.length)) {
      await this.readInto(this.#scratch.subarray(0, Math.min(left, this.#scratch.length)));
    }
  }

  /** Reads a control frame's JSON payload: an object, or a ProtocolError. */
  async readJson(length: number): Promise<Record<string, unknown>> {
    const payload = new Uint8Array(length);
    await this.readInto(payload);
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
    } catch {
      throw new ProtocolError(`a control frame is not JSON`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new ProtocolError(`a control frame is not a JSON object`);
    }
    return value as Record<string, unknown>;
  }

  /** Reads the next frame, which must be `type`, as JSON (the handshake's frames). */
  async expectJson(type: FrameType): Promise<Record<string, unknown>> {
    const header = await this.readHeader((seen) => seen === type ? HANDSHAKE_FRAME_BYTES : undefined);
    if (!header) throw new ConnectionLost(`the connection ended before a ${frameName(type)} frame`);
    return this.readJson(header.length);
  }

  /** Writes a frame: its header, then its payload as it is (no copy). */
  async write(type: FrameType, payload: Uint8Array) {
    const header = new Uint8Array(HEADER_BYTES);
    const view = new DataView(header.buffer);
    view.setUint8(0, type);
    view.setUint32(1, payload.length, true);
    await this.#writeAll(header);
    await this.#writeAll(payload);
  }

  writeJson(type: FrameType, value: unknown): Promise<void> {
    return this.write(type, new TextEncoder().encode(JSON.stringify(value)));
  }

  async #writeAll(bytes: Uint8Array) {
    for (let done = 0; done < bytes.length;) done += await this.conn.write(bytes.subarray(done));
  }

  /** Reads until `into` is full or the connection ends: how many bytes it got. */
  async #fill(into: Uint8Array): Promise<number> {
    let done = 0;
    while (done < into.length) {
      const got = await this.conn.read(into.subarray(done));
      if (got === null) break;
      done += got;
    }
    return done;
  }
}
