// Pacing for the persistent stores' bandwidth cap, which models remote storage (a cloud file system).

/** Sleeps as long as needed for `bytes` since `start` (ms) to have moved at no more than `bandwidth` bytes/s. */
export async function pace(bytes: number, start: number, bandwidth?: number) {
  if (!bandwidth) return;
  const wait = (bytes / bandwidth) * 1000 - (performance.now() - start);
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}

/** " at 20.00 Gbit/s" for a store's description, or nothing without a cap. */
export function describeCap(bandwidth?: number): string {
  return bandwidth ? ` at ${(bandwidth * 8 / 1e9).toFixed(2)} Gbit/s` : "";
}
