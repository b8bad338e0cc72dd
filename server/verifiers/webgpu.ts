// The `webgpu` verifier backend: the same WGSL engine the browser runs (src/engine/gpu),
// in Node on Dawn (npm `webgpu`; SwiftShader where there is no GPU). One WebGpuLlama per
// session, since the engine keeps one KV cache per instance; each instance also holds its
// own copy of the weights, so GPU memory bounds the sessions: the plan of every new engine
// is checked against what is left of memoryBudgetBytes before anything is allocated.

import { requestDevice, type GpuContext } from '../../src/kernels/gpu.ts';
import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { createEngine, type GpuEngineOptions, type WebGpuLlama } from '../../src/engine/gpu/index.ts';
import { LocalVerifier } from './local.ts';

export interface WebGpuVerifierOptions {
  config: LlamaConfig;
  weights: LlamaWeights;
  model: string;
  tokenizerHash: string;
  maxContext?: number;
  maxBatch?: number;
  maxDraft?: number;
  maxSessions?: number;
  /** Total GPU bytes all sessions' engines may use; default: no check beyond the device's own. */
  memoryBudgetBytes?: number;
  /** An existing device (tests share one). */
  ctx?: GpuContext;
  /**
   * Weight and KV storage. Default f32 for both: the target decides which tokens stand, so
   * by default it computes like the CPU reference; q8/q4 weights or an f16 KV cache trade
   * that for memory.
   */
  format?: GpuEngineOptions['format'];
  kvFormat?: GpuEngineOptions['kvFormat'];
}

export async function createWebGpuVerifier(o: WebGpuVerifierOptions): Promise<LocalVerifier> {
  const ctx = o.ctx ?? (await requestDevice());
  const maxContext = Math.min(o.maxContext ?? 2048, o.config.maxPositionEmbeddings);
  const engines = new Set<WebGpuLlama>();
  let usedBytes = 0;
  const verifier = new LocalVerifier({
    info: {
      backend: 'webgpu', model: o.model, tokenizerHash: o.tokenizerHash, vocabSize: o.config.vocabSize,
      maxContext, maxBatch: o.maxBatch ?? 16, device: `webgpu: ${ctx.adapterName} (${o.format ?? 'f32'} weights, ${o.kvFormat ?? 'f32'} KV)`, resume: true,
    },
    makeModel: async () => {
      const budget = o.memoryBudgetBytes === undefined ? undefined : o.memoryBudgetBytes - usedBytes;
      const e = await createEngine(ctx, o.config, o.weights, { maxContext, memoryBudgetBytes: budget, format: o.format ?? 'f32', kvFormat: o.kvFormat ?? 'f32' });
      engines.add(e);
      usedBytes += e.plan.total;
      const dispose = e.dispose.bind(e);
      e.dispose = () => {
        if (engines.delete(e)) usedBytes -= e.plan.total;
        dispose();
      };
      return e;
    },
    maxDraft: o.maxDraft ?? 16,
    onDispose: () => {
      for (const e of [...engines]) e.dispose();
      if (!o.ctx) ctx.device.destroy();
    },
  });
  return verifier;
}
