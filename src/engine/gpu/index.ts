// The WGSL engine's public surface (browser worker, Node verifier, CLI).
export { WebGpuLlama, createEngine, type MemoryReport, type StreamedTensor, type WeightsInput } from './llama.ts';
export { type GpuEngineOptions, type MemoryPlan, planBuffers, resolveOptions } from './plan.ts';
export type { TopkRow } from '../../kernels/topk.ts';
