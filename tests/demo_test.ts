// `deno task demo`, the headless main job: it trains and reports (on the synthetic corpus or a user's text),
// and fails cleanly without a GPU.

import assert from "node:assert/strict";

async function runDemo(env: Record<string, string>, args: string[] = []) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "demo", ...args],
    env: Object.keys(env).length ? env : undefined,
    cwd: new URL("..", import.meta.url).pathname,
  }).output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

Deno.test("deno task demo: four machines train, lose a machine and then a group, recover from a peer and from persistent storage, and continue bit for bit", async () => {
  const demo = await runDemo({}, ["--iterations", "15"]);
  assert.equal(demo.code, 0, demo.stderr);
  assert.match(demo.stdout, /^adapter: \S/m);
  assert.match(demo.stdout, /self-check passed/);
  const iterations = [
    ...demo.stdout.matchAll(
      /^iteration +(\d+) +loss (\d+\.\d+) .* checkpoint blocked \d+\.\d ms, replicated interleaved (every \d+ iteration\(s\)|\(profiling\))$/gm,
    ),
  ];
  assert.ok(iterations.length >= 3, demo.stdout);
  assert.equal(Number(iterations.at(-1)![1]), 15);
  assert.equal(iterations.at(-1)![3], "every 1 iteration(s)", "at 400 MB/s a checkpoint fits one iteration's spans");
  assert.ok(Number(iterations.at(-1)![2]) < Number(iterations[0][2]), "the loss falls");
  assert.match(demo.stdout, /machine 1: hardware failure in the middle of iteration 5; detected by missed heartbeats/);
  // Iteration 4's checkpoint is replicated in iteration 5's idle spans: if the failure comes first (it did under
  // load), the newest complete everywhere is iteration 3's, so GEMINI loses at most one iteration.
  const [, rolledBack, lost] = demo.stdout.match(
    /rolled back to iteration (\d+) \((\d+) lost\); shards from 0: local, 1: peer 0, 2: local, 3: local/,
  ) ?? assert.fail(`no recovery from a peer in:\n${demo.stdout}`);
  assert.ok(["3", "4"].includes(rolledBack) && Number(lost) === 4 - Number(rolledBack), `${rolledBack}, ${lost} lost`);
  assert.match(demo.stdout, /shards from 0: persistent, 1: persistent, /);
  assert.match(demo.stdout, /^retrieval of the shards +\d+\.\d ms +\d+\.\d ms$/m);
  assert.match(demo.stdout, new RegExp(`^iterations lost +${lost} +[1-9]\\d*$`, "m"));
  assert.match(demo.stdout, /training continued exactly as the run without failures: all 15 losses .* bit for bit$/m);
});

Deno.test("deno task demo --text trains on a user's file, byte-tokenized, and recovers bit for bit", async () => {
  const path = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    const line = "GEMINI keeps a checkpoint of every machine in the CPU memory of its peers. ";
    await Deno.writeTextFile(path, line.repeat(8)); // 600 bytes: every window of the global batch is this text
    const demo = await runDemo({}, ["--iterations", "12", "--text", path, "--tokenizer", "bytes"]);
    assert.equal(demo.code, 0, demo.stderr);
    assert.ok(demo.stdout.includes(`text: ${path} (bytes tokens), 600 tokens`), demo.stdout);
    const losses = [...demo.stdout.matchAll(/^iteration +\d+ +loss (\d+\.\d+) /gm)].map((match) => Number(match[1]));
    assert.ok(losses.length >= 2 && losses.at(-1)! < losses[0], `the loss falls: ${losses}`);
    assert.match(demo.stdout, /shards from 0: local, 1: peer 0, 2: local, 3: local/);
    assert.match(demo.stdout, /training continued exactly as the run without failures: all 12 losses .* bit for bit$/m);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("deno task demo answers a bad option with one line and exit code 2", async () => {
  const demo = await runDemo({}, ["--seq", "1000"]);
  assert.equal(demo.code, 2);
  assert.equal(demo.stderr.trim(), "demo: --seq 1000 exceeds the tiny model's n_ctx of 64");
});

Deno.test({
  name: "deno task demo without an adapter exits non-zero with one clear message",
  // Asking for Apple's Metal backend leaves Linux with no adapter at all.
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const demo = await runDemo({ DENO_WEBGPU_BACKEND: "metal" });
    assert.equal(demo.code, 1);
    assert.match(demo.stderr, /^demo: no WebGPU adapter was found\. .*mesa-vulkan-drivers/);
    assert.equal(demo.stderr.trim().split("\n").length, 1, `one line, no stack trace:\n${demo.stderr}`);
  },
});
