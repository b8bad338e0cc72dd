// Model folders for the sidecar's tests and benchmark: config.json + one model.safetensors
// (F32 or BF16) written from LlamaWeights, so the Python side loads exactly the weights the
// TypeScript CPU reference runs. Kept here (not tools/) because server code may not import tools.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LlamaConfig } from '../../src/engine/config.ts';
import { f32ToBf16Bits } from '../../src/engine/quantize.ts';
import { type LlamaWeights, layerTensorNames } from '../../src/engine/weights.ts';

/** The same weights rounded through bf16: what a BF16 checkpoint holds. */
export function roundWeightsBf16(w: LlamaWeights): LlamaWeights {
  const r = (a: Float32Array): Float32Array => {
    const u = new Uint32Array(a.length);
    for (let i = 0; i < a.length; i++) u[i] = f32ToBf16Bits(a[i]) << 16;
    return new Float32Array(u.buffer);
  };
  return {
    embed: r(w.embed), finalNorm: r(w.finalNorm), lmHead: w.lmHead && r(w.lmHead),
    layers: w.layers.map((l) => Object.fromEntries(Object.entries(l).map(([k, v]) => [k, r(v)])) as unknown as typeof l),
  };
}

function tensors(c: LlamaConfig, w: LlamaWeights): [string, Float32Array, number[]][] {
  const dim = c.hiddenSize;
  const qd = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const hid = c.intermediateSize;
  const out: [string, Float32Array, number[]][] = [['model.embed_tokens.weight', w.embed, [c.vocabSize, dim]]];
  w.layers.forEach((lw, l) => {
    const n = layerTensorNames(l);
    out.push([n.attnNorm, lw.attnNorm, [dim]], [n.wq, lw.wq, [qd, dim]], [n.wk, lw.wk, [kv, dim]], [n.wv, lw.wv, [kv, dim]],
      [n.wo, lw.wo, [dim, qd]], [n.ffnNorm, lw.ffnNorm, [dim]], [n.wGate, lw.wGate, [hid, dim]], [n.wUp, lw.wUp, [hid, dim]],
      [n.wDown, lw.wDown, [dim, hid]]);
  });
  out.push(['model.norm.weight', w.finalNorm, [dim]]);
  if (w.lmHead) out.push(['lm_head.weight', w.lmHead, [c.vocabSize, dim]]);
  return out;
}

/** Write config.json + model.safetensors for (c, w) into dir. */
export async function writeLlamaDir(dir: string, c: LlamaConfig, w: LlamaWeights, dtype: 'F32' | 'BF16' = 'F32'): Promise<void> {
  await mkdir(dir, { recursive: true });
  const s = c.ropeScaling;
  await writeFile(join(dir, 'config.json'), JSON.stringify({
    model_type: 'llama', hidden_act: 'silu', hidden_size: c.hiddenSize, intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers, num_attention_heads: c.numHeads, num_key_value_heads: c.numKvHeads, head_dim: c.headDim,
    rms_norm_eps: c.rmsNormEps, rope_theta: c.ropeTheta, tie_word_embeddings: c.tieWordEmbeddings, vocab_size: c.vocabSize,
    max_position_embeddings: c.maxPositionEmbeddings, bos_token_id: c.bosTokenId, eos_token_id: c.eosTokenIds,
    rope_scaling: s && { rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalMaxPositionEmbeddings },
  }));
  const list = tensors(c, w);
  const header: Record<string, unknown> = {};
  const bytes = dtype === 'F32' ? 4 : 2;
  let off = 0;
  for (const [name, data, shape] of list) {
    header[name] = { dtype, shape, data_offsets: [off, off + data.length * bytes] };
    off += data.length * bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const head = Buffer.alloc(8 + json.length);
  head.writeBigUInt64LE(BigInt(json.length), 0);
  head.write(json, 8, 'utf8');
  const parts: Buffer[] = [head];
  for (const [, data] of list) {
    if (dtype === 'F32') parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    else {
      const u = new Uint16Array(data.length);
      for (let i = 0; i < data.length; i++) u[i] = f32ToBf16Bits(data[i]);
      parts.push(Buffer.from(u.buffer));
    }
  }
  await writeFile(join(dir, 'model.safetensors'), Buffer.concat(parts));
}
