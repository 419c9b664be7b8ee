// What the process commands (machine, root, cluster) share: the cluster's name and secret, etcd's options
// from flags (TLS and users included), the job's settings for a cluster of processes, and a bit-for-bit
// comparison of two training states.

import { type ClusterSettings, defaultClusterSettings } from "../protocol/spec.ts";
import { Etcd, type EtcdOptions } from "../etcd/client.ts";

/** The flags every process command takes for etcd, the cluster and its secret (parseArgs's form). */
export const COMMON_FLAGS = {
  etcd: { type: "string" },
  "etcd-ca": { type: "string" },
  "etcd-cert": { type: "string" },
  "etcd-key": { type: "string" },
  "etcd-user": { type: "string" },
  "etcd-password-file": { type: "string" },
  cluster: { type: "string", default: "gemini" },
  "secret-file": { type: "string" },
} as const;

export interface CommonValues {
  etcd?: string;
  "etcd-ca"?: string;
  "etcd-cert"?: string;
  "etcd-key"?: string;
  "etcd-user"?: string;
  "etcd-password-file"?: string;
  "secret-file"?: string;
}

/** The environment variable that may hold the secret instead of a file. */
export const SECRET_ENV = "GEMINI_CLUSTER_SECRET";

/** A mistake in a file or flag: `fail` turns it into the command's own kind of error. */
function readText(path: string, what: string, fail: (message: string) => Error): string {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch (error) {
    throw fail(`cannot read the ${what} "${path}": ${(error as Error).message}`);
  }
}

/** The etcd client the flags describe (comma-separated endpoints); a bad option is one error from `fail`. */
export function etcdOf(values: CommonValues, fail: (message: string) => Error): Etcd {
  if (!values.etcd) throw fail("--etcd URL is required (etcd's client URL, e.g. http://127.0.0.1:2379)");
  const options: EtcdOptions = {
    endpoints: values.etcd.split(",").map((url) => url.trim()),
    caFile: values["etcd-ca"],
    certFile: values["etcd-cert"],
    keyFile: values["etcd-key"],
    user: values["etcd-user"],
    password: values["etcd-password-file"]
      ? readText(values["etcd-password-file"], "etcd password file", fail)
      : undefined,
  };
  try {
    return new Etcd(options);
  } catch (error) {
    throw fail((error as Error).message);
  }
}

/** The cluster's secret: from --secret-file, else the environment. */
export function secretOf(values: CommonValues, fail: (message: string) => Error): string {
  const secret = values["secret-file"]
    ? readText(values["secret-file"], "secret file", fail)
    : Deno.env.get(SECRET_ENV);
  if (!secret) throw fail(`the cluster's secret is needed: --secret-file F, or ${SECRET_ENV}`);
  if (new TextEncoder().encode(secret).length < 16) throw fail("the cluster's secret must be at least 16 bytes");
  return secret;
}

/**
 * A cluster of processes training the tiny model: the default cluster's settings, with `machines`, the
 * seed, and naive replication (every checkpoint reaches its peers before the next step, however busy the
 * computer, so a recovery's sources do not depend on timing); heartbeats every 200 ms, since each one
 * renews a lease in etcd.
 */
export function processClusterSettings(machines: number, seed: number, persistentDirectory: string): ClusterSettings {
  const settings = defaultClusterSettings({ kind: "files", directory: persistentDirectory, bandwidth: 20e6 });
  settings.machines = machines;
  settings.training.optimizer.seed = seed;
  settings.checkpoint.replication.policy = "naive";
  settings.heartbeatMs = 200;
  return settings;
}
