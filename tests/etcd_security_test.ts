// etcd's own TLS and credentials, passed through to `fetch`, against a real etcd this test starts with TLS
// and client certificates (made here with openssl), and then with its users enabled: the right
// certificate and password are let in, and each thing missing is one clear error.

import assert from "node:assert/strict";
import { Etcd, type EtcdOptions, EtcdUnavailableError } from "../agents/etcd/client.ts";
import { EtcdHealthStore } from "../agents/etcd/health.ts";
import { LocalEtcd } from "../agents/etcd/local.ts";

async function openssl(dir: string, ...args: string[]) {
  const { success, stderr } = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
    .output();
  if (!success) throw new Error(`openssl ${args.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
}

/** A CA, a certificate for etcd on localhost (and 127.0.0.1), and one for a client, all signed by that CA. */
async function certificates(dir: string) {
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl(dir, "req", "-x509", ...key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=ca");
  // etcd's JSON gateway reaches etcd's gRPC server as a client, with etcd's own certificate: it must allow both.
  for (const [name, usage] of [["server", "serverAuth,clientAuth"], ["client", "clientAuth"]]) {
    await Deno.writeTextFile(
      `${dir}/${name}.ext`,
      `subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=${usage}\n`,
    );
    // With etcd's users on, its gateway refuses a client certificate that has a CommonName (etcd would
    // otherwise take the CN for a user name over gRPC, and cannot through the gateway): names go in O.
    await openssl(dir, "req", ...key, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/O=${name}`);
    await openssl(
      dir,
      ...["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"],
      ...["-out", `${name}.pem`, "-days", "1", "-extfile", `${name}.ext`],
    );
  }
  return {
    ca: `${dir}/ca.pem`,
    server: { certFile: `${dir}/server.pem`, keyFile: `${dir}/server.key` },
    client: { certFile: `${dir}/client.pem`, keyFile: `${dir}/client.key` },
  };
}

Deno.test({
  name: "etcd over TLS with client certificates, then with users: the right ones get in, the rest get a clear error",
  // A closed client's watches and keep-alives wind down after the test's end: the sanitizers would count them.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "etcd-tls-" });
    const clients: Etcd[] = [];
    let etcd: LocalEtcd | null = null;
    try {
      const { ca, server, client } = await certificates(dir);
      etcd = await LocalEtcd.start({ name: "etcd-security", tls: { ...server, caFile: ca } });
      const url = etcd.clientUrl;
      assert.match(url, /^https:\/\/localhost:\d+$/);
      const tls: EtcdOptions = { endpoints: [url], caFile: ca, ...client };
      const connect = (options: Partial<EtcdOptions>) => {
        const etcdClient = new Etcd({ ...tls, unavailableMs: 2000, ...options });
        clients.push(etcdClient);
        return etcdClient;
      };

      const admin = connect({});
      const store = new EtcdHealthStore(admin, "secure");
      await store.put("machines/0", { incarnation: 0 });
      assert.deepEqual(await store.get("machines/"), new Map([["machines/0", { incarnation: 0 }]]));

      // An IP address its certificate names does as well as the host name.
      const byAddress = new EtcdHealthStore(connect({ endpoints: [url.replace("localhost", "127.0.0.1")] }), "secure");
      assert.deepEqual(await byAddress.get("machines/"), new Map([["machines/0", { incarnation: 0 }]]));
      const withoutCertificate = await new EtcdHealthStore(
        connect({ certFile: undefined, keyFile: undefined }),
        "secure",
      )
        .get("machines/").catch((error) => error);
      assert.ok(withoutCertificate instanceof EtcdUnavailableError, `got ${withoutCertificate}`);

      // Users on: the root user (with its role) is what etcd requires before authentication can be enabled.
      await admin.request("/v3/auth/role/add", { name: "root" });
      await admin.request("/v3/auth/user/add", { name: "root", password: "root-secret" });
      await admin.request("/v3/auth/user/grant", { user: "root", role: "root" });
      await admin.request("/v3/auth/enable", {});

      const root = new EtcdHealthStore(connect({ user: "root", password: "root-secret" }), "secure");
      await root.put("machines/1", { incarnation: 2 });
      assert.deepEqual([...(await root.get("machines/")).keys()], ["machines/0", "machines/1"]);
      await assert.rejects(
        () => new EtcdHealthStore(connect({ user: "root", password: "wrong" }), "secure").get("machines/"),
        /authentication failed/,
      );
      await assert.rejects(
        () => new EtcdHealthStore(connect({}), "secure").get("machines/"),
        /user name is empty|permission denied/,
      );
    } finally {
      for (const etcdClient of clients) etcdClient.close();
      await etcd?.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
