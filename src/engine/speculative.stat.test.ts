// Statistical exactness at temperature > 0: speculative sampling must be indistinguishable
// from target-only sampling. Over thousands of seeded runs from one prompt, the token emitted at
// each position j is tested against the target's own distribution given the prefix that run
// produced: expected count of v = Σ_runs p(v | prefix_run) (conditionally independent draws, so
// Pearson's statistic is ~chi-square, slightly conservative). The correct rule must pass
// (p > 0.01 at every position); two deliberately broken rules must fail (p < 0.01), which
// shows the test has power. Seeds are fixed, so the test is deterministic. A scripted policy
// mixes k = 0 stretches (the target sampling its own tokens) with verify rounds in one run.

import { describe, expect, it } from 'vitest';
import { acceptBlock } from './accept.ts';
import { LocalTarget } from './local-target.ts';
import { probOf, processedDist, sample, type SamplingParams } from './sampling.ts';
import { type KPolicy, speculate } from './speculative.ts';
import type { TargetLink } from './target-link.ts';
import { type ModelPair, tinyPair } from './spec-fixtures.ts';
import { chiSquareFit } from './stats.ts';

// vocab 64 keeps counts per token decent; heavy weight noise and T <= 0.8 make q differ from p
// (acceptance ~0.45), so rejections are common and a wrong correction distribution shows
const shape = { vocabSize: 64, hiddenSize: 32, intermediateSize: 67, numHeads: 4, numKvHeads: 2, headDim: 8 };
const noisy = tinyPair({ seed: 8, noise: 1, config: shape });
// pipelining only reuses drafted tokens after a fully accepted block: that needs a closer draft
const close = tinyPair({ seed: 8, noise: 0.2, config: shape });
const vocab = shape.vocabSize;
const prompt = [5, 17, 42];
const POSITIONS = 5; // generated positions 0..4; 0 comes from the prefill, 1..4 from verify rounds
const TRIALS = 1500;

type Rule = typeof acceptBlock;

/** Accepts every draft token: emits q instead of p. */
const acceptAlways: Rule = (logits, v, draft, _dists, params, rng) => ({
  accepted: draft.length,
  token: sample(processedDist(logits, params, draft.length * v, v), rng),
});

/** Correct acceptance test, but the correction is drawn from p instead of norm(max(0, p − q)). */
const resampleFromP: Rule = (logits, v, draft, dists, params, rng) => {
  for (let i = 0; i < draft.length; i++) {
    const p = processedDist(logits, params, i * v, v);
    const pd = probOf(p, draft[i]);
    const qd = probOf(dists![i], draft[i]);
    if (!(qd > 0 && pd > 0 && (pd >= qd || rng.uniform() * qd < pd))) return { accepted: i, token: sample(p, rng) };
  }
  return { accepted: draft.length, token: sample(processedDist(logits, params, draft.length * v, v), rng) };
};

const macrotask = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Holds each verdict back for a few event-loop turns, so a pipelined controller drafts ahead (cheaper than real timers). */
function yielding(inner: LocalTarget): TargetLink {
  return {
    get targetPasses() {
      return inner.targetPasses;
    },
    open: (p, s) => inner.open(p, s),
    verify: async (d, q) => {
      for (let i = 0; i < 3; i++) await macrotask();
      const v = await inner.verify(d, q);
      for (let i = 0; i < 3; i++) await macrotask();
      return v;
    },
    generate: (n, f) => inner.generate(n, f),
    close: () => inner.close(),
  };
}

interface Setting {
  pair: ModelPair;
  params: Omit<SamplingParams, 'seed'>;
  k?: number;
  adaptive?: boolean;
  pipeline?: boolean;
  /** A fresh policy per run (scripted k sequences, k = 0 included). */
  policy?: () => KPolicy;
}

/** Cycles through ks; a 0 is a stretch of `stretch` tokens the target streams alone. */
function scripted(ks: number[], stretch: number): () => KPolicy {
  return () => {
    let i = 0;
    return {
      alpha: 0.5,
      choose: () => ks[i++ % ks.length],
      stretchTokens: () => stretch,
      observeRound: () => undefined,
      observeDraft: () => undefined,
      observeCatchUp: () => undefined,
      observeStretch: () => undefined,
    };
  };
}

/** p-values per generated position (1..POSITIONS-1) and the acceptance rate seen. */
async function positionPValues(s: Setting, rule: Rule, trials: number): Promise<{ pValues: number[]; acceptance: number; pipelineHits: number }> {
  const { pair } = s;
  const oracle = pair.newTarget(64);
  const counts = Array.from({ length: POSITIONS }, () => new Map<number, number>());
  const expected = Array.from({ length: POSITIONS }, () => new Map<number, number>());
  let drafted = 0;
  let accepted = 0;
  let pipelineHits = 0;
  for (let t = 0; t < trials; t++) {
    const params: SamplingParams = { ...s.params, seed: 1000 + t };
    const local = new LocalTarget(pair.newTarget(64), { rule });
    // pipelining needs a verdict in flight long enough to draft past the block
    const link = s.pipeline ? yielding(local) : local;
    const r = await speculate(pair.newDraft(64), link, prompt, { params, maxTokens: POSITIONS, k: s.k, adaptive: s.adaptive, pipeline: s.pipeline, policy: s.policy?.() });
    drafted += r.stats.draftedTokens;
    accepted += r.stats.acceptedTokens;
    pipelineHits += r.stats.pipelineHits;
    // the target's own distribution at every generated position, given this run's prefix
    const seq = [...prompt, ...r.tokens];
    const logits = oracle.forwardSync(seq.slice(0, -1), 0);
    for (let j = 0; j < POSITIONS; j++) {
      const p = processedDist(logits, params, (prompt.length - 1 + j) * vocab, vocab);
      const e = expected[j];
      for (let i = 0; i < p.ids.length; i++) e.set(p.ids[i], (e.get(p.ids[i]) ?? 0) + p.probs[i]);
      counts[j].set(r.tokens[j], (counts[j].get(r.tokens[j]) ?? 0) + 1);
    }
  }
  const pValues: number[] = [];
  for (let j = 1; j < POSITIONS; j++) {
    const probs = new Map([...expected[j]].map(([id, e]) => [id, e / trials] as [number, number]));
    pValues.push(chiSquareFit(counts[j], probs).pValue);
  }
  if (process.env.DUET_STAT_LOG) console.log(JSON.stringify({ setting: { ...s, pair: undefined }, rule: rule.name, pValues, acceptance: accepted / drafted, pipelineHits }));
  return { pValues, acceptance: accepted / drafted, pipelineHits };
}

describe('speculative sampling matches target-only sampling (chi-square)', () => {
  const plain: Setting = { pair: noisy, params: { temperature: 0.5, topK: 0, topP: 1 }, k: 2 };
  const filtered: Setting = { pair: close, params: { temperature: 0.8, topK: 12, topP: 0.9 }, k: 1, pipeline: true };

  it('T = 0.5, k = 2: p > 0.01 at positions 1..4', async () => {
    const { pValues, acceptance } = await positionPValues(plain, acceptBlock, TRIALS);
    expect(acceptance).toBeGreaterThan(0.2);
    expect(acceptance).toBeLessThan(0.8);
    for (const [j, pv] of pValues.entries()) expect(pv, `position ${j + 1}: p = ${pv}`).toBeGreaterThan(0.01);
  });

  it('T = 0.8, top-k 12, top-p 0.9, k = 1, pipelined: p > 0.01 at positions 1..4', async () => {
    const { pValues, pipelineHits } = await positionPValues(filtered, acceptBlock, 800);
    expect(pipelineHits).toBeGreaterThan(20);
    for (const [j, pv] of pValues.entries()) expect(pv, `position ${j + 1}: p = ${pv}`).toBeGreaterThan(0.01);
  });

  it('T = 0.5, k = 0 stretches mixed with verify rounds (0, 2, 0, 1; stretches of 1): p > 0.01 at positions 1..4', async () => {
    // position 1 is streamed, 2..3 or so verified, then streamed again: both sources at several positions
    const mixed: Setting = { ...plain, k: undefined, policy: scripted([0, 2, 0, 1], 1) };
    const { pValues } = await positionPValues(mixed, acceptBlock, TRIALS);
    for (const [j, pv] of pValues.entries()) expect(pv, `position ${j + 1}: p = ${pv}`).toBeGreaterThan(0.01);
  });

  it('detects a rule that accepts every draft token (p < 0.01)', async () => {
    const { pValues } = await positionPValues(plain, acceptAlways, 400);
    expect(Math.min(...pValues), `p-values ${pValues}`).toBeLessThan(0.01);
  });

  it('detects a rule that resamples from p instead of max(0, p − q) (p < 0.01)', async () => {
    const { pValues } = await positionPValues(plain, resampleFromP, TRIALS);
    expect(Math.min(...pValues), `p-values ${pValues}`).toBeLessThan(0.01);
  });
});
