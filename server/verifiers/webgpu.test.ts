// The webgpu verifier (the WGSL engine in Node on Dawn; SwiftShader here) behind the gateway:
// greedy speculative decoding through it equals target-only greedy decoding by the CPU
// reference (no KV reuse in the oracle), and closing sessions releases their engines.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestDevice, type GpuContext } from '../../src/kernels/gpu.ts';
import { greedyOracle, randomPrompts, tinyPair } from '../../src/engine/spec-fixtures.ts';
import { speculate } from '../../src/engine/speculative.ts';
import { GREEDY } from '../../src/engine/sampling.ts';
import { startGateway, type Gateway } from '../gateway.ts';
import { TEST_TOKENIZER_HASH, remote, until } from '../testing.ts';
import { createWebGpuVerifier } from './webgpu.ts';
import type { LocalVerifier } from './local.ts';

// vocab 389 and hidden 64: not multiples of the kernels' workgroup sizes
const pair = tinyPair({ seed: 31, noise: 0.25, config: { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 } });
let ctx: GpuContext;
let verifier: LocalVerifier;
let g: Gateway;

beforeAll(async () => {
  ctx = await requestDevice();
  verifier = await createWebGpuVerifier({ config: pair.config, weights: pair.target, model: 'tiny-random', tokenizerHash: TEST_TOKENIZER_HASH, maxContext: 64, ctx });
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
});
