// The `cpu` verifier backend: the TypeScript reference forward (CpuLlama), one KV cache per
// session over weights loaded once. Exact and slow; CI and the e2e suite use it on the tiny
// target.

import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { CpuLlama } from '../../src/engine/reference.ts';
import { LocalVerifier } from './local.ts';

export interface CpuVerifierOptions {
  config: LlamaConfig;
  weights: LlamaWeights;
  model: string;
  tokenizerHash: string;
  /** KV positions per session. */
  maxContext?: number;
  maxBatch?: number;
  maxDraft?: number;
}

export function createCpuVerifier(o: CpuVerifierOptions): LocalVerifier {
  const maxContext = Math.min(o.maxContext ?? 2048, o.config.maxPositionEmbeddings);
  return new LocalVerifier({
    info: {
      backend: 'cpu', model: o.model, tokenizerHash: o.tokenizerHash, vocabSize: o.config.vocabSize,
      maxContext, maxBatch: o.maxBatch ?? 16, device: 'cpu (TypeScript reference)', resume: true,
    },
    makeModel: () => new CpuLlama(o.config, o.weights, maxContext),
    maxDraft: o.maxDraft ?? 16,
  });
}
