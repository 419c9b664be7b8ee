// One run of the simulated cluster from start to shutdown, as the demo, the bench and the tests make it:
// a persistent store in a temporary directory (removed afterwards), the cluster's settings adjusted from
// the defaults, a story of iterations and failures told to the root agent and the cluster, and everything
// reported collected on the way (the root's reports, with what the cluster saw of each failure).

import { SimulatedCluster } from "./cluster.ts";
import type { TransferRecord } from "./network.ts";
import { FailureObserver, type ObservedEvent, type ObservedRecovery } from "./observer.ts";
import { type IterationReport, RootAgent } from "../root-agent.ts";
import { type ClusterSettings, defaultClusterSettings } from "../protocol/spec.ts";
import type { HealthStore } from "../protocol/health.ts";

export interface RunOptions {
  /** Changes to the default settings (the persistent store's directory is set already). */
  adjust?: (settings: ClusterSettings) => void;
  /** Bytes/s of the persistent store (the default cluster's 20 MB/s when absent). */
  storageBandwidth?: number;
  heartbeatTimeoutMs: number;
  /** Where the machines' leases live (the root's own in-memory store when absent). */
  health?: HealthStore;
  /** Also hears every event as it happens. */
  onEvent?: (event: ObservedEvent) => void;
  /** Read every machine's state at the end (for a bit-exact comparison). */
  keepState?: boolean;
}

export interface ClusterRun {
  settings: ClusterSettings;
  /** By iteration number (the last report of an iteration done again after a recovery). */
  iterations: IterationReport[];
  recoveries: ObservedRecovery[];
  /** Every message the network carried. */
  timeline: TransferRecord[];
  state?: Awaited<ReturnType<RootAgent["state"]>>;
}

/** What a story drives: the root agent, and the cluster it injects failures into. */
export interface RunContext {
  root: RootAgent;
  cluster: SimulatedCluster;
}

export async function runCluster(
  options: RunOptions,
  story: (run: RunContext) => Promise<unknown>,
): Promise<ClusterRun> {
  const directory = await Deno.makeTempDir({ prefix: "gemini-run-" });
  try {
    const settings = defaultClusterSettings({ kind: "files", directory, bandwidth: options.storageBandwidth ?? 20e6 });
    options.adjust?.(settings);
    const cluster = new SimulatedCluster(settings);
    const root = await RootAgent.start(cluster, {
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      health: options.health,
    });
    const observer = new FailureObserver(cluster);
    const iterations: IterationReport[] = [], recoveries: ObservedRecovery[] = [];
    try {
      root.onEvent((rootEvent) => {
        const event = observer.event(rootEvent);
        if (event.type === "iteration") iterations[event.iteration] = event;
        if (event.type === "recovery") recoveries.push(event);
        options.onEvent?.(event);
      });
      await story({ root, cluster });
      const state = options.keepState ? await root.state() : undefined;
      return { settings, iterations, recoveries, timeline: cluster.network.timeline, state };
    } finally {
      await root.close();
    }
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
}
