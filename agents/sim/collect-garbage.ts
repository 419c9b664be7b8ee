// A simulated cluster's machines share one process, and each Worker's V8 isolate sees only its own garbage:
// none knows that the others' GPU buffers and host memory fill the process. GPT-2 124M's machines leave
// hundreds of MiB of dead messages and readbacks an iteration each (1.6 GiB), and its 4-machine demo ran out
// of memory while every isolate still collected lazily; a lost machine's memory also stayed until the
// cluster's thread happened to collect. Given `--v8-flags=--expose-gc` (the demo and the bench run with it),
// a machine collects before it sends a large message and after each call the root makes, and the cluster
// before a replacement allocates; without the flag this does nothing.

/** A full garbage collection of this thread's isolate, where V8 exposes one. */
export function collectGarbage() {
  (globalThis as { gc?: () => void }).gc?.();
}
