// The WGSL engine's public surface (browser worker, Node verifier, CLI). Typical use:
//   const ctx = await requestDevice();                       // src/kernels/gpu.ts
//   const lm = await createEngine(ctx, config, weightsOrTensorStream, { format: 'q4', maxContext: 4096 });
//   const ids = await lm.forwardArgmax(promptIds, 0);          // greedy: N words read back
//   const top = await lm.forwardTopK([id], lm.length, 40);     // sampling: 2k words per row
//   lm.rollback(n);                                            // O(1)
// lm.memory / lm.bufferBytes report the GPU buffers; planBuffers() gives them without a device.
// Many sessions on one copy of the weights (the Node verifier):
//   const model = await GpuModel.create(ctx, config, weights, { maxContext: 2048, invariant: true });
//   const a = await model.openSession(), b = await model.openSession();   // a KV cache each
//   const [la, lb] = await model.forwardBatch([{ session: a, tokens: [t], startPos: a.length },
//                                              { session: b, tokens: block, startPos: b.length }], { kind: 'logits' });
export { type BatchItem, type ForwardStats, GpuModel, GpuSession, type Output, PackedWeightsError, WebGpuLlama, createEngine, type MemoryReport, type StreamItem, type StreamedPacked, type StreamedTensor, type WeightsInput } from './llama.ts';
export { type GpuEngineOptions, type MemoryPlan, planBuffers, planSessionKv, resolveOptions, sessionKvBytes } from './plan.ts';
export type { TopkRow } from '../../kernels/topk.ts';
