// A standby root in a process of its own, for the failover test to kill: it campaigns, and once elected
// reads the cluster's state back, advances the epoch, writes under it, prints what it did as one JSON line,
// and leads until it is killed.
// Usage: deno run --allow-all tests/etcd_root_child.ts ENDPOINT CLUSTER ID TTL_SECONDS

import { Etcd } from "../agents/etcd/client.ts";
import { RootElection } from "../agents/etcd/election.ts";
import { ClusterStateStore } from "../agents/etcd/state.ts";

const [endpoint, cluster, id, ttl] = Deno.args;
const etcd = new Etcd({ endpoints: [endpoint] });
const leadership = await new RootElection(etcd, cluster, Number(ttl)).campaign(id);
const state = await ClusterStateStore.open(etcd, cluster);
const read = await state.read();
const epoch = await state.advanceEpoch(read.epoch);
await state.write(epoch, [{ kind: "recovery", recovery: null }, { kind: "shard", rank: 1, iteration: 8 }]);
console.log(JSON.stringify({
  elected: id,
  read: { ...read, members: [...read.members], shards: [...read.shards], replicas: [...read.replicas] },
  epoch,
}));
console.error(`${id} lost its leadership: ${(await leadership.lost).message}`);
Deno.exit(1);
