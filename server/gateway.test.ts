// Exactness through the gateway: greedy speculative decoding over the WebSocket client equals
// target-only greedy decoding (the oracle reruns the whole sequence with no KV reuse), for 20
// prompts × k ∈ {1, 2, 4, 8} and adaptive k, with and without pipelining; the 20 sessions run
// concurrently so the batcher groups them. Plus baseline streaming and batching accounting.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { greedyOracle, randomPrompts } from '../src/engine/spec-fixtures.ts';
import { speculate, baseline } from '../src/engine/speculative.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { remote, startTestGateway, until, type TestGateway } from './testing.ts';

const MAX_TOKENS = 20;
let t: TestGateway;
let prompts: number[][];
let oracle: number[][];

beforeAll(async () => {
  // smaller than syntheticConfig('tiny') so 200 generations fit the test budget on 2 cores
  t = await startTestGateway({ pairOptions: { seed: 11, noise: 0.25, config: { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 } } });
  prompts = randomPrompts(20, t.pair.config.vocabSize, 5, 9);
  const ref = t.pair.newTarget();
  oracle = prompts.map((p) => greedyOracle(ref, p, MAX_TOKENS));
});
afterAll(async () => t?.close());

describe('greedy speculative through the gateway == target-only greedy', () => {
  const configs: { k?: number; adaptive?: boolean }[] = [{ k: 1 }, { k: 2 }, { k: 4 }, { k: 8 }, { adaptive: true }];
  for (const pipeline of [false, true]) {
    for (const c of configs) {
      it(`${c.adaptive ? 'adaptive k' : `k = ${c.k}`}, ${pipeline ? 'pipelined' : 'not pipelined'}, 20 concurrent sessions`, async () => {
        const batches0 = t.gateway.stats().batches;
        const requests0 = t.gateway.stats().batchedRequests;
        const results = await Promise.all(prompts.map(async (p) => {
          const link = remote(t.gateway);
          try {
            return await speculate(t.pair.newDraft(), link, p, { params: GREEDY, maxTokens: MAX_TOKENS, ...c, pipeline });
          } finally {
            await link.close();
          }
        }));
        let mismatches = 0;
        let firstBad = -1;
        results.forEach((r, i) => {
          if (JSON.stringify(r.tokens) !== JSON.stringify(oracle[i])) {
            mismatches++;
            if (firstBad < 0) firstBad = i;
          }
        });
        expect(mismatches, `prompt ${firstBad}: got ${results[firstBad]?.tokens} expected ${oracle[firstBad]}`).toBe(0);
        // the draft is imperfect: some rounds reject, some accept (the test exercises both paths)
        const accepted = results.reduce((a, r) => a + r.stats.acceptedTokens, 0);
        const drafted = results.reduce((a, r) => a + r.stats.draftedTokens, 0);
        expect(accepted).toBeGreaterThan(0);
        if (c.k !== 1) expect(accepted).toBeLessThan(drafted);
        const s = t.gateway.stats();
        expect(s.batchedRequests - requests0).toBeGreaterThan(s.batches - batches0); // mean batch > 1
      });
    }
  }
  it('frees every session afterwards', async () => {
    // close() is fire-and-forget on the wire; the gateway frees the KV when the frame lands
    await until(() => t.verifier.sessionCount === 0 && t.gateway.stats().sessions === 0, 5_000, 'sessions freed');
    expect(t.gateway.stats().errors).toEqual({});
  });
});

describe('baseline through the gateway', () => {
  it('streams target-only greedy tokens, one target pass each', async () => {
    for (const i of [0, 7, 13]) {
      const link = remote(t.gateway, { mode: 'baseline' });
      const streamed: number[] = [];
      const r = await baseline(link, prompts[i], { params: GREEDY, maxTokens: MAX_TOKENS });
      expect(r.tokens).toEqual(oracle[i]);
      expect(r.targetPasses).toBe(MAX_TOKENS);
      const more = await link.generate(3, (tok) => streamed.push(tok));
      expect(streamed).toEqual(more);
      expect(more).toEqual(greedyOracle(t.pair.newTarget(), [...prompts[i], ...oracle[i]], 3));
      await link.close();
    }
  });
});
