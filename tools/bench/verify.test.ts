// Smoke test of `duet bench verify`: a shrunken --quick run (tiny target; the cpu, cpu-reference
// and sidecar backends, the sidecar in float32 and bfloat16; B ∈ {1, 2} × T ∈ {1, 3}) gives well-formed JSON: every cell present,
// finite and positive, ratios relative to (1, 1), the cpu summary filled. Asserts no speed.
import { describe, expect, it } from 'vitest';
import { runVerifyBench } from './verify.ts';
import { BenchUsageError, run } from '../../src/cli/bench.ts';

const positive = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v > 0;

describe('duet bench verify', () => {
  it('--quick gives well-formed JSON for every backend asked for', async () => {
    const r = await runVerifyBench({ quick: true, backends: ['cpu', 'cpu-reference', 'sidecar', 'sidecar-bf16'], batches: [1, 2], tokens: [1, 3], reps: 1 });
    const json = JSON.parse(JSON.stringify(r));
    expect(json.suite).toBe('verify');
    expect(json.runs.map((x: { backend: string }) => x.backend)).toEqual(['cpu', 'cpu-reference', 'sidecar', 'sidecar-bf16']);
    // the sidecar's device line names the dtype it computes in
    expect(json.runs[2].device).toMatch(/float32/);
    expect(json.runs[3].device).toMatch(/bfloat16/);
    for (const run of json.runs) {
      expect(run.status, `${run.backend}: ${run.error}`).toBe('ok');
      expect(run.shape).toBe('tiny');
      expect(run.cells.map((c: { B: number; T: number }) => `${c.B}x${c.T}`)).toEqual(['1x1', '1x3', '2x1', '2x3']);
      for (const c of run.cells) for (const k of ['ms', 'ratio', 'tokPerS', 'reps']) expect(positive(c[k]), `${run.backend} ${k} = ${c[k]}`).toBe(true);
      expect(run.cells[0].ratio).toBe(1);
      expect(run.cells[1].ratio).toBeCloseTo(run.cells[1].ms / run.cells[0].ms, 9);
    }
    for (const k of ['cpuDecodeTokPerS', 'cpuReferenceDecodeTokPerS', 'decodeSpeedup']) expect(positive(json.summary[k]), k).toBe(true);
    expect(json.summary.cpuPass5OverDecode).toBeNull(); // no T = 5 in this run
  }, 120_000);

  it('is a registered suite; bad options are a BenchUsageError', async () => {
    await expect(run(['verify', '--bogus'])).rejects.toThrow(BenchUsageError);
  });
});
