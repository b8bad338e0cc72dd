// WebGpuLlama vs CpuLlama at real Llama-3.2 layer shapes (1B: hidden 2048, 32 heads, 8 KV
// heads, head_dim 64, intermediate 8192; 3B: hidden 3072, 24 heads, head_dim 128), 2 layers,
// small vocabularies (the full 128256 one is in llama-vocab.test.ts): a 17-token prompt, a
// decode step, a 5-token verify after a rollback; NMSE ≤ 1e-8 (measured ~1e-12: only f32
// summation order differs), argmax equal at every position. These are the slow engine tests
// (SwiftShader runs the ~3 G multiply-adds of each on the CPU), hence the long timeouts.
import { afterAll, beforeAll, describe, it } from 'vitest';
import { syntheticConfig } from '../config.ts';
import { type GpuContext, requestDevice } from '../../kernels/gpu.ts';
import { build, scenario } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

describe('WebGpuLlama vs CpuLlama at real layer shapes', () => {
  it('Llama-3.2-1B layer shapes, 2 layers, vocab 4099, f32, f32 KV: NMSE ≤ 1e-8', async () => {
    const c = syntheticConfig('1b', { numLayers: 2, vocabSize: 4099 });
    const { gpu, cpu } = await build(ctx, c, 'f32', { kvFormat: 'f32', maxContext: 128 });
    const worst = await scenario(gpu, cpu, 17, 1e-8, 1);
    console.log(`1B f32: worst NMSE ${worst.toExponential(2)}`);
    gpu.dispose();
  }, 900_000);

  it('Llama-3.2-3B layer shapes, 2 layers, vocab 1031, bf16, f32 KV: NMSE ≤ 1e-8', async () => {
    const c = syntheticConfig('3b', { numLayers: 2, vocabSize: 1031 });
    const { gpu, cpu } = await build(ctx, c, 'bf16', { kvFormat: 'f32', maxContext: 128 });
    const worst = await scenario(gpu, cpu, 17, 1e-8, 1);
    console.log(`3B bf16: worst NMSE ${worst.toExponential(2)}`);
    gpu.dispose();
  }, 900_000);
});
