// Smoke test of `duet bench kernels`: a shrunken --quick run (one shape, two formats, small working set,
// a 2-layer 1B-width engine with a small vocabulary) yields well-formed JSON: every field
// present, finite and positive, one copy baseline per matmul. Asserts no speed.
import { describe, expect, it } from 'vitest';
import { BenchUsageError, run } from '../../src/cli/bench.ts';
import { Q4_VARIANTS, SHAPES, runKernelBench } from './kernels.ts';

const positive = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v > 0;

describe('duet bench kernels', () => {
  it('--quick gives well-formed JSON', async () => {
    const shapes = SHAPES.filter((s) => s.model === '1B' && s.rows === 512); // k_proj/v_proj: the smallest
    const r = await runKernelBench({ quick: true, shapes, formats: ['q4', 'bf16'], workingSetBytes: 4 << 20, reps: 1, engineLayers: 1, engineVocab: 4096 });
    const json = JSON.parse(JSON.stringify(r));
    expect(json.suite).toBe('kernels');
    expect(typeof json.adapter).toBe('string');
    expect(['timestamp-query', 'wall-clock']).toContain(json.timing);
    // q4 runs every variant (the exact default and the q8-activation one), bf16 one.
    expect(json.matmul).toHaveLength(shapes.length * (1 + Q4_VARIANTS.length));
    expect(Object.keys(json.q4Variants)).toContain(json.q4Headline.variant);
    expect(json.summary.q4.ratio1B).toBe(json.q4Headline.ratio1B);
    expect(json.copy).toHaveLength(json.matmul.length);
    for (const m of json.matmul) {
      expect(['q4', 'bf16']).toContain(m.format);
      for (const k of ['rows', 'cols', 'bytes', 'ms', 'gbps', 'copyGbps', 'ratio', 'msMin', 'copyMsMin', 'ratioBest']) expect(positive(m[k]), `${k} = ${m[k]}`).toBe(true);
      expect(m.gbps).toBeCloseTo(m.bytes / (m.ms * 1e6), 6);
    }
    for (const f of ['q4', 'bf16']) {
      for (const k of ['gbps1B', 'copyGbps1B', 'ratio1B', 'ratioBest1B']) expect(positive(json.summary[f][k]), `${f}.${k}`).toBe(true);
      expect(json.summary[f].ratio3B).toBeNull(); // no 3B shapes in this run
    }
    expect(positive(json.engine.tokPerS)).toBe(true);
    expect(positive(json.engine.bufferBytes)).toBe(true);
    expect(json.engine.format).toBe('q4');
  });

  it('bad arguments are a BenchUsageError', async () => {
    await expect(run(['kernels', '--bogus'])).rejects.toThrow(BenchUsageError);
    await expect(run(['kernels', '--formats', 'q3', '--no-engine'])).rejects.toThrow(BenchUsageError);
    await expect(run(['kernels', '--json'])).rejects.toThrow(BenchUsageError);
  });
});
