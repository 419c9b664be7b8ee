// The persistent file store: round trips, keeping the newest K, falling back past a corrupt file, and
// surviving a writer killed (SIGKILL) in the middle of a save.

import assert from "node:assert/strict";
import { FileCheckpointStore } from "../core/file-store.ts";
import { NoCheckpointError } from "../core/store.ts";
import { CONFIG, holdsPattern, patternShard } from "./checkpoint_fixtures.ts";

async function withDirectory(test: (directory: string) => Promise<void>) {
  const directory = await Deno.makeTempDir();
  try {
    await test(directory);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
}

Deno.test("the file store saves and loads bit for bit, keeping the newest K per owner", async () => {
  await withDirectory(async (directory) => {
    const store = new FileCheckpointStore(directory, { keep: 2 });
    for (let iteration = 1; iteration <= 4; iteration++) await store.save(3, iteration, patternShard(iteration, 3));
    await store.save(5, 1, patternShard(1, 5));
    assert.deepEqual((await store.entries(3)).map((e) => e.iteration), [4, 3]);
    assert.deepEqual((await store.entries()).map((e) => [e.owner, e.iteration]), [[3, 4], [3, 3], [5, 1]]);
    const loaded = await store.load(3, { config: CONFIG });
    assert.equal(loaded.entry.iteration, 4);
    assert.ok(holdsPattern(loaded.shard.tensors, 4));
    await assert.rejects(store.load(9), NoCheckpointError);
  });
});

Deno.test("the newest iteration every owner has is never pruned, though an owner missed later ones", async () => {
  await withDirectory(async (directory) => {
    const store = new FileCheckpointStore(directory, { keep: 2 });
    await store.save(0, 1, patternShard(1));
    await store.save(1, 1, patternShard(1, 1)); // machine 1's later writes failed
    for (const iteration of [2, 3, 4]) await store.save(0, iteration, patternShard(iteration));
    assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [4, 3, 1], "1 is all both have");
    await store.save(1, 4, patternShard(4, 1));
    await store.save(0, 5, patternShard(5));
    assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [5, 4], "now 4 is");
  });
});

Deno.test("a corrupt or truncated newest file is passed over for the previous checkpoint", async () => {
  await withDirectory(async (directory) => {
    const store = new FileCheckpointStore(directory);
    await store.save(0, 1, patternShard(1));
    await store.save(0, 2, patternShard(2));
    await store.save(0, 3, patternShard(3));
    const path = (i: number) => `${directory}/machine-0/${String(i).padStart(10, "0")}.gemckpt`;
    const newest = await Deno.readFile(path(3));
    newest[newest.length - 100] ^= 0x80;
    await Deno.writeFile(path(3), newest);
    await Deno.truncate(path(2), 1000);
    const loaded = await store.load(0);
    assert.equal(loaded.entry.iteration, 1);
    assert.ok(holdsPattern(loaded.shard.tensors, 1));
    assert.deepEqual(loaded.skipped.map((s) => s.iteration), [3, 2]);
    assert.match(loaded.skipped[0].error, /0000000003\.gemckpt: chunk \d+ .* does not match its checksum/);
    assert.match(loaded.skipped[1].error, /0000000002\.gemckpt: truncated: 1000 of \d+ bytes/);
  });
});

Deno.test("a writer killed in the middle of a save leaves the previous checkpoint intact", async () => {
  await withDirectory(async (directory) => {
    await new FileCheckpointStore(directory).save(0, 1, patternShard(1, 0, 1_000_000));
    const changes = Deno.watchFs(`${directory}/machine-0`);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        new URL("./workers/slow_file_writer.ts", import.meta.url).pathname,
        directory,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.match((await lines.read()).value ?? "", /writing/);
    // Once some of the 12 MB has reached its temporary file, kill it without a chance to clean up (leaving
    // the loop closes the watcher).
    for await (const change of changes) {
      if (change.kind === "modify" && change.paths.some((path) => path.includes(".tmp-") && Deno.statSync(path).size)) {
        break;
      }
    }
    child.kill("SIGKILL");
    assert.equal((await child.status).signal, "SIGKILL");
    await lines.cancel();

    const store = new FileCheckpointStore(directory);
    assert.deepEqual(
      (await store.entries(0)).map((e) => e.iteration),
      [1],
      "the half-written file is not a checkpoint",
    );
    const loaded = await store.load(0);
    assert.equal(loaded.entry.iteration, 1);
    assert.ok(holdsPattern(loaded.shard.tensors, 1));
    // The next save cleans up what the killed writer left behind.
    await store.save(0, 3, patternShard(3));
    assert.deepEqual([...Deno.readDirSync(`${directory}/machine-0`)].map((e) => e.name).sort(), [
      "0000000001.gemckpt",
      "0000000003.gemckpt",
    ]);
  });
});
