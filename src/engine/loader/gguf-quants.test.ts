// GGUF files whose tensors mix ggml types the way llama.cpp's presets do, loaded through the
// whole loader (header, slab-wise reads and decode, Q/K un-permutation) onto the CPU
// reference and the WebGPU engine. Oracle: the weights the test encoder says it wrote
// (storedWeights: never parsed from the file). Q4_K_M (llama.cpp's default): Q4_K
// matrices, Q6_K for attn_v / ffn_down in some layers and for token_embd when tied (for
// output.weight when not), F32 norms. Shapes: hidden 256 and ffn 768 (K-quant rows need
// multiples of 256), vocab 37 and 64-row K/V projections so rows are not round.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LlamaConfig, syntheticConfig } from '../config.ts';
import { CpuLlama } from '../reference.ts';
import { type LlamaWeights, randomWeights } from '../weights.ts';
import { compare } from '../../kernels/testing.ts';
import { type GpuContext, requestDevice } from '../../kernels/gpu.ts';
import { WebGpuLlama } from '../gpu/index.ts';
import { roundTrip, scenario } from '../gpu/testing.ts';
import { namedTensors } from '../../../tools/fixtures/safetensors-writer.ts';
import { type GgmlType, type GgufWriteOptions, buildGguf, storedWeights } from '../../../tools/fixtures/gguf-writer.ts';
import { DirSource } from './node-source.ts';
import { loadWeightsF32, openModel, type OpenedModel } from './model.ts';
import { GGML_TYPES } from './ggml-quants.ts';
import { autoFormatOf } from './gguf.ts';

const base: LlamaConfig = syntheticConfig('tiny', { hiddenSize: 256, numHeads: 4, numKvHeads: 1, headDim: 64, intermediateSize: 768, numLayers: 3, vocabSize: 37 });

/** llama.cpp's Q4_K_M choice: Q6_K for attn_v and ffn_down in "more bits" layers (here 0 and 2). */
function q4km(c: LlamaConfig): GgufWriteOptions {
  const perTensor: Record<string, GgmlType> = {};
  for (const l of [0, 2]) {
    perTensor[`blk.${l}.attn_v.weight`] = 'Q6_K';
    perTensor[`blk.${l}.ffn_down.weight`] = 'Q6_K';
  }
  perTensor[c.tieWordEmbeddings ? 'token_embd.weight' : 'output.weight'] = 'Q6_K';
  return { type: 'Q4_K', perTensor };
}

/** Every decodable type somewhere in one file (24 matrices, 12 quant types + F16/BF16). */
function everyType(c: LlamaConfig): GgufWriteOptions {
  const types: GgmlType[] = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q5_K', 'Q6_K', 'IQ4_NL', 'IQ4_XS', 'F16', 'BF16', 'Q4_K'];
  const mats = ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'];
  const perTensor: Record<string, GgmlType> = { 'token_embd.weight': 'Q5_K' };
  let i = 0;
  for (let l = 0; l < c.numLayers; l++) for (const m of mats) perTensor[`blk.${l}.${m}.weight`] = types[i++ % types.length];
  if (!c.tieWordEmbeddings) perTensor['output.weight'] = 'IQ4_XS';
  return { type: 'Q4_K', perTensor };
}

/** Reads of at most ~5 kB, so every big tensor is decoded in several slabs of rows. */
class SmallReads extends DirSource {
  override readonly chunkBytes = 5000;
}

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'duet-gguf-quants-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function write(name: string, c: LlamaConfig, w: LlamaWeights, opts: GgufWriteOptions): Promise<OpenedModel> {
  await writeFile(join(root, name), buildGguf(c, w, opts));
  return openModel(new SmallReads(root), { weights: name });
}

const tokens = [1, 36, 5, 17, 0, 29, 11];

describe('GGUF with mixed quant types → CPU reference', () => {
  const cases: [string, LlamaConfig, (c: LlamaConfig) => GgufWriteOptions, string][] = [
    ['Q4_K_M, tied (token_embd Q6_K)', base, q4km, 'q4'],
    ['Q4_K_M, untied (output Q6_K)', { ...base, tieWordEmbeddings: false }, q4km, 'q4'],
    ['every type, untied', { ...base, tieWordEmbeddings: false }, everyType, 'q4'],
  ];
  for (const [what, c, preset, auto] of cases) {
    it(`${what}: the stored weights exactly, logits NMSE <= 1e-9 vs an f32 copy`, async () => {
      const w = randomWeights(c, 11);
      const opts = preset(c);
      const m = await write(`${what.replace(/\W+/g, '-')}.gguf`, c, w, opts);
      expect(m.config).toEqual(c);
      expect(m.autoFormat).toBe(auto);
      const got = await loadWeightsF32(m);
      await m.close();
      const want = storedWeights(c, w, opts);
      const g = namedTensors(c, got);
      namedTensors(c, want).forEach(([name, data], i) => {
        let bad = 0;
        for (let j = 0; j < data.length; j++) if (!Object.is(g[i][1][j], data[j])) bad++;
        expect(bad, `${name}: ${bad} of ${data.length} values differ from what the encoder wrote`).toBe(0);
      });
      const a = new CpuLlama(c, got, 16).forwardSync(tokens, 0);
      const b = new CpuLlama(c, want, 16).forwardSync(tokens, 0);
      const cmp = compare(a, b, 1e-9, what);
      expect(cmp.ok, cmp.summary).toBe(true);
      // and the quantization is real: the f32 originals give other logits
      const orig = new CpuLlama(c, w, 16).forwardSync(tokens, 0);
      expect(compare(orig, b, 1e-9).ok, 'quantized logits must differ from the f32 original').toBe(false);
    });
  }

  it('autoFormat: the precision holding most matrix elements; a 4-bit file stays q4, an 8-bit file q8, float files f32', () => {
    const t = (name: string) => [...GGML_TYPES.values()].find((x) => x.name === name)!;
    const mats = (...m: [string, number][]) => m.map(([name, numel]) => ({ type: t(name), numel }));
    // Llama-3.2-1B Q4_K_M: ~0.8G Q4_K elements, ~0.4G Q6_K (tied token_embd, half of attn_v / ffn_down)
    expect(autoFormatOf(mats(['Q4_K', 8e8], ['Q6_K', 4e8]))).toBe('q4');
    // a stock Q4_0 file still carries a Q6_K token_embd
    expect(autoFormatOf(mats(['Q4_0', 9.7e8], ['Q6_K', 2.6e8]))).toBe('q4');
    expect(autoFormatOf(mats(['Q8_0', 1.2e9]))).toBe('q8');
    expect(autoFormatOf(mats(['Q6_K', 1.2e9]))).toBe('q8');
    expect(autoFormatOf(mats(['Q5_K', 9e8], ['Q6_K', 3e8]))).toBe('q8');
    expect(autoFormatOf(mats(['Q3_K', 6e8], ['Q5_K', 4e8], ['Q6_K', 2e8]))).toBe('q4');
    expect(autoFormatOf(mats(['Q2_K', 5e8], ['Q4_K', 4e8], ['Q6_K', 3e8]))).toBe('q4');
    expect(autoFormatOf(mats(['IQ4_XS', 9e8], ['Q6_K', 3e8]))).toBe('q4');
    expect(autoFormatOf(mats(['F16', 1.2e9]))).toBe('f32');
    expect(autoFormatOf(mats(['BF16', 1.2e9]))).toBe('f32');
    expect(autoFormatOf(mats(['F32', 5e8], ['Q8_0', 4e8]))).toBe('f32');
  });

  it('a K-quant tensor whose rows are not whole 256-blocks, and an unknown type, are typed errors naming the tensor', async () => {
    const c = { ...base, hiddenSize: 288, numHeads: 4, headDim: 72 }; // rows of 288: Q8_0 fits, Q4_K does not
    const bytes = buildGguf(c, randomWeights(c, 3), { type: 'Q8_0', typeIdOverride: { 'blk.1.ffn_gate.weight': 12 } });
    await writeFile(join(root, 'ragged.gguf'), bytes);
    await expect(openModel(new SmallReads(root), { weights: 'ragged.gguf' })).rejects.toThrow(/ragged\.gguf: blk\.1\.ffn_gate\.weight: row length 288 is not a multiple of the Q4_K block size 256/);
    await writeFile(join(root, 'mxfp4.gguf'), buildGguf(base, randomWeights(base, 3), { type: 'Q8_0', typeIdOverride: { 'blk.2.attn_k.weight': 39 } }));
    await expect(openModel(new SmallReads(root), { weights: 'mxfp4.gguf' })).rejects.toThrow(/mxfp4\.gguf: blk\.2\.attn_k\.weight: tensor type MXFP4 \(ggml type 39\) is not supported/);
  });
});

describe('GGUF with mixed quant types → WebGPU engine (--quant auto)', () => {
  let ctx: GpuContext;
  beforeAll(async () => {
    ctx = await requestDevice();
  });
  afterAll(() => ctx?.device.destroy());

  // The engine packs the decoded weights into its own format; the oracle is the CPU
  // reference on the stored weights round-tripped through that format (what the kernels
  // read), with f32 KV — so only accumulation order differs (the bound of logits.test.ts).
  // two layers here: SwiftShader time grows with the layer count, the types do not need three
  const c2 = { ...base, numLayers: 2 };
  const cases: [string, LlamaConfig, GgufWriteOptions, 'q4' | 'q8'][] = [
    ['Q4_K_M → q4', c2, q4km(c2), 'q4'],
    ['Q6_K + Q8_0 + Q5_K → q8', { ...c2, tieWordEmbeddings: false }, { type: 'Q6_K', perTensor: { 'output.weight': 'Q8_0', 'blk.1.ffn_up.weight': 'Q5_K' } }, 'q8'],
  ];
  for (const [what, c, opts, format] of cases) {
    it(`${what}: logits NMSE <= 1e-9 vs the CPU reference on the same stored values`, async () => {
      const w = randomWeights(c, 21);
      const m = await write(`gpu-${format}.gguf`, c, w, opts);
      expect(m.autoFormat).toBe(format);
      let gpu: WebGpuLlama;
      try {
        gpu = await WebGpuLlama.create(ctx, c, m.tensors(), { format: m.autoFormat, kvFormat: 'f32', maxContext: 32 });
      } finally {
        await m.close();
      }
      const cpu = new CpuLlama(c, roundTrip(c, storedWeights(c, w, opts), format), 32);
      const worst = await scenario(gpu, cpu, 13, 1e-9);
      console.log(`${what}: worst NMSE ${worst.toExponential(2)}`);
      gpu.dispose();
    });
  }
});
