// Where a tiny-target decode token's time goes on the WebGPU engine, for one or more engine
// builds interleaved in one run (the machine may be loaded: compare ratios within a run).
// Usage: node tools/bench/webgpu-overhead.mjs ENGINE_INDEX_TS... e.g. the current engine and
// an old one unpacked with `git archive <commit> src | tar -x -C /tmp/old` (+ node_modules link).
// Per engine (medians of 3 rounds): dispatches and JS encode ms of one token, GPU ms per token
// (R submissions back to back, one wait), and ms per decode token with logits / argmax read back.
import { requestDevice } from '../../src/kernels/gpu.ts';
import { loadModelDir } from '../../src/engine/loader/node.ts';
const engines = process.argv.slice(2);
const m = await loadModelDir('public/models/tiny-target');
const ctx = await requestDevice();
const dev = ctx.device;
const R = Number(process.env.R ?? 16);
const list: { name: string; e: any; encode: (p: GPUComputePassEncoder) => void }[] = [];
for (const path of engines) {
  const mod = await import(path);
  const e: any = await mod.createEngine(ctx, m.config, m.weights, { maxContext: 256, format: 'f32', kvFormat: 'f32', invariant: true });
  await e.forward([1, 2, 3, 4, 5], 0);
  const encode = e.model
    ? (p: GPUComputePassEncoder) => e.model.encodeForward(p, 1, [{ session: e.session, m: 1, startPos: 5 }], { kind: 'logits' })
    : (p: GPUComputePassEncoder) => e.encodeForward(p, 1, 5, { kind: 'logits' });
  list.push({ name: path, e, encode });
}
const res: Record<string, Record<string, number[]>> = {};
const put = (n: string, k: string, v: number) => ((res[n] ??= {})[k] ??= []).push(v);
for (let rep = 0; rep < 3; rep++) {
  for (const { name, e, encode } of list) {
    // dispatches and JS encode time of one token
    let n = 0;
    let enc = dev.createCommandEncoder(); let pass = enc.beginComputePass();
    const counting = { setPipeline: (x: any) => pass.setPipeline(x), setBindGroup: (i: number, g: any) => pass.setBindGroup(i, g), dispatchWorkgroups: (x: number, y?: number, z?: number) => (n++, pass.dispatchWorkgroups(x, y, z)) } as unknown as GPUComputePassEncoder;
    let t0 = performance.now(); encode(counting); put(name, 'encodeMs', performance.now() - t0);
    pass.end(); dev.queue.submit([enc.finish()]); await dev.queue.onSubmittedWorkDone();
    put(name, 'dispatches', n);
    // GPU time per token: R submissions back to back, one wait at the end
    t0 = performance.now();
    for (let i = 0; i < R; i++) { enc = dev.createCommandEncoder(); pass = enc.beginComputePass(); encode(pass); pass.end(); dev.queue.submit([enc.finish()]); }
    await dev.queue.onSubmittedWorkDone();
    put(name, 'gpuMsPerToken', (performance.now() - t0) / R);
    // a real decode token (logits read back) and a greedy one (argmax read back)
    e.rollback(5);
    t0 = performance.now(); for (let i = 0; i < R; i++) await e.forward([7 + i], 5 + i); put(name, 'forwardMs', (performance.now() - t0) / R);
    e.rollback(5);
    t0 = performance.now(); for (let i = 0; i < R; i++) await e.forwardArgmax([7 + i], 5 + i); put(name, 'argmaxMs', (performance.now() - t0) / R);
  }
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
for (const [n, r] of Object.entries(res)) console.log(n, Object.fromEntries(Object.entries(r).map(([k, v]) => [k, +med(v).toFixed(2)])), 'tok/s (argmax)', (1000 / med(r.argmaxMs)).toFixed(1));
// the floor of one submission round trip and one map of an idle buffer
let t0 = performance.now();
for (let i = 0; i < R; i++) { dev.queue.submit([dev.createCommandEncoder().finish()]); await dev.queue.onSubmittedWorkDone(); }
console.log('empty submit + wait ms', ((performance.now() - t0) / R).toFixed(3));
const st = dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
t0 = performance.now();
for (let i = 0; i < R; i++) { await st.mapAsync(GPUMapMode.READ); st.unmap(); }
console.log('mapAsync of an idle buffer ms', ((performance.now() - t0) / R).toFixed(3));
if (list.length > 1) {
  const [a, b] = [res[list[0].name], res[list[list.length - 1].name]];
  console.log('ratio last/first engine tok/s: argmax', (med(a.argmaxMs) / med(b.argmaxMs)).toFixed(2), 'logits', (med(a.forwardMs) / med(b.forwardMs)).toFixed(2), 'GPU-only', (med(a.gpuMsPerToken) / med(b.gpuMsPerToken)).toFixed(2));
}
