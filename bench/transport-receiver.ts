// The receiving end of bench/transport.ts, in a Worker of its own: a peer is another process, on another
// core, so the sender's work (the copy a send makes, the writes) and the receiver's (reads, a fresh buffer
// per message) overlap as they would between machines. Raw TCP or the transport, as the bench asks.

import * as Comlink from "comlink";
import { TcpTransport } from "../agents/net/tcp-transport.ts";

let taken: (amount: number) => Promise<void>;
let closing: () => Promise<void>;

const api = {
  /** Listens for raw TCP, read into a 1 MiB buffer: the port. */
  listenRaw(): number {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = listener.accept(), sink = new Uint8Array(1024 * 1024);
    taken = async (bytes) => {
      const conn = await accepted;
      for (let received = 0; received < bytes;) {
        const got = await conn.read(sink);
        if (got === null) throw new Error("the raw connection ended early");
        received += got;
      }
    };
    closing = async () => {
      (await accepted).close();
      listener.close();
    };
    return listener.addr.port;
  },

  /** Starts rank 1 of the bench's cluster: its port. */
  async listenTransport(cluster: string, secret: string): Promise<number> {
    const transport = await TcpTransport.start({ rank: 1, cluster, secret });
    taken = async (messages) => {
      for (let i = 0; i < messages; i++) await transport.receive(0, "bench");
    };
    closing = () => (transport.close(), transport.closed());
    return transport.address.port;
  },

  /** Takes `amount` (bytes of raw TCP, or messages) as they arrive. */
  take(amount: number): Promise<void> {
    return taken(amount);
  },

  close(): Promise<void> {
    return closing();
  },
};

export type ReceiverApi = typeof api;

Comlink.expose(api);
