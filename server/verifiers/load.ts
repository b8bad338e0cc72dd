// Load a target model folder for an in-process verifier: f32 weights through the engine's
// loader, and the tokenizer identity hash the drafts must match.

import { loadModelDir } from '../../src/engine/loader/node.ts';
import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { tokenizerHash } from '../../src/engine/tokenizer.ts';

export class TargetLoadError extends Error {
  override name = 'TargetLoadError';
}

export interface TargetModel {
  config: LlamaConfig;
  weights: LlamaWeights;
  tokenizerHash: string;
}

export async function loadTargetDir(dir: string): Promise<TargetModel> {
  const m = await loadModelDir(dir);
  if (!m.tokenizerJson) {
    throw new TargetLoadError(`${dir} has no tokenizer.json: the gateway needs it to check that drafts share the target's tokenizer`);
  }
  return { config: m.config, weights: m.weights, tokenizerHash: await tokenizerHash(m.tokenizerJson) };
}
