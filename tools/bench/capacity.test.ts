// The capacity benchmark's harness on a small random pair: a short run must finish with no
// errors, account every generated token, and report batches that actually grouped sessions.
// (Speed is measured by `duet bench spec`, never asserted here.)
import { describe, expect, it } from 'vitest';
import { randomPrompts, tinyPair } from '../../src/engine/spec-fixtures.ts';
import { runCapacity } from './capacity.ts';
import { BenchUsageError, run } from '../../src/cli/bench.ts';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('runCapacity', () => {
  const p = tinyPair({ seed: 4, noise: 0.2, config: { hiddenSize: 32, intermediateSize: 67, numHeads: 2, numKvHeads: 1, headDim: 16, vocabSize: 263 } });
  const pair = { name: 'tiny-random', config: p.config, target: p.target, draftConfig: p.config, draft: p.draft, tokenizerHash: 'h', prompts: randomPrompts(8, 263, 1, 6, [2]), eosTokenIds: [] };

  it('runs concurrent speculative and baseline sessions through an in-process gateway', async () => {
    const r = await runCapacity({ pair, sessions: 6, seconds: 1, maxTokens: 12, k: 3 });
    expect(r.results.map((x) => x.mode)).toEqual(['speculative', 'baseline']);
    for (const m of r.results) {
      expect(m.errors, m.errorSamples.join('\n')).toBe(0);
      expect(m.gatewayErrors).toEqual({});
      expect(m.generations).toBeGreaterThanOrEqual(6);
      // every generation runs to maxTokens (no eos here) except the ones the deadline cut short, at most one per session
      expect(m.generatedTokens).toBeLessThanOrEqual(m.generations * 12);
      expect(m.generatedTokens).toBeGreaterThan((m.generations - 6) * 12 - 1);
      expect(m.latencyMs.n).toBeGreaterThan(0);
      expect(m.latencyMs.p99).toBeGreaterThanOrEqual(m.latencyMs.p50);
    }
    const [spec, base] = r.results;
    expect(base.targetPassesPerToken).toBe(1);
    // accounting: one pass per prefill plus one per verify; never more passes than tokens
    expect(spec.targetPasses).toBe(spec.generations + spec.latencyMs.n);
    expect(spec.targetPassesPerToken).toBeLessThanOrEqual(1);
    expect(spec.meanBatch).toBeGreaterThan(1);
    // drafts came from the shared memo (filled before the window); a miss would run the real draft
    expect(r.draft).toBe('memo');
    expect(r.memoWarmupMs).toBeGreaterThan(0);
    expect(spec.draftMemo!.hits).toBeGreaterThan(spec.draftMemo!.misses);
    expect(base.draftMemo).toBeNull();
  });

  it("draft: 'live' runs a real draft per session, with the same accounting", async () => {
    const r = await runCapacity({ pair, sessions: 3, seconds: 1, maxTokens: 12, k: 3, modes: ['speculative'], draft: 'live' });
    const [spec] = r.results;
    expect(r.draft).toBe('live');
    expect(r.memoWarmupMs).toBeNull();
    expect(spec.errors, spec.errorSamples.join('\n')).toBe(0);
    expect(spec.draftMemo).toBeNull();
    expect(spec.generations).toBeGreaterThanOrEqual(3);
    expect(spec.targetPasses).toBe(spec.generations + spec.latencyMs.n);
  });

  it('duet bench capacity: one short run on the bundled pair writes JSON with its provenance; bad options are usage errors', async () => {
    await expect(run(['capacity', '--verifier', 'gpu'])).rejects.toThrow(BenchUsageError);
    await expect(run(['capacity', '--sessions', '1,0'])).rejects.toThrow(/whole number/);
    const out = join(mkdtempSync(join(tmpdir(), 'duet-cap-')), 'cap.json');
    expect(await run(['capacity', '--sessions', '2', '--seconds', '1', '--max-tokens', '6', '--json', out])).toBe(0);
    const r = JSON.parse(readFileSync(out, 'utf8'));
    expect(r.suite).toBe('capacity');
    expect(r.backend).toBe('cpu');
    expect(typeof r.date).toBe('string');
    expect(r.machine.cores).toBeGreaterThan(0);
    expect(r.runs).toHaveLength(1);
    expect(r.runs[0].results.map((m: { mode: string }) => m.mode)).toEqual(['speculative', 'baseline']);
    for (const m of r.runs[0].results) expect(m.errors, m.errorSamples.join('\n')).toBe(0);
  }, 120_000);
});
