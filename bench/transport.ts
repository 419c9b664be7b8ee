// The TCP transport's throughput beside the limit it runs on, in the same run: raw loopback TCP between two
// Deno endpoints with 1 MiB writes, then the transport (handshake done, framing, chunks, the copy a send
// makes, a fresh buffer per message on arrival) for large transfers, and the transport paced, which should
// come out near the pace asked (a little over: the last chunk arrives as it starts, not as its time ends).
// MB/s are 10^6 bytes per second.

import { TcpTransport } from "../agents/net/tcp-transport.ts";

export interface TransportRow {
  name: string;
  "MB/s": number;
}

const MiB = 1024 * 1024;
const LOCALHOST = "127.0.0.1";

/** Seconds `work` takes, the best of `repeats` runs after one to warm up. */
async function best(repeats: number, work: () => Promise<void>): Promise<number> {
  await work();
  let fastest = Infinity;
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    await work();
    fastest = Math.min(fastest, (performance.now() - start) / 1000);
  }
  return fastest;
}

/** Raw TCP on loopback: `bytes` written 1 MiB at a time, read into a 1 MiB buffer. */
async function rawTcp(bytes: number, repeats: number): Promise<number> {
  const listener = Deno.listen({ hostname: LOCALHOST, port: 0 });
  const accepted = listener.accept();
  const client = await Deno.connect({ hostname: LOCALHOST, port: listener.addr.port });
  const server = await accepted;
  const block = new Uint8Array(MiB).fill(1), sink = new Uint8Array(MiB);
  try {
    return await best(repeats, async () => {
      const writing = (async () => {
        for (let sent = 0; sent < bytes; sent += block.length) {
          for (let done = 0; done < block.length;) done += await client.write(block.subarray(done));
        }
      })();
      for (let received = 0; received < bytes;) {
        const got = await server.read(sink);
        if (got === null) throw new Error("the raw connection ended early");
        received += got;
      }
      await writing;
    });
  } finally {
    client.close();
    server.close();
    listener.close();
  }
}

/** The transport: `count` messages of `size` bytes from rank 0 to rank 1, until the last has arrived. */
async function transport(size: number, count: number, repeats: number, bandwidth?: number): Promise<number> {
  const options = { cluster: "bench", secret: "the bench cluster's secret", bandwidth };
  const [a, b] = await Promise.all([0, 1].map((rank) => TcpTransport.start({ rank, ...options })));
  const message = new Uint8Array(size).fill(1);
  try {
    await a.connect(1, b.address);
    return await best(repeats, async () => {
      for (let i = 0; i < count; i++) a.send(1, "checkpoint", "replica", "bench", message);
      for (let i = 0; i < count; i++) await b.receive(0, "bench");
    });
  } finally {
    a.close();
    b.close();
    await Promise.all([a.closed(), b.closed()]);
  }
}

/**
 * Raw loopback TCP; the transport unpaced, for a shard sent as 1 MiB messages (as a recovery's fetch sends
 * it) and as 64 MiB messages (each one buffer at both ends); and the transport paced at 200 MB/s.
 */
export async function measureTransport(options: { quick?: boolean } = {}): Promise<TransportRow[]> {
  const repeats = options.quick ? 1 : 3, total = (options.quick ? 64 : 256) * MiB;
  const rate = (bytes: number, seconds: number) => Math.round(bytes / seconds / 1e6);
  const paced = 200e6, pacedBytes = (options.quick ? 8 : 32) * MiB;
  const rows: TransportRow[] = [{
    name: "raw loopback TCP, 1 MiB writes",
    "MB/s": rate(total, await rawTcp(total, repeats)),
  }];
  for (const size of [MiB, 64 * MiB]) {
    rows.push({
      name: `TcpTransport, ${total / MiB} MiB as ${total / size} messages of ${size / MiB} MiB`,
      "MB/s": rate(total, await transport(size, total / size, repeats)),
    });
  }
  rows.push({
    name: `TcpTransport paced at ${paced / 1e6} MB/s, one message of ${pacedBytes / MiB} MiB`,
    "MB/s": rate(pacedBytes, await transport(pacedBytes, 1, 1, paced)),
  });
  return rows;
}
