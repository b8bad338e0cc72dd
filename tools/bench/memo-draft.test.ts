// The load generators' shared draft memo: every row it returns is the real draft's for that
// sequence (oracle: a CpuLlama driven through the same calls), a second session on the same
// sequences is served from the memo alone, and speculation through it yields the same tokens
// and acceptance as with the live draft, greedy and sampled.
import { describe, expect, it } from 'vitest';
import { LocalTarget } from '../../src/engine/local-target.ts';
import { speculate } from '../../src/engine/speculative.ts';
import { randomPrompts, tinyPair } from '../../src/engine/spec-fixtures.ts';
import { DraftMemo } from './memo-draft.ts';

const pair = tinyPair({ seed: 5, noise: 0.25, config: { hiddenSize: 48, intermediateSize: 97, numHeads: 3, numKvHeads: 1, headDim: 16, vocabSize: 301 } });
const V = pair.config.vocabSize;

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-3 + Math.abs(b[i])));
  return worst;
}

describe('DraftMemo', () => {
  it('returns the real draft rows through prefill, decode, rollback and re-forward; a second session hits only', async () => {
    const memo = new DraftMemo(pair.config, 64, () => pair.newDraft());
    // the calls a speculating draft makes: prefill, k decode steps, rollback to the accepted
    // length, a decode from there, a 2-token forward, a jump back to the prompt
    const calls: [number[], number][] = [[[11, 200, 7, 5, 93], 0], [[17], 5], [[42], 6], [[8], 7], [[250], 6], [[3, 299], 7], [[61], 5]];
    const oracle = pair.newDraft();
    const outs: Float32Array[] = [];
    for (const pass of [0, 1]) {
      const session = memo.session();
      const missesBefore = memo.misses;
      for (const [i, [toks, at]] of calls.entries()) {
        const got = await session.forward(toks, at);
        expect(got.length).toBe(toks.length * V);
        expect(session.length).toBe(at + toks.length);
        if (pass === 0) {
          const want = await oracle.forward(toks, at);
          // oracle and memo may chunk a sequence differently (a miss re-runs from the shared prefix): f32 rounding only
          expect(maxRelDiff(got, want), `call ${i}`).toBeLessThan(1e-4);
          outs.push(got);
        } else {
          expect(got, `call ${i}, second session`).toEqual(outs[i]);
        }
      }
      if (pass === 1) expect(memo.misses, 'second session: no misses').toBe(missesBefore);
    }
    expect(memo.misses).toBe(calls.reduce((s, [t]) => s + t.length, 0));
    expect(memo.hits).toBe(memo.misses);
    const last = await memo.session().forwardLast([11, 200, 7], 0);
    expect(last.length).toBe(V);
  });

  it('rejects a forward past the cached length', async () => {
    const s = new DraftMemo(pair.config, 64, () => pair.newDraft()).session();
    await s.forward([1, 2], 0);
    await expect(s.forward([3], 5)).rejects.toThrow(RangeError);
  });

  for (const params of [{ temperature: 0, topK: 0, topP: 1, seed: 0 }, { temperature: 0.8, topK: 0, topP: 1, seed: 9 }]) {
    it(`speculate through the memo = with the live draft (T = ${params.temperature}, k = 3, 5 prompts of odd lengths)`, async () => {
      const memo = new DraftMemo(pair.config, 128, () => pair.newDraft());
      for (const prompt of randomPrompts(5, V, 31, 7)) {
        const live = await speculate(pair.newDraft(), new LocalTarget(pair.newTarget()), prompt, { params, maxTokens: 21, k: 3 });
        for (let rep = 0; rep < 2; rep++) {
          const misses = memo.misses;
          const r = await speculate(memo.session(), new LocalTarget(pair.newTarget()), prompt, { params, maxTokens: 21, k: 3 });
          expect(r.tokens, `prompt ${prompt} rep ${rep}`).toEqual(live.tokens);
          expect(r.stats.acceptedTokens).toBe(live.stats.acceptedTokens);
          expect(r.stats.draftedTokens).toBe(live.stats.draftedTokens);
          if (rep === 1) expect(memo.misses, 'the repeat is served from the memo').toBe(misses);
        }
      }
      expect(memo.hits).toBeGreaterThan(0);
    });
  }
});
