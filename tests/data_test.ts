// Data: the byte tokenizer round-trips, the synthetic corpus is seeded, the batch order resumes exactly.

import assert from "node:assert/strict";
import { BatchLoader, decodeBytes, encodeBytes, syntheticCorpus, textFileCorpus } from "../core/data.ts";

Deno.test("the byte-level tokenizer round-trips any text", () => {
  const text = "GEMINI: in-memory checkpoints, ünïcödé ✓";
  const tokens = encodeBytes(text);
  assert.ok(tokens.every((t) => t < 256));
  assert.equal(decodeBytes(tokens), text);
});

Deno.test("the synthetic corpus is the same for the same seed and different for another", () => {
  assert.deepEqual(syntheticCorpus(1000, 5).tokens, syntheticCorpus(1000, 5).tokens);
  assert.notDeepEqual(syntheticCorpus(1000, 5).tokens, syntheticCorpus(1000, 6).tokens);
});

Deno.test("targets are the inputs shifted by one token", () => {
  const corpus = { name: "count", vocabSize: 256, tokens: Uint8Array.from({ length: 200 }, (_, i) => i) };
  const { inputs, targets } = new BatchLoader(corpus, 2, 8, 1).next();
  inputs.forEach((token, i) => assert.equal(targets[i], token + 1));
});

Deno.test("a batch loader restored from a saved state continues the same order", () => {
  const corpus = syntheticCorpus(10_000, 1);
  const loader = new BatchLoader(corpus, 3, 16, 7);
  loader.next(), loader.next();
  const saved = loader.state;
  const expected = [loader.next(), loader.next()];
  const other = new BatchLoader(corpus, 3, 16, 123);
  other.restore(saved);
  assert.deepEqual([other.next(), other.next()], expected);
  assert.deepEqual(other.state, loader.state);
});

Deno.test("a text file is a byte-level corpus; a missing one is a clear error", async () => {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(path, "hello, corpus");
    assert.deepEqual((await textFileCorpus(path)).tokens, encodeBytes("hello, corpus"));
  } finally {
    await Deno.remove(path);
  }
  await assert.rejects(textFileCorpus("/nonexistent/corpus.txt"), /cannot read the corpus "\/nonexistent\/corpus.txt"/);
  assert.throws(
    () => new BatchLoader({ name: "tiny", vocabSize: 256, tokens: new Uint8Array(4) }, 1, 8, 1),
    /fewer than a window/,
  );
});
