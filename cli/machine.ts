// `deno task machine --etcd URL [--listen HOST:PORT] [--advertise HOST:PORT] [--cluster NAME] [--secret-file F]`:
// one machine of a cluster of processes (agents/process/machine.ts). It joins as a spare, and runs the rank
// a root gives it until the run is done, it is fenced, or it is stopped (SIGTERM). It prints its id (its
// control address) on stdout once it has joined; SIGUSR1 ends its trainer, as a software failure would.

import { MachineProcess } from "../agents/process/machine.ts";
import { COMMON_FLAGS, etcdOf, secretOf } from "../agents/process/options.ts";
import { parseAddress } from "../agents/process/registry.ts";
import { parseOptions, runCommand, UserError } from "./args.ts";

const USAGE = "usage: deno task machine --etcd URL [--listen HOST:PORT] [--advertise HOST:PORT] [--cluster NAME] " +
  "[--secret-file F] [--etcd-ca F --etcd-cert F --etcd-key F] [--etcd-user U --etcd-password-file F]";

runCommand("machine", async () => {
  const values = parseOptions(Deno.args, {
    ...COMMON_FLAGS,
    listen: { type: "string", default: "127.0.0.1:0" },
    advertise: { type: "string" },
  }, USAGE);
  const fail = (message: string) => new UserError(`${message}; ${USAGE}`);
  const address = (text: string, flag: string) => {
    try {
      return parseAddress(text, `--${flag}`);
    } catch (error) {
      throw fail((error as Error).message);
    }
  };
  const listen = address(values.listen, "listen");
  const advertise = values.advertise === undefined ? undefined : address(values.advertise, "advertise");
  if (advertise && !listen.port) throw fail("--advertise needs --listen with a fixed port (peers dial that port + 1)");
  const secret = secretOf(values, fail);
  const etcd = etcdOf(values, fail);
  const machine = await MachineProcess.start({ etcd, cluster: values.cluster, secret, listen, advertise });
  const stop = () => machine.stop("stopped (SIGTERM)");
  Deno.addSignalListener("SIGTERM", stop);
  console.log(machine.id);
  console.error(`machine ${machine.id} joined cluster ${values.cluster} as a spare`);
  console.error(`machine ${machine.id} leaves: ${await machine.exited}`);
  Deno.removeSignalListener("SIGTERM", stop);
  etcd.close();
  return 0;
});
