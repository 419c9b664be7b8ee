// Training on a user's text: the file is tokenized once (GPT-2's BPE or bytes) into the corpus every machine
// is given, and `deno task demo --text` answers a file it cannot use with one clear line. The demo test
// (tests/demo_test.ts) trains on such a file and checks its recovery bit for bit.

import assert from "node:assert/strict";
import { corpusFor, defaultClusterSettings } from "../agents/protocol/spec.ts";
import { UserError } from "../cli/args.ts";
import { readTextCorpus } from "../cli/demo.ts";
import { textCorpus } from "../cli/tokenizers.ts";
import { BatchLoader, encodeBytes } from "../core/data.ts";
import { MODEL_PRESETS } from "../core/model.ts";

const TEXT = "Hello world. In-memory checkpoints make recovery fast.\n";

Deno.test("the gpt2 tokenizer turns text into GPT-2's BPE ids, the corpus every machine is given", () => {
  const corpus = textCorpus("greeting.txt", TEXT.repeat(20), "gpt2");
  assert.equal(corpus.vocabSize, 50257);
  assert.ok(corpus.tokens instanceof Uint16Array, "GPT-2's ids need 16 bits");
  assert.deepEqual([...corpus.tokens.subarray(0, 3)], [15496, 995, 13]); // "Hello", " world", "."
  assert.ok(corpus.tokens.length < TEXT.length * 20 / 2, "BPE takes fewer tokens than bytes");

  // What a machine's Worker receives is a structured clone of the settings: the same tokens.
  const settings = defaultClusterSettings({ kind: "memory" });
  const training = { ...settings.training, config: MODEL_PRESETS.gpt2, corpus };
  const received = corpusFor(structuredClone(training));
  assert.deepEqual(received.tokens, corpus.tokens);
  const batch = new BatchLoader(received, 2, 8, 1).next();
  const ids = new Set(corpus.tokens);
  assert.ok([...batch.inputs, ...batch.targets].every((id) => ids.has(id)), "batches are drawn from the text");

  // A byte-level model cannot take GPT-2's ids.
  assert.throws(() => corpusFor({ ...training, config: MODEL_PRESETS.tiny }), /vocabulary of 50257, the model 256/);
});

Deno.test("the bytes tokenizer is the text's UTF-8 bytes", () => {
  const corpus = textCorpus("greeting.txt", "héllo", "bytes");
  assert.equal(corpus.vocabSize, 256);
  assert.deepEqual(corpus.tokens, encodeBytes("héllo"));
});

Deno.test("a --text file is checked against the model and the batch, each mistake one UserError", async () => {
  const path = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    await Deno.writeTextFile(path, TEXT.repeat(5)); // 275 bytes
    const tiny = { model: "tiny", config: MODEL_PRESETS.tiny, machines: 4, batch: 2, time: 32 };
    const corpus = await readTextCorpus(path, "bytes", tiny);
    assert.equal(corpus.tokens.length, 275);
    const fails = (promise: Promise<unknown>, message: RegExp) =>
      assert.rejects(promise, (error: Error) => error instanceof UserError && message.test(error.message));
    await fails(
      readTextCorpus(path, "gpt2", tiny),
      /^the gpt2 tokenizer has 50257 tokens, the tiny model only 256: use --model gpt2, or --tokenizer bytes$/,
    );
    await fails(
      readTextCorpus(path, "bytes", { ...tiny, batch: 3 }),
      /^the --text file ".*" has 275 bytes tokens; one global batch of 4 machines x 3 rows x \(32 \+ 1\) tokens needs 396/,
    );
    const gpt2 = { model: "gpt2", config: MODEL_PRESETS.gpt2, machines: 4, batch: 2, time: 16 };
    const count = textCorpus(path, TEXT.repeat(5), "gpt2").tokens.length;
    assert.ok(count < 4 * 2 * 17);
    await fails(readTextCorpus(path, "gpt2", gpt2), new RegExp(`has ${count} gpt2 tokens; .* needs 136: `));
    assert.equal((await readTextCorpus(path, "gpt2", { ...gpt2, batch: 1, time: 4 })).tokens.length, count);
    await fails(readTextCorpus(`${path}.missing`, "bytes", tiny), /^cannot read the --text file ".*\.missing": /);
  } finally {
    await Deno.remove(path);
  }
});

async function runDemo(args: string[]) {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "demo", ...args],
    cwd: new URL("..", import.meta.url).pathname,
  }).output();
  return { code, stderr: new TextDecoder().decode(stderr) };
}

Deno.test("deno task demo --text answers an unreadable file and a mismatched tokenizer with one line each", async () => {
  const missing = await runDemo(["--text", "/nonexistent/corpus.txt"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr.trim(), /^demo: cannot read the --text file "\/nonexistent\/corpus.txt": [^\n]+$/);
  const unknown = await runDemo(["--text", "/nonexistent/corpus.txt", "--tokenizer", "words"]);
  assert.equal(unknown.code, 2);
  assert.equal(unknown.stderr.trim(), 'demo: --tokenizer must be one of gpt2, bytes, got "words"');
  const alone = await runDemo(["--tokenizer", "bytes"]);
  assert.equal(alone.code, 2);
  assert.equal(alone.stderr.trim(), "demo: --tokenizer names how to tokenize the --text FILE: give the file too");
});
