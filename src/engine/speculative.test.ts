// Greedy exactness of the speculative controller in-process: for 20 prompts × k ∈ {1, 2, 4, 8}
// and adaptive k, with and without pipelining, the output equals target-only greedy output
// (LocalTarget.generate, itself checked against a no-cache oracle in local-target.test.ts).
// The draft is the target plus 5% weight noise, so acceptance is partial and rejections,
// corrections and rollbacks are exercised. Also: stopping rules, provenance, the k model.

import { beforeAll, describe, expect, it } from 'vitest';
import { LocalTarget } from './local-target.ts';
import { DelayedLink, KController, baseline, speculate } from './speculative.ts';
import { greedyOracle, randomPrompts, tinyPair } from './spec-fixtures.ts';
import type { SamplingParams } from './sampling.ts';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const pair = tinyPair({ seed: 5, noise: 0.05, config: { vocabSize: 257, hiddenSize: 48, intermediateSize: 97, numHeads: 6, numKvHeads: 2, headDim: 8 } });
const vocab = pair.config.vocabSize;
const N = 24;

describe('speculative greedy == target-only greedy', () => {
  const prompts = randomPrompts(20, vocab, 101, 12);
  const settings: { name: string; k?: number; adaptive?: boolean }[] = [
    { name: 'k=1', k: 1 }, { name: 'k=2', k: 2 }, { name: 'k=4', k: 4 }, { name: 'k=8', k: 8 }, { name: 'adaptive', adaptive: true },
  ];
  const wants: number[][] = [];
  beforeAll(async () => {
    for (const p of prompts) wants.push((await baseline(new LocalTarget(pair.newTarget()), p, { params: GREEDY, maxTokens: N })).tokens);
  });

  it('target-only baseline agrees with the no-cache oracle on the first prompts', () => {
    expect(wants.every((w) => w.length === N)).toBe(true);
    for (let i = 0; i < 3; i++) expect(wants[i], `prompt ${i}`).toEqual(greedyOracle(pair.newTarget(), prompts[i], N));
  });

  for (const pipeline of [false, true]) {
    it(`20 prompts × {k 1, 2, 4, 8, adaptive}, pipelining ${pipeline ? 'on' : 'off'}`, async () => {
      let drafted = 0;
      let accepted = 0;
      let rejections = 0;
      let hits = 0;
      for (const s of settings) {
        for (const [i, p] of prompts.entries()) {
          // pipelining needs a verdict that takes a while to come back: 4 ms of injected round trip
          const link = pipeline ? new DelayedLink(new LocalTarget(pair.newTarget()), 4) : new LocalTarget(pair.newTarget());
          const r = await speculate(pair.newDraft(), link, p, { params: GREEDY, maxTokens: N, k: s.k, adaptive: s.adaptive, pipeline });
          expect(r.tokens, `prompt ${i} ${s.name}`).toEqual(wants[i]);
          expect(r.stopReason).toBe('max-tokens');
          // one pass per verify round, the prefill, and one per token the target streamed alone (k = 0)
          expect(r.stats.targetPasses).toBe(r.stats.rounds + 1 + r.stats.streamedTokens);
          if (!s.adaptive) expect(r.kHistory.every((k) => k <= s.k!)).toBe(true);
          drafted += r.stats.draftedTokens;
          accepted += r.stats.acceptedTokens;
          rejections += r.provenance.filter((x) => x === 'correction').length;
          hits += r.stats.pipelineHits;
        }
      }
      // the draft is imperfect: both outcomes happen many times
      expect(accepted / drafted).toBeGreaterThan(0.3);
      expect(accepted / drafted).toBeLessThan(0.95);
      expect(rejections).toBeGreaterThan(100);
      if (pipeline) expect(hits).toBeGreaterThan(20);
    });
  }
});

describe('controller behaviour', () => {
  it('stops at eos exactly where target-only decoding does, and labels provenance', async () => {
    const p = [3, 1, 4, 1, 5];
    const want = (await baseline(new LocalTarget(pair.newTarget()), p, { params: GREEDY, maxTokens: N })).tokens;
    const eos = want[9];
    const cut = want.slice(0, want.indexOf(eos) + 1);
    const events: string[] = [];
    const r = await speculate(pair.newDraft(), new LocalTarget(pair.newTarget()), p, {
      params: GREEDY, maxTokens: N, k: 3, eosTokenIds: [eos], onToken: (e) => events.push(`${e.index}:${e.token}:${e.provenance}`),
    });
    expect(r.stopReason).toBe('eos');
    expect(r.tokens).toEqual(cut);
    expect(events.length).toBe(cut.length);
    expect(r.provenance[0]).toBe('target');
    expect(r.provenance.slice(1).every((x) => x === 'draft' || x === 'correction' || x === 'bonus')).toBe(true);
    const b = await baseline(new LocalTarget(pair.newTarget()), p, { params: GREEDY, maxTokens: N, eosTokenIds: [eos] });
    expect(b.tokens).toEqual(cut);
  });

  it('counts stats consistently and stops on abort', async () => {
    const p = [9, 8, 7];
    const r = await speculate(pair.newDraft(), new LocalTarget(pair.newTarget()), p, { params: GREEDY, maxTokens: 40, k: 4 });
    const s = r.stats;
    expect(r.tokens.length).toBe(40);
    expect(s.draftedTokens).toBe(r.kHistory.reduce((a, b) => a + b, 0));
    expect(s.acceptanceRate).toBeCloseTo(s.acceptedTokens / s.draftedTokens, 12);
    expect(s.tokensPerTargetPass).toBeCloseTo(40 / s.targetPasses, 12);
    // every round yields accepted + 1 tokens; the last round may be cut by maxTokens
    expect(1 + s.acceptedTokens + s.rounds).toBeGreaterThanOrEqual(40);
    expect(s.wallMs).toBeGreaterThan(0);
    const ac = new AbortController();
    const a = await speculate(pair.newDraft(), new LocalTarget(pair.newTarget()), p, {
      params: GREEDY, maxTokens: 40, k: 2, signal: ac.signal, onToken: (e) => e.index === 5 && ac.abort(),
    });
    expect(a.stopReason).toBe('abort');
    expect(a.tokens.length).toBeLessThan(10);
    expect(a.tokens).toEqual(r.tokens.slice(0, a.tokens.length));
  });
});

describe('context limit', () => {
  it('stops with "context" when the draft cache is full, output still a prefix of target-only', async () => {
    const p = [2, 7, 1, 8, 2];
    const want = (await baseline(new LocalTarget(pair.newTarget()), p, { params: GREEDY, maxTokens: 40 })).tokens;
    const r = await speculate(pair.newDraft(16), new LocalTarget(pair.newTarget()), p, { params: GREEDY, maxTokens: 40, k: 4 });
    expect(r.stopReason).toBe('context');
    expect(p.length + r.tokens.length).toBeLessThanOrEqual(16);
    expect(r.tokens.length).toBeGreaterThan(5);
    expect(r.tokens).toEqual(want.slice(0, r.tokens.length));
  });
});

describe('KController', () => {
  it('E(k) is the sum of α^i for i = 0..k', () => {
    const c = new KController(8);
    for (const a of [0, 0.3, 0.8, 0.999]) {
      for (let k = 1; k <= 8; k++) {
        let s = 0;
        for (let i = 0; i <= k; i++) s += a ** i;
        expect(c.expectedTokens(k, a)).toBeCloseTo(s, 9);
      }
    }
    expect(c.expectedTokens(4, 1)).toBe(5);
  });

  it('models verify time per k, and by a line through the seen k for unseen ones', () => {
    const c = new KController(8);
    for (let i = 0; i < 10; i++) for (const k of [2, 6]) c.observeRound(k, 1, 10 + 3 * (k + 1), 10 + 3 * (k + 1));
    expect(c.verifyTime(2)).toBeCloseTo(19, 9);
    expect(c.verifyTime(6)).toBeCloseTo(31, 9);
    const { a, b } = c.verifyLine();
    expect(a).toBeCloseTo(10, 9);
    expect(b).toBeCloseTo(3, 9);
    expect(c.verifyTime(4)).toBeCloseTo(25, 9);
    // a noisy, slow k = 1 does not make k = 4 look slow
    for (let i = 0; i < 30; i++) c.observeRound(1, 1, 200, 200);
    expect(c.verifyTime(6)).toBeCloseTo(31, 9);
  });

  it('drafts long blocks when acceptance is high and rounds are expensive, short ones otherwise', () => {
    const feed = (alphaHits: boolean, roundMs: number, verifyMs: number, draftMs: number): KController => {
      const c = new KController(8);
      for (let i = 0; i < 30; i++) {
        const k = 1 + (i % 8);
        c.observeRound(k, alphaHits ? k : 0, roundMs, verifyMs);
        c.observeDraft(draftMs);
      }
      return c;
    };
    // all accepted, 50 ms round trips, 1 ms drafts, flat verify → longest block
    expect(feed(true, 55, 5, 1).best()).toBe(8);
    // nothing accepted, drafts cost as much as the round → k = 1
    expect(feed(false, 10, 10, 10).best()).toBe(1);
    const c = feed(true, 55, 5, 1);
    expect(c.alpha).toBeGreaterThan(0.9);
    // choose() probes kInit, kInit / 2, then follows the model with a neighbour every 8th round
    const fresh = feed(true, 55, 5, 1);
    const ks = Array.from({ length: 17 }, () => fresh.choose());
    expect(ks.slice(0, 2)).toEqual([4, 2]);
    expect(ks.slice(2).filter((k) => k !== 8)).toEqual([7, 7]);
  });
});

describe('time to first token', () => {
  it("emits the target's first token as it arrives, before the draft's prefill has finished (a local target: before it starts; a remote one: while it runs)", async () => {
    const p = [3, 1, 4, 1, 5];
    const want = (await baseline(new LocalTarget(pair.newTarget()), p, { params: GREEDY, maxTokens: 6 })).tokens;
    for (const rttMs of [0, 20]) {
      const slowDraft = pair.newDraft();
      const forward = slowDraft.forward.bind(slowDraft);
      // The draft's prefill (its first forward, over all but the prompt's last token) waits until released.
      let release!: () => void;
      const gate = new Promise<void>((r) => { release = r; });
      let state: 'not started' | 'running' | 'done' = 'not started';
      slowDraft.forward = async (t, s) => {
        if (s === 0 && t.length === p.length - 1) {
          state = 'running';
          await gate;
          state = 'done';
        }
        return forward(t, s);
      };
      const seen: { token: number; prefill: string }[] = [];
      const link = rttMs ? new DelayedLink(new LocalTarget(pair.newTarget()), rttMs) : new LocalTarget(pair.newTarget());
      const run = speculate(slowDraft, link, p, {
        params: GREEDY, maxTokens: 6, k: 2,
        onToken: (e) => {
          seen.push({ token: e.token, prefill: state });
          if (seen.length === 1) release();
        },
      });
      // The gate only opens on the first token: a controller that waits for the draft's prefill
      // before emitting would never finish; bound the wait so it fails instead of hanging.
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the first token waited for the draft prefill')), 5000));
      const r = await Promise.race([run, timeout]);
      // in this thread the open answers before the draft's prefill starts (a macrotask later); over a link, while it runs
      expect(seen[0], `RTT ${rttMs}`).toEqual({ token: want[0], prefill: rttMs ? 'running' : 'not started' });
      expect(r.tokens).toEqual(want);
      expect(r.stats.ttftMs).toBeLessThan(r.stats.wallMs);
    }
  });
});

describe('failures', () => {
  it('a target that refuses the session rejects speculate() with its error', async () => {
    const refusing = new LocalTarget(pair.newTarget());
    await expect(speculate(pair.newDraft(), refusing, [vocab + 5], { params: GREEDY, maxTokens: 4 })).rejects.toThrow(/outside the vocabulary/);
    const slowDraft = pair.newDraft();
    const forward = slowDraft.forward.bind(slowDraft);
    // the refusal lands while the draft prefill is still awaiting: still one clean rejection
    slowDraft.forward = async (t, s) => {
      await new Promise((r) => setTimeout(r, 20));
      return forward(t, s);
    };
    const failing = { ...new LocalTarget(pair.newTarget()), targetPasses: 0, open: () => Promise.reject(new Error('refused')) } as unknown as LocalTarget;
    await expect(speculate(slowDraft, failing, [1, 2, 3], { params: GREEDY, maxTokens: 4 })).rejects.toThrow('refused');
  });
});

describe('DelayedLink', () => {
  it('adds half the RTT before the target runs and half after; generate pays it once', async () => {
    const inner = new LocalTarget(pair.newTarget());
    let calledAt = 0;
    const verify = inner.verify.bind(inner);
    inner.verify = (d, q) => {
      calledAt = performance.now();
      return verify(d, q);
    };
    const link = new DelayedLink(inner, 40);
    await link.open([1, 2, 3], GREEDY);
    const t0 = performance.now();
    await link.verify([4, 5]);
    const total = performance.now() - t0;
    // timers may fire a little early or late; 2 ms slack per timer
    expect(calledAt - t0).toBeGreaterThanOrEqual(18);
    expect(total).toBeGreaterThanOrEqual(36);
    const g0 = performance.now();
    const out = await link.generate(5);
    expect(out.length).toBe(5);
    const genMs = performance.now() - g0;
    // once per call (>= 40 ms), not once per token (which would be >= 200 ms)
    expect(genMs).toBeGreaterThanOrEqual(36);
    expect(genMs).toBeLessThan(150);
    expect(link.targetPasses).toBe(inner.targetPasses);
  });
});
