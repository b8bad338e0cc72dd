// `duet logits` on a tiny HF model folder written here (random weights, safetensors): the
// webgpu backend matches the cpu backend (NMSE ≤ 1e-9 for f32; for q4 both run the q4-stored
// weights, same bound), argmax agrees at every position, and the CLI prints the documented
// JSON contract; bad arguments get exit code 2 and a message. --quant auto picks q4 for a
// Q4_K_M GGUF and q8 for a Q8_0 one (same logits as asking for that format).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticConfig } from '../engine/config.ts';
import { randomWeights } from '../engine/weights.ts';
import { compare } from '../kernels/testing.ts';
import { writeModelDir } from '../../tools/fixtures/safetensors-writer.ts';
import { buildGguf } from '../../tools/fixtures/gguf-writer.ts';
import { writeFileSync } from 'node:fs';
import { computeLogits, run } from './logits.ts';

let dir: string;
const tokens = [1, 17, 400, 1030, 5, 5, 99];
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'duet-logits-'));
  const c = syntheticConfig('tiny');
  await writeModelDir(dir, c, randomWeights(c, 9));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('duet logits', () => {
  for (const quant of ['none', 'q4'] as const) {
    it(`webgpu matches cpu (--quant ${quant})`, async () => {
      const cpu = await computeLogits({ model: dir, tokens, backend: 'cpu', quant });
      const gpu = await computeLogits({ model: dir, tokens, backend: 'webgpu', quant });
      expect(gpu.vocab).toBe(1031);
      expect(gpu.positions).toBe(tokens.length);
      expect(gpu.argmax).toEqual(cpu.argmax);
      const cmp = compare(gpu.logits.flat(), cpu.logits.flat(), 1e-9);
      expect(cmp.ok, cmp.summary).toBe(true);
    });
  }

  it('the bin prints the JSON contract', async () => {
    const bin = join(__dirname, '../../bin/duet.mjs');
    const { stdout } = await promisify(execFile)(process.execPath, [bin, 'logits', '--model', dir, '--tokens', '3,4', '--json'], { maxBuffer: 1 << 26 });
    const r = JSON.parse(stdout);
    expect(Object.keys(r)).toEqual(['vocab', 'positions', 'argmax', 'logits']);
    expect(r.vocab).toBe(1031);
    expect(r.positions).toBe(2);
    expect(r.logits).toHaveLength(2);
    expect(r.logits[1]).toHaveLength(1031);
    const want = await computeLogits({ model: dir, tokens: [3, 4], backend: 'cpu', quant: 'none' });
    expect(r.argmax).toEqual(want.argmax);
    expect(r.logits[1][7]).toBeCloseTo(want.logits[1][7], 6);
  });

  it('--quant auto: a Q4_K_M GGUF runs as q4, a Q8_0 GGUF as q8 (cpu)', async () => {
    const c = syntheticConfig('tiny', { hiddenSize: 256, numHeads: 4, numKvHeads: 1, headDim: 64, intermediateSize: 512, numLayers: 1, vocabSize: 41 });
    const w = randomWeights(c, 4);
    for (const [file, opts, want] of [
      ['q4km.gguf', { type: 'Q4_K', perTensor: { 'token_embd.weight': 'Q6_K', 'blk.0.ffn_down.weight': 'Q6_K' } }, 'q4'],
      ['q8.gguf', { type: 'Q8_0' }, 'q8'],
    ] as const) {
      const path = join(dir, file);
      writeFileSync(path, buildGguf(c, w, opts));
      const auto = await computeLogits({ model: path, tokens: [1, 40, 7], backend: 'cpu', quant: 'auto' });
      expect(auto.format, file).toBe(want);
      expect(auto.logits, file).toEqual((await computeLogits({ model: path, tokens: [1, 40, 7], backend: 'cpu', quant: want })).logits);
      expect((await computeLogits({ model: path, tokens: [1, 40, 7], backend: 'cpu', quant: 'none' })).format).toBe('f32');
    }
  });

  it('bad arguments exit 2 with a message', async () => {
    for (const argv of [['--tokens', '1'], ['--model', dir, '--tokens', '1,x'], ['--model', dir, '--tokens', '1', '--backend', 'tpu'], ['--model', dir, '--tokens', '1', '--quant', 'q3']]) {
      expect(await run(argv)).toBe(2);
    }
  });
});
