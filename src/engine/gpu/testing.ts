// Shared by the engine tests: random-weight models in a given format, and the scenario every
// engine test runs against CpuLlama (prefill, decode steps, rollback + verify block).
import { expect } from 'vitest';
import type { LlamaConfig } from '../config.ts';
import { CpuLlama } from '../reference.ts';
import { type LlamaWeights, expectedShapes, layerTensorNames, randomWeights } from '../weights.ts';
import { type WeightFormat, dequantize, packMatrix } from '../quantize.ts';
import type { GpuContext } from '../../kernels/gpu.ts';
import { compare } from '../../kernels/testing.ts';
import { type GpuEngineOptions, WebGpuLlama } from './index.ts';

/** Replace every matrix by what `format` stores (norms stay f32, as the engine keeps them). */
export function roundTrip(c: LlamaConfig, w: LlamaWeights, format: WeightFormat): LlamaWeights {
  if (format === 'f32') return w;
  const q = (m: Float32Array, rows: number, cols: number) => dequantize(packMatrix(m, rows, cols, format));
  const shapes = expectedShapes(c);
  return {
    embed: q(w.embed, c.vocabSize, c.hiddenSize),
    finalNorm: w.finalNorm,
    lmHead: w.lmHead && q(w.lmHead, c.vocabSize, c.hiddenSize),
    layers: w.layers.map((L, l) => {
      const names = layerTensorNames(l);
      const r = { ...L };
      for (const k of ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const) {
        const [rows, cols] = shapes.get(names[k])!;
        r[k] = q(L[k], rows, cols);
      }
      return r;
    }),
  };
}

export const argmaxRows = (logits: Float32Array, n: number, vocab: number): number[] =>
  Array.from({ length: n }, (_, r) => {
    let b = 0;
    for (let j = 1; j < vocab; j++) if (logits[r * vocab + j] > logits[r * vocab + b]) b = j;
    return b;
  });

export function prompt(n: number, vocab: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729 + ((i * i) % 13)) % vocab);
}

/**
 * Prompt, decode steps, rollback + verify, each compared with the CPU reference.
 * Returns the worst NMSE seen.
 */
export async function scenario(gpu: WebGpuLlama, cpu: CpuLlama, promptLen: number, maxNmse: number, decodeSteps = 3, verifyLen = 5): Promise<number> {
  const V = gpu.config.vocabSize;
  let worst = 0;
  const check = async (tokens: number[], startPos: number, what: string) => {
    const [g, c] = [await gpu.forward(tokens, startPos), await cpu.forward(tokens, startPos)];
    const cmp = compare(g, c, maxNmse, what);
    worst = Math.max(worst, cmp.nmse);
    expect(cmp.ok, cmp.summary).toBe(true);
    const ga = argmaxRows(g, tokens.length, V);
    expect(ga, `${what}: argmax`).toEqual(argmaxRows(c, tokens.length, V));
    expect(gpu.length).toBe(cpu.length);
    return ga;
  };
  const p = prompt(promptLen, V, promptLen);
  let next = (await check(p, 0, 'prefill')).at(-1)!;
  for (let s = 0; s < decodeSteps; s++) next = (await check([next], gpu.length, `decode ${s}`))[0];
  // Verify block after a rollback of 2 positions: verifyLen tokens at startPos = length - 2.
  const start = gpu.length - 2;
  gpu.rollback(start);
  cpu.rollback(start);
  await check([next, 3 % V, 5 % V, next, 1].slice(0, verifyLen), start, `verify ${verifyLen} after rollback`);
  return worst;
}

export async function build(ctx: GpuContext, c: LlamaConfig, format: WeightFormat, opts: GpuEngineOptions, seed = 1) {
  const w = roundTrip(c, randomWeights(c, seed), format);
  const gpu = await WebGpuLlama.create(ctx, c, w, { format, ...opts });
  const cpu = new CpuLlama(c, w, gpu.maxContext);
  return { gpu, cpu, w };
}

