// Runs in the test page: the browser's persistent checkpoint store, on the backend the test names,
// saving, keeping the newest K, loading, and falling back past a corrupt checkpoint. The results are
// left on `globalThis.storeResult` for the test to read.

import { BrowserCheckpointStore } from "../../core/browser-store.ts";
import { holdsPattern, patternShard } from "../checkpoint_fixtures.ts";

async function run(backend: "opfs" | "indexeddb") {
  const store = await BrowserCheckpointStore.open({ backend, keep: 2, name: `store-test-${backend}-${Date.now()}` });
  for (let iteration = 1; iteration <= 3; iteration++) await store.save(0, iteration, patternShard(iteration));
  const kept = (await store.entries(0)).map((e) => e.iteration);
  const first = await store.load(0);
  // A checkpoint whose byte was flipped on its way to storage: saved as it is, then passed over on load.
  const corrupt = patternShard(4);
  corrupt[corrupt.length - 10] ^= 0x40;
  await store.save(0, 4, corrupt);
  const fallback = await store.load(0);
  return {
    backend: store.backend,
    kept,
    loaded: first.entry.iteration,
    loadedIntact: holdsPattern(first.shard.tensors, first.entry.iteration),
    fallback: fallback.entry.iteration,
    fallbackIntact: holdsPattern(fallback.shard.tensors, fallback.entry.iteration),
    skipped: fallback.skipped.map((s) => s.error),
  };
}

const backend = new URL(location.href).searchParams.get("backend") === "indexeddb" ? "indexeddb" : "opfs";
const page = globalThis as { storeResult?: unknown };
run(backend).then(
  (result) => page.storeResult = result,
  (error) => page.storeResult = { error: String(error) },
);
