// The committed tiny pair, loaded from disk by the engine's loader and run by the CPU
// reference, against the logits PyTorch computed from the same exported weights (fixtures
// written by `tools/train/train.py export`). The target is bf16 and the draft f16 on disk:
// both are exact in f32, so the only differences are f32 summation order.
// Tolerance: per position, max |ts - torch| <= 1e-4 * max|torch| + 1e-4, and equal argmax
// wherever the top two PyTorch logits are more than 1e-3 apart.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModelDir } from '../../src/engine/loader/node.ts';
import { CpuLlama } from '../../src/engine/reference.ts';

interface LogitsFixture {
  tokens: number[];
  vocab: number;
  argmax: number[];
  full_positions: number[];
  logits: number[][];
  top2_gap: number[];
}

const root = join(import.meta.dirname, '../..');

describe.each([
  ['tiny-target', 'target-logits.json', 'BF16'],
  ['tiny-draft', 'draft-logits.json', 'F16'],
])('%s: CPU reference vs PyTorch', (dir, fixtureFile, dtype) => {
  const fx = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', fixtureFile), 'utf8')) as LogitsFixture;

  it(`loads (${dtype} safetensors) and matches PyTorch logits`, async () => {
    const header = readFileSync(join(root, 'public/models', dir, 'model.safetensors'));
    const n = Number(header.readBigUInt64LE(0));
    const tensors = JSON.parse(header.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype?: string }>;
    expect(tensors['model.embed_tokens.weight']?.dtype).toBe(dtype);
    expect(tensors['lm_head.weight']).toBeUndefined(); // tied

    const m = await loadModelDir(join(root, 'public/models', dir));
    expect(m.config.tieWordEmbeddings).toBe(true);
    expect(m.config.ropeScaling).not.toBeNull();
    expect(m.config.vocabSize).toBe(fx.vocab);
    const model = new CpuLlama(m.config, m.weights);
    const logits = await model.forward(fx.tokens, 0);
    const V = fx.vocab;

    const argmax = fx.tokens.map((_, t) => {
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[t * V + i] > logits[t * V + best]) best = i;
      return best;
    });
    fx.tokens.forEach((_, t) => {
      if (fx.top2_gap[t] > 1e-3) expect(argmax[t], `argmax at position ${t}`).toBe(fx.argmax[t]);
    });

    fx.full_positions.forEach((t, j) => {
      const ref = fx.logits[j];
      let maxErr = 0, where = -1, scale = 0;
      for (let i = 0; i < V; i++) {
        scale = Math.max(scale, Math.abs(ref[i]));
        const e = Math.abs(logits[t * V + i] - ref[i]);
        if (!(e <= maxErr)) { maxErr = e; where = i; } // NaN lands here too
      }
      expect(maxErr, `position ${t}: max error ${maxErr} at vocab ${where} (scale ${scale})`).toBeLessThanOrEqual(1e-4 * scale + 1e-4);
    });
  }, 60_000);
});
