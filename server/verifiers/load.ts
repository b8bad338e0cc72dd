// Load a target model folder for an in-process verifier: f32 weights through the engine's
// loader, the tokenizer identity hash the drafts must match, and the tokenizer + eos ids the
// OpenAI-shaped /v1 API needs to turn text into tokens and back; and build any backend's
// verifier over a model folder (benchmarks).

import { basename } from 'node:path';
import type { Verifier } from './types.ts';
import { loadModelDir } from '../../src/engine/loader/node.ts';
import { stopTokenIds, type OpenModelOptions } from '../../src/engine/loader/model.ts';
import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { Tokenizer, tokenizerHash } from '../../src/engine/tokenizer.ts';
import type { TextModel } from '../openai.ts';

export class TargetLoadError extends Error {
  override name = 'TargetLoadError';
}

export interface TargetModel {
  config: LlamaConfig;
  weights: LlamaWeights;
  tokenizerHash: string;
  text: TextModel;
}

export async function loadTargetDir(dir: string, opts: OpenModelOptions = {}): Promise<TargetModel> {
  const m = await loadModelDir(dir, opts);
  if (!m.tokenizerJson) {
    throw new TargetLoadError(`${dir} has no tokenizer.json: the gateway needs it to check that drafts share the target's tokenizer`);
  }
  const tokenizer = new Tokenizer(m.tokenizerJson, m.tokenizerConfig);
  return {
    config: m.config, weights: m.weights, tokenizerHash: await tokenizerHash(m.tokenizerJson),
    text: { tokenizer, eosIds: stopTokenIds(m.generationConfig, m.config, tokenizer) },
  };
}

export type TargetBackend = 'cpu' | 'cpu-reference' | 'webgpu' | 'sidecar';

export interface TargetVerifierOptions {
  maxContext?: number;
  maxBatch?: number;
  maxDraft?: number;
  maxSessions?: number;
  /** sidecar: the command without --model (default Debian python3 + server/sidecar/main.py) and extra flags. */
  sidecarCmd?: string[];
  sidecarArgs?: string[];
  log?: (line: string) => void;
}

/**
 * A verifier over a model folder for any backend, built the one way its factory builds it, so
 * a benchmark measures each backend whatever its internals (cpu-reference: the plain CpuLlama
 * path, one session after the other, kept to compare against).
 */
export async function createTargetVerifier(backend: TargetBackend, dir: string, o: TargetVerifierOptions = {}): Promise<Verifier> {
  const maxContext = o.maxContext ?? 2048;
  if (backend === 'sidecar') {
    const { createSidecarVerifier } = await import('./sidecar.ts');
    const argv = [...(o.sidecarCmd ?? ['/usr/bin/python3', 'server/sidecar/main.py']), '--model', dir,
      '--max-batch', String(o.maxBatch ?? 16), '--max-sessions', String((o.maxSessions ?? 64) + 1), '--max-context', String(maxContext), ...(o.sidecarArgs ?? [])];
    return createSidecarVerifier({ cmds: [argv], log: o.log ?? (() => undefined) });
  }
  const m = await loadTargetDir(dir);
  const common = { config: m.config, weights: m.weights, model: basename(dir), tokenizerHash: m.tokenizerHash, maxContext, maxBatch: o.maxBatch, maxDraft: o.maxDraft };
  if (backend === 'webgpu') {
    const { createWebGpuVerifier } = await import('./webgpu.ts');
    return createWebGpuVerifier({ ...common, maxSessions: o.maxSessions });
  }
  const { createCpuVerifier } = await import('./cpu.ts');
  return createCpuVerifier({ ...common, engine: backend === 'cpu-reference' ? 'reference' : 'batched' });
}
