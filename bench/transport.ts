// The TCP transport's throughput beside the limit it runs on, in the same run: raw loopback TCP between two
// Deno endpoints with 1 MiB writes, then the transport (handshake done, framing, chunks, the copy a send
// makes, a fresh buffer per message on arrival) for large transfers, and the transport paced, which should
// come out near the pace asked (a little over: the last chunk arrives as it starts, not as its time ends).
// Each receiving end runs in a Worker (transport-receiver.ts), as a peer runs on a core of its own. The
// cases take turns, each keeping its best time, so that a computer whose load changes during the run slows
// them alike. MB/s are 10^6 bytes per second.

import * as Comlink from "comlink";
import { TcpTransport } from "../agents/net/tcp-transport.ts";
import type { BenchContext, Section } from "./measure.ts";
import type { ReceiverApi } from "./transport-receiver.ts";

export interface TransportRow {
  name: string;
  "MB/s": number;
}

/** One thing measured: `run` moves `bytes` once. */
interface Case {
  name: string;
  bytes: number;
  run(): Promise<void>;
  close(): Promise<void>;
}

const MiB = 1024 * 1024;
const LOCALHOST = "127.0.0.1";
const CLUSTER = "bench", SECRET = "the bench cluster's secret";

function receiver(name: string) {
  const worker = new Worker(new URL("./transport-receiver.ts", import.meta.url), { type: "module", name });
  return { worker, api: Comlink.wrap<ReceiverApi>(worker) };
}

/** Raw TCP on loopback: `bytes` written 1 MiB at a time, read into a 1 MiB buffer. */
async function rawTcp(bytes: number): Promise<Case> {
  const { worker, api } = receiver("raw TCP receiver");
  const client = await Deno.connect({ hostname: LOCALHOST, port: await api.listenRaw() });
  const block = new Uint8Array(MiB).fill(1);
  return {
    name: "raw loopback TCP, 1 MiB writes",
    bytes,
    async run() {
      const received = api.take(bytes);
      for (let sent = 0; sent < bytes; sent += block.length) {
        for (let done = 0; done < block.length;) done += await client.write(block.subarray(done));
      }
      await received;
    },
    async close() {
      client.close();
      await api.close();
      worker.terminate();
    },
  };
}

/** The transport: `count` messages of `size` bytes from rank 0 to rank 1, until the last has arrived. */
async function transport(name: string, size: number, count: number, bandwidth?: number): Promise<Case> {
  const { worker, api } = receiver("transport receiver");
  const port = await api.listenTransport(CLUSTER, SECRET);
  const sender = await TcpTransport.start({ rank: 0, cluster: CLUSTER, secret: SECRET, bandwidth });
  await sender.connect(1, { hostname: LOCALHOST, port });
  const message = new Uint8Array(size).fill(1);
  return {
    name,
    bytes: size * count,
    async run() {
      const received = api.take(count);
      for (let i = 0; i < count; i++) sender.send(1, "checkpoint", "replica", "bench", message);
      await received;
    },
    async close() {
      sender.close();
      await Promise.all([sender.closed(), api.close()]);
      worker.terminate();
    },
  };
}

/**
 * Raw loopback TCP; the transport unpaced, for a shard sent as 1 MiB messages (as a recovery's fetch sends
 * it) and as 64 MiB messages (each one buffer at both ends); and the transport paced at 200 MB/s.
 */
export async function measureTransport(options: { quick?: boolean } = {}): Promise<TransportRow[]> {
  const repeats = options.quick ? 1 : 3, total = (options.quick ? 64 : 256) * MiB;
  const paced = 200e6, pacedBytes = (options.quick ? 8 : 32) * MiB;
  const cases = [await rawTcp(total)];
  for (const size of [MiB, 64 * MiB]) {
    const count = total / size, messages = count === 1 ? "one message" : `${count} messages`;
    const name = `TcpTransport, ${total / MiB} MiB as ${messages} of ${size / MiB} MiB`;
    cases.push(await transport(name, size, count));
  }
  const name = `TcpTransport paced at ${paced / 1e6} MB/s, one message of ${pacedBytes / MiB} MiB`;
  cases.push(await transport(name, pacedBytes, 1, paced));
  const fastest = cases.map(() => Infinity);
  try {
    for (const item of cases) await item.run(); // warm up
    for (let repeat = 0; repeat < repeats; repeat++) {
      for (const [i, item] of cases.entries()) {
        const start = performance.now();
        await item.run();
        fastest[i] = Math.min(fastest[i], (performance.now() - start) / 1000);
      }
    }
  } finally {
    for (const item of cases) await item.close();
  }
  return cases.map((item, i) => ({ name: item.name, "MB/s": Math.round(item.bytes / fastest[i] / 1e6) }));
}

/** The bench's transport section: each case beside raw loopback TCP measured in the same run. */
export const transportSection: Section = {
  name: "transport",
  steps: () => 1,
  async run({ quick, progress }: BenchContext) {
    const rows = await measureTransport({ quick });
    progress.step("transport");
    const raw = rows[0]["MB/s"], best = Math.max(...rows.slice(1, 3).map((row) => row["MB/s"]));
    return {
      title: "Transport between processes: TCP, framed and authenticated",
      summary: `best unpaced transfer ${best} MB/s, ${(best / raw).toFixed(2)} of raw loopback TCP (${raw} MB/s)`,
      intro: "Loopback on this host: raw TCP between two Deno endpoints with 1 MiB writes, then the TcpTransport " +
        "(agents/net/) after its handshake, each receiver in a Worker of its own, the best of the repeats. The " +
        "target is at least half the raw rate. Paced, it should come out near the pace asked.",
      header: ["case", "MB/s", "of raw TCP"],
      rows: rows.map((row) => [row.name, String(row["MB/s"]), (row["MB/s"] / raw).toFixed(2)]),
      raw: rows,
    };
  },
};
