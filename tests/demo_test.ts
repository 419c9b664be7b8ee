// `deno task demo`, the headless main job: it trains and reports, and fails cleanly without a GPU.

import assert from "node:assert/strict";

async function runDemo(env: Record<string, string>, args: string[] = []) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "demo", ...args],
    env: Object.keys(env).length ? env : undefined,
    cwd: new URL("..", import.meta.url).pathname,
  }).output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

Deno.test("deno task demo trains with a falling loss, checkpoints to memory and resumes bit for bit after a failure", async () => {
  const demo = await runDemo({}, ["--steps", "40"]);
  assert.equal(demo.code, 0, demo.stderr);
  assert.match(demo.stdout, /^adapter: \S/m);
  assert.match(demo.stdout, /self-check passed/);
  const steps = [...demo.stdout.matchAll(/^step +(\d+) +loss (\d+\.\d+) .* (\d+) tokens\/s/gm)];
  assert.ok(steps.length >= 2, demo.stdout);
  const first = Number(steps[0][2]), last = Number(steps.at(-1)![2]);
  assert.equal(Number(steps.at(-1)![1]), 40);
  assert.ok(last < first - 1, `the loss falls: ${first} -> ${last}`);
  assert.ok(steps.every((step) => Number(step[3]) > 0));
  assert.match(demo.stdout, /^step +1 .* checkpoint: blocked \d+\.\d+ ms, in memory after \d+\.\d+ ms$/m);
  assert.match(
    demo.stdout,
    /^software failure after step 35: restarted from the checkpoint of step 35 in host memory .* the 5 losses after it equal the failure-free run's bit for bit$/m,
  );
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
    const demo = await runDemo({ DENO_WEBGPU_BACKEND: "metal" }, ["--steps", "1"]);
    assert.equal(demo.code, 1);
    assert.match(demo.stderr, /^demo: no WebGPU adapter was found\. .*mesa-vulkan-drivers/);
    assert.equal(demo.stderr.trim().split("\n").length, 1, `one line, no stack trace:\n${demo.stderr}`);
  },
});
