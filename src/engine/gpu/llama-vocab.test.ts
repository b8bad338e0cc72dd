// The full 128256-token vocabulary at Llama-3.2-1B shapes (2 layers), weights in q4 (the
// browser draft's format), tied embedding as the LM head (a 148 MB buffer, over WebGPU's
// default 128 MiB binding), vs CpuLlama on the dequantized weights: logits NMSE ≤ 1e-8 (only
// f32 accumulation order differs; measured 7e-13), argmax agrees at every position of a
// 6-token prompt, a decode step, and a 3-token verify after a rollback. The 17-token prompt /
// 5-token verify scenario runs at real layer shapes in llama-shapes.test.ts; here the
// 262 M multiply-adds of the LM head per position make every position expensive on
// SwiftShader, so the scenario is shorter.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { syntheticConfig } from '../config.ts';
import { type GpuContext, requestDevice } from '../../kernels/gpu.ts';
import { build, scenario } from './testing.ts';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await requestDevice();
});
afterAll(() => ctx?.device.destroy());

it('Llama-3.2-1B shapes, 2 layers, vocab 128256, q4, f32 KV', async () => {
  const c = syntheticConfig('1b', { numLayers: 2 });
  const { gpu, cpu } = await build(ctx, c, 'q4', { kvFormat: 'f32', maxContext: 64, maxBatch: 24 });
  expect(gpu.allocatedStorageBytes).toBe(gpu.plan.total);
  const worst = await scenario(gpu, cpu, 6, 1e-8, 1, 3);
  console.log(`1B q4 full vocab: worst NMSE ${worst.toExponential(2)}; ${gpu.bufferBytes} buffer bytes`);
  gpu.dispose();
}, 1_800_000);
