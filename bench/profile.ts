// Where a GPT-2 training step's time goes, dispatch by dispatch. One step is recorded as the trainer
// records it, then replayed one command at a time, each submitted alone and waited for with
// onSubmittedWorkDone; a warm-up step first, so that shader compilation is not counted. The host's parts
// (setting the batch, recording the step, reading the loss and the norm back) are timed beside it.
// Replayed in order, the step computes what it computes in one submission.
//
//   deno run --allow-all bench/profile.ts [--layers L] [--batch B] [--seq T] [--step] [--top N]
//
// --layers cuts GPT-2 124M to L blocks (the per-block rows are the same as in the whole model; the
// optimizer's scale with the parameters); --step also times one whole step in one submission.

import { numberOption, parseOptions, runCommand } from "../cli/args.ts";
import { acquireGpu, formatAdapter, readBuffer } from "../core/gpu.ts";
import { MODEL_PRESETS } from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { DEFAULT_TRAINER_SETTINGS, Trainer } from "../core/trainer.ts";
import { markdownTable } from "./measure.ts";

const USAGE = "usage: deno run --allow-all bench/profile.ts [--layers L] [--batch B] [--seq T] [--step] [--top N]";

/** One command of the step: a dispatch (its kernel's label and sizes) or a buffer clear. */
type Command =
  | { kind: "dispatch"; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; grid: number[] }
  | { kind: "clear"; buffer: GPUBuffer; offset?: number; size?: number };

/** Stands in for a GPUCommandEncoder: keeps the commands the model and the trainer record, in order. */
class Recorder {
  readonly commands: Command[] = [];

  beginComputePass(_descriptor?: GPUComputePassDescriptor) {
    let pipeline: GPUComputePipeline | null = null, bindGroup: GPUBindGroup | null = null;
    const commands = this.commands;
    return {
      setPipeline(p: GPUComputePipeline) {
        pipeline = p;
      },
      setBindGroup(index: number, group: GPUBindGroup) {
        if (index !== 0) throw new Error("the kernels bind group 0 only");
        bindGroup = group;
      },
      dispatchWorkgroups(x: number, y = 1, z = 1) {
        commands.push({ kind: "dispatch", pipeline: pipeline!, bindGroup: bindGroup!, grid: [x, y, z] });
      },
      end() {},
    };
  }

  clearBuffer(buffer: GPUBuffer, offset?: number, size?: number) {
    this.commands.push({ kind: "clear", buffer, offset, size });
  }
}

/** A timed command: what it was, its sizes (`name=value` as its bind group's label has them), its time. */
interface Timed {
  op: string;
  sizes: string;
  milliseconds: number;
  /** The floating-point operations or the bytes it moves, where they are known. */
  work: { flop?: number; bytes?: number };
}

/** What one command computes or moves: a matmul's 2MNK, the bytes of the memory-bound optimizer and clears. */
function workOf(op: string, sizes: Record<string, number>, grid: number[], clearBytes: number): Timed["work"] {
  if (op.startsWith("matmul")) return { flop: 2 * sizes.m * sizes.n * sizes.k };
  if (op === "clear") return { bytes: clearBytes };
  // params, m, v read and written, grads read: 7 floats an element, 4 elements a thread (1 in the tail).
  if (op.startsWith("adamw")) return { bytes: 28 * grid[0] * grid[1] * 256 * (op === "adamw_vec4" ? 4 : 1) };
  if (op === "gradnorm_threads") return { bytes: 4 * sizes.n };
  return {};
}

async function replay(device: GPUDevice, commands: Command[]): Promise<Timed[]> {
  const timed: Timed[] = [];
  for (const command of commands) {
    const encoder = device.createCommandEncoder();
    let op: string, text: string, sizes: Record<string, number> = {}, clearBytes = 0;
    if (command.kind === "clear") {
      encoder.clearBuffer(command.buffer, command.offset, command.size);
      clearBytes = command.size ?? command.buffer.size - (command.offset ?? 0);
      op = "clear";
      text = `${(clearBytes / 2 ** 20).toFixed(1)} MiB`;
    } else {
      const pass = encoder.beginComputePass();
      pass.setPipeline(command.pipeline);
      pass.setBindGroup(0, command.bindGroup);
      pass.dispatchWorkgroups(command.grid[0], command.grid[1], command.grid[2]);
      pass.end();
      op = command.pipeline.label;
      const fields = command.bindGroup.label.slice(op.length + 1);
      sizes = Object.fromEntries([...fields.matchAll(/(\w+)=(\S+)/g)].map(([, name, value]) => [name, Number(value)]));
      text = `${fields} grid ${command.grid.slice(0, 2).join("x")}`;
    }
    const start = performance.now();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    const milliseconds = performance.now() - start;
    timed.push({
      op,
      sizes: text,
      milliseconds,
      work: workOf(op, sizes, command.kind === "dispatch" ? command.grid : [], clearBytes),
    });
  }
  return timed;
}

/** The commands grouped by kernel and sizes, the costliest first. */
function table(timed: Timed[], top: number): string {
  const groups = new Map<
    string,
    { op: string; sizes: string; calls: number; ms: number; flop: number; bytes: number }
  >();
  for (const t of timed) {
    const key = `${t.op} ${t.sizes}`;
    const group = groups.get(key) ?? { op: t.op, sizes: t.sizes, calls: 0, ms: 0, flop: 0, bytes: 0 };
    group.calls++;
    group.ms += t.milliseconds;
    group.flop += t.work.flop ?? 0;
    group.bytes += t.work.bytes ?? 0;
    groups.set(key, group);
  }
  const total = timed.reduce((sum, t) => sum + t.milliseconds, 0);
  const rows = [...groups.values()].sort((a, b) => b.ms - a.ms).slice(0, top).map((g) => [
    g.op,
    g.sizes,
    String(g.calls),
    g.ms.toFixed(1),
    (g.ms / g.calls).toFixed(2),
    `${(100 * g.ms / total).toFixed(1)}%`,
    g.flop
      ? `${(g.flop / (g.ms / 1000) / 1e9).toFixed(2)} GFLOP/s`
      : g.bytes
      ? `${(g.bytes / (g.ms / 1000) / 1e9).toFixed(2)} GB/s`
      : "",
  ]);
  return markdownTable(["op", "sizes", "calls", "ms", "ms/call", "share", "rate"], rows);
}

async function main(args: string[]): Promise<number> {
  const options = parseOptions(args, {
    layers: { type: "string", default: String(MODEL_PRESETS.gpt2.n_layer) },
    batch: { type: "string", default: "1" },
    seq: { type: "string", default: "16" },
    step: { type: "boolean", default: false },
    top: { type: "string", default: "40" },
  }, USAGE);
  const layers = numberOption("layers", options.layers, { integer: true, positive: true });
  const batch = numberOption("batch", options.batch, { integer: true, positive: true });
  const time = numberOption("seq", options.seq, { integer: true, positive: true });
  const top = numberOption("top", options.top, { integer: true, positive: true });
  const { device, adapter } = await acquireGpu();
  const config = { ...MODEL_PRESETS.gpt2, n_layer: layers };
  const trainer = new Trainer(device, config, { ...DEFAULT_TRAINER_SETTINGS, batch, time });
  const rng = new Rng(1), V = config.vocab_size;
  const next = () => {
    const random = () => Uint32Array.from({ length: batch * time }, () => rng.below(V));
    return { inputs: random(), targets: random() };
  };
  const pieces = trainer.model.params.pieces.length;
  console.log(`${formatAdapter(adapter)}; GPT-2 with ${layers} layers, batch ${batch} x ${time}, ${pieces} pieces`);
  const warm = await trainer.trainOn(next());
  console.log(`warm-up step (compiles): ${(warm.milliseconds / 1000).toFixed(1)} s`);
  if (options.step) {
    const step = await trainer.trainOn(next());
    console.log(
      `one step in one submission: ${(step.milliseconds / 1000).toFixed(1)} s, ` +
        `${step.tokensPerSecond.toFixed(3)} tokens/s`,
    );
  }

  const host: [string, number][] = [];
  const timeHost = async (what: string, body: () => unknown) => {
    const start = performance.now();
    await body();
    host.push([what, performance.now() - start]);
  };
  const batchNow = next(), recorder = new Recorder();
  await timeHost(
    "setBatch (tokens, targets, buckets)",
    () => trainer.model.setBatch(batchNow.inputs, batchNow.targets),
  );
  await timeHost(
    "recording the step (setBatch again, bind groups)",
    () => trainer.encodeStep(recorder as unknown as GPUCommandEncoder, batchNow),
  );
  const timed = await replay(device, recorder.commands);
  await timeHost("reading the mean loss back", () => trainer.model.readMeanLoss());
  await timeHost("reading the gradient norm back", () => readBuffer(device, trainer.adamw.normSquared));
  trainer.destroy();
  const gpuMs = timed.reduce((sum, t) => sum + t.milliseconds, 0);
  console.log(`\n${timed.length} commands replayed one by one: ${(gpuMs / 1000).toFixed(2)} s\n`);
  console.log(table(timed, top));
  console.log(`\n${markdownTable(["host", "ms"], host.map(([what, ms]) => [what, ms.toFixed(1)]))}`);
  return 0;
}

if (import.meta.main) runCommand("profile", () => main(Deno.args));
