// The webgpu verifier (the WGSL engine in Node on Dawn; SwiftShader here) behind the gateway:
// greedy speculative decoding through it equals target-only greedy decoding by the CPU
// reference (no KV reuse in the oracle), for one session at a time and for 16 concurrent
// sessions whose verifies share passes; closing sessions releases their KV caches. And batch
// invariance: one session's greedy text is the same alone and sharing every pass with 1, 7
// and 31 others (mixed k, k = 0 baseline rows among them).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestDevice, type GpuContext } from '../../src/kernels/gpu.ts';
import { greedyOracle, randomPrompts, tinyPair } from '../../src/engine/spec-fixtures.ts';
import { speculate } from '../../src/engine/speculative.ts';
import { GREEDY } from '../../src/engine/sampling.ts';
import { mulberry32 } from '../../src/engine/weights.ts';
import { startGateway, type Gateway } from '../gateway.ts';
import { TEST_TOKENIZER_HASH, remote, until } from '../testing.ts';
import { type WebGpuVerifier, createWebGpuVerifier } from './webgpu.ts';

// vocab 389 and hidden 64: not multiples of the kernels' workgroup sizes
const pair = tinyPair({ seed: 31, noise: 0.25, config: { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 } });
let ctx: GpuContext;
let verifier: WebGpuVerifier;
let g: Gateway;

beforeAll(async () => {
  ctx = await requestDevice();
  verifier = await createWebGpuVerifier({ config: pair.config, weights: pair.target, model: 'tiny-random', tokenizerHash: TEST_TOKENIZER_HASH, maxContext: 64, maxBatch: 32, maxDraft: 5, ctx });
  g = await startGateway({ verifier });
});
afterAll(async () => {
  await g?.close();
  await verifier?.dispose();
  ctx?.device.destroy();
});

describe('webgpu verifier', () => {
  it(`reports its device (${'webgpu'}) in /api/info`, async () => {
    const info = await (await fetch(`${g.url}/api/info`)).json();
    expect(info.backend).toBe('webgpu');
    expect(info.device).toMatch(/^webgpu: /);
  });

  it('greedy speculative through the gateway == CPU-reference target-only greedy (3 prompts, k = 1, 3, 4)', async () => {
    const prompts = randomPrompts(3, pair.config.vocabSize, 12, 7);
    const ref = pair.newTarget(64);
    for (const [i, prompt] of prompts.entries()) {
      const link = remote(g);
      const r = await speculate(pair.newDraft(64), link, prompt, { params: GREEDY, maxTokens: 12, k: [1, 3, 4][i % 3], pipeline: i % 2 === 1 });
      await link.close();
      expect(r.tokens, `prompt ${i}`).toEqual(greedyOracle(ref, prompt, 12));
    }
    await until(() => verifier.sessionCount === 0, 5_000, 'engines released');
  });

  it('16 concurrent greedy speculative sessions through the gateway (k = 1..5, some pipelined) == target-only text', async () => {
    const n = 16;
    const prompts = randomPrompts(n, pair.config.vocabSize, 23, 9);
    const ref = pair.newTarget(64);
    const want = prompts.map((p) => greedyOracle(ref, p, 10));
    const batches0 = verifier.model.stats.forwards;
    const got = await Promise.all(prompts.map(async (prompt, i) => {
      const link = remote(g);
      const r = await speculate(pair.newDraft(64), link, prompt, { params: GREEDY, maxTokens: 10, k: 1 + (i % 5), pipeline: i % 3 === 0 });
      await link.close();
      return r.tokens;
    }));
    got.forEach((t, i) => expect(t, `session ${i}`).toEqual(want[i]));
    const passes = verifier.model.stats.forwards - batches0;
    console.log(`16 sessions: ${passes} forwards, ${verifier.model.stats.rows} rows so far`);
    await until(() => verifier.sessionCount === 0, 5_000, 'sessions released');
    expect(verifier.memory.kv, 'no KV cache left').toBe(0);
  });
});

// One session's greedy transcript when every verifyBatch it is in also carries `others`
// sessions with random blocks (k = 0..5: 0 is a baseline step). Its own blocks are the same
// in every run (seeded): random tokens mixed with the target's own continuation, so some
// stand and some are rejected.
async function transcriptWith(others: number, tokens: number): Promise<number[]> {
  const c = pair.config;
  const prompts = randomPrompts(others + 1, c.vocabSize, 41, 9);
  const oracle = greedyOracle(pair.newTarget(64), prompts[0], tokens + 6);
  const ids = prompts.map((_, i) => `inv${others}-${i}`);
  const first = await Promise.all(prompts.map((p, i) => verifier.open(ids[i], p, GREEDY)));
  const mine = [first[0].firstToken];
  const rand = mulberry32(7);
  const noise = mulberry32(1000 + others);
  const lens = first.map(() => prompts[0].length);
  while (mine.length < tokens) {
    const k = Math.floor(rand() * 6);
    const draft = Array.from({ length: k }, (_, j) => (rand() < 0.6 ? oracle[mine.length + j] : Math.floor(rand() * c.vocabSize)));
    const reqs = [{ sessionId: ids[0], draft }];
    for (let i = 1; i <= others; i++) {
      if (lens[i] + 7 >= 60) continue; // that session's cache is nearly full: it sits this pass out
      reqs.push({ sessionId: ids[i], draft: Array.from({ length: Math.floor(noise() * 6) }, () => Math.floor(noise() * c.vocabSize)) });
    }
    const res = await verifier.verifyBatch(reqs);
    for (const r of res) {
      const i = ids.indexOf(r.sessionId);
      lens[i] += r.accepted + 1;
      if (i === 0) mine.push(...draft.slice(0, r.accepted), r.token);
    }
  }
  for (const id of ids) await verifier.close(id);
  expect(mine.slice(0, tokens), `alone/with ${others}: the target-only text`).toEqual(oracle.slice(0, tokens));
  return mine.slice(0, tokens);
}

describe('webgpu verifier: batch invariance', () => {
  it('one session\'s greedy text alone == sharing every pass with 1, 7 and 31 others (mixed k, k = 0 rows)', async () => {
    const alone = await transcriptWith(0, 14);
    for (const others of [1, 7, 31]) expect(await transcriptWith(others, 14), `with ${others} others`).toEqual(alone);
    expect(verifier.sessionCount).toBe(0);
  });
});
