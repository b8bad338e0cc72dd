// GGUF input: metadata and tensor infos parsed by @huggingface/gguf (fed through our
// ModelSource with a fetch shim, so local files, URLs and picked files all work), then
// llama.cpp names/metadata mapped to HF names and a LlamaConfig, tensors dequantized to f32
// one at a time, read and decoded in slabs of whole rows (ggml-quants.ts: F32, F16, BF16,
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS), and llama.cpp's Q/K row
// permutation (interleaved RoPE pairs) undone so the weights match HF's rotate_half layout.
// `autoFormat` names the engine format that keeps the file's precision (--quant auto).

import { gguf, type GGUFParseOutput } from '@huggingface/gguf';
import { ConfigError, parseConfig, ropeInvFreq } from '../config.ts';
import { layerTensorNames } from '../weights.ts';
import { ModelSourceError, WeightsFormatError } from './errors.ts';
import { type GenerationConfig, type LoadedTensor, type OpenModelOptions, type OpenedModel, checkTensorSet, parseGenerationConfig } from './checkpoint.ts';
import { type GgmlTypeInfo, dequantizeGgml, dequantizeInto, ggmlType } from './ggml-quants.ts';
import type { WeightFormat } from '../quantize.ts';
import { type TensorInfo } from './safetensors.ts';
import { ggufTokenizer } from './gguf-tokenizer.ts';
import { type ModelSource, type SourceFile, ProgressTracker, ShortReadError } from './source.ts';

/** llama.cpp tensor name → HF name (null: not a weight the forward needs). */
export function hfName(ggufName: string): string | null {
  const fixed: Record<string, string> = {
    'token_embd.weight': 'model.embed_tokens.weight',
    'output_norm.weight': 'model.norm.weight',
    'output.weight': 'lm_head.weight',
  };
  if (ggufName in fixed) return fixed[ggufName];
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(ggufName);
  if (!m) return null;
  const n = layerTensorNames(Number(m[1]));
  const map: Record<string, string> = {
    attn_norm: n.attnNorm, attn_q: n.wq, attn_k: n.wk, attn_v: n.wv, attn_output: n.wo,
    ffn_norm: n.ffnNorm, ffn_gate: n.wGate, ffn_up: n.wUp, ffn_down: n.wDown,
  };
  return map[m[2]] ?? null;
}

/** A fetch that answers Range requests from a SourceFile, so the gguf parser reads through our sources. */
function fetchShim(f: SourceFile): typeof fetch {
  return (async (_url: string, init?: RequestInit) => {
    const range = /bytes=(\d+)-(\d+)/.exec(String((init?.headers as Record<string, string> | undefined)?.Range ?? ''));
    const start = range ? Number(range[1]) : 0;
    const end = Math.min(range ? Number(range[2]) + 1 : f.byteLength, f.byteLength);
    const body = start < end ? await f.read(start, end - start) : new Uint8Array(0);
    return new Response(body as unknown as BodyInit, { status: 206, headers: { 'content-range': `bytes ${start}-${end - 1}/${f.byteLength}` } });
  }) as typeof fetch;
}

type Meta = Record<string, unknown>;

function metaNum(meta: Meta, file: string, key: string, fallback?: number): number {
  const v = meta[key] ?? fallback;
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new ConfigError(file, key, `missing or not a number (${String(v)})`);
  return shortestF32(n);
}

/** GGUF stores floats as f32 (1e-5 → 9.99999974e-6); recover the shortest decimal that rounds to it, as written in config.json. */
function shortestF32(n: number): number {
  if (Number.isInteger(n) || Math.fround(n) !== n) return n;
  for (let p = 1; p <= 9; p++) {
    const d = Number(n.toPrecision(p));
    if (Math.fround(d) === n) return d;
  }
  return n;
}

/** Map GGUF llama metadata to a HF-style config.json object (then parsed by parseConfig). */
export function ggufConfigJson(meta: Meta, file: string, infos: GGUFParseOutput['tensorInfos'], ropeFactors: Float32Array | null): Record<string, unknown> {
  const arch = meta['general.architecture'];
  if (arch !== 'llama') throw new ConfigError(file, 'general.architecture', `unsupported ${JSON.stringify(arch)}; duet runs "llama" GGUF files`);
  const embd = infos.find((t) => t.name === 'token_embd.weight');
  if (!embd) throw new WeightsFormatError(file, 'token_embd.weight', 'missing tensor');
  const hidden = metaNum(meta, file, 'llama.embedding_length');
  const heads = metaNum(meta, file, 'llama.attention.head_count');
  const tokens = meta['tokenizer.ggml.tokens'];
  const json: Record<string, unknown> = {
    model_type: 'llama',
    hidden_size: hidden,
    intermediate_size: metaNum(meta, file, 'llama.feed_forward_length'),
    num_hidden_layers: metaNum(meta, file, 'llama.block_count'),
    num_attention_heads: heads,
    num_key_value_heads: metaNum(meta, file, 'llama.attention.head_count_kv', heads),
    head_dim: metaNum(meta, file, 'llama.attention.key_length', metaNum(meta, file, 'llama.rope.dimension_count', hidden / heads)),
    rms_norm_eps: metaNum(meta, file, 'llama.attention.layer_norm_rms_epsilon', 1e-5),
    rope_theta: metaNum(meta, file, 'llama.rope.freq_base', 10000),
    max_position_embeddings: metaNum(meta, file, 'llama.context_length'),
    vocab_size: metaNum(meta, file, 'llama.vocab_size', Array.isArray(tokens) ? tokens.length : Number(embd.shape[1])),
    tie_word_embeddings: !infos.some((t) => t.name === 'output.weight'),
    bos_token_id: meta['tokenizer.ggml.bos_token_id'] === undefined ? null : metaNum(meta, file, 'tokenizer.ggml.bos_token_id'),
    // llama.cpp keeps end-of-turn / end-of-message apart from eos; generation stops at any of them
    eos_token_id: [...new Set(['eos', 'eot', 'eom'].filter((k) => meta[`tokenizer.ggml.${k}_token_id`] !== undefined).map((k) => metaNum(meta, file, `tokenizer.ggml.${k}_token_id`)))],
  };
  const scalingType = meta['llama.rope.scaling.type'];
  if (scalingType !== undefined && scalingType !== 'none' && !ropeFactors) {
    throw new ConfigError(file, 'llama.rope.scaling.type', `unsupported ${JSON.stringify(scalingType)}; duet implements llama3 scaling (rope_freqs.weight)`);
  }
  if (ropeFactors) json.rope_scaling = inferLlama3Scaling(json, ropeFactors, file);
  return json;
}

/**
 * llama.cpp stores llama3 RoPE scaling only as per-frequency divisors (rope_freqs.weight).
 * Recover an HF rope_scaling that reproduces them: factor = the largest divisor; in the
 * blend band the divisor d gives s = (1/d - 1/factor) / (1 - 1/factor), and HF defines
 * s = (orig/wavelen - low) / (high - low) — linear in 1/wavelen, so only two combinations
 * of (low, high, orig) are observable. Llama 3's low = 1, high = 4 are kept when they fit
 * (orig then follows from any band point); otherwise all three are fitted, scaled so that
 * orig is an integer (HF requires one; scaling all three leaves the curve unchanged).
 * The result must reproduce every divisor to 1e-5 (relative), else the file is refused.
 */
function inferLlama3Scaling(json: Record<string, unknown>, factors: Float32Array, file: string): Record<string, unknown> {
  const factor = factors.reduce((a, b) => Math.max(a, b), 0);
  const headDim = Number(json.head_dim);
  const theta = Number(json.rope_theta);
  const wavelen = Array.from(factors, (_, i) => 2 * Math.PI * Math.pow(theta, (2 * i) / headDim));
  const band: [number, number][] = []; // (1/wavelen, s)
  factors.forEach((d, i) => {
    if (d > 1 + 1e-6 && d < factor * (1 - 1e-6)) band.push([1 / wavelen[i], (1 / d - 1 / factor) / (1 - 1 / factor)]);
  });
  const candidates: { low: number; high: number; orig: number }[] = [];
  // low = 1, high = 4 (Llama 3.x): orig from each band point; with no band point, any orig
  // that keeps the undivided (d = 1) wavelengths below orig/4 and the d = factor ones above orig.
  if (band.length) candidates.push({ low: 1, high: 4, orig: (band[0][1] * 3 + 1) / band[0][0] });
  else {
    const lo = 4 * Math.max(0, ...wavelen.filter((_, i) => factors[i] <= 1 + 1e-6));
    const hi = Math.min(...wavelen.filter((_, i) => factors[i] >= factor * (1 - 1e-6)));
    candidates.push({ low: 1, high: 4, orig: Number.isFinite(hi) && lo > 0 ? Math.sqrt(lo * hi) : lo || hi / 2 });
  }
  // General fit of the line s = A x + B (x = 1/wavelen): through the band points, with the
  // undivided frequencies at s >= 1 and the fully divided ones at s <= 0.
  const xs = (pred: (d: number) => boolean) => wavelen.map((w) => 1 / w).filter((_, i) => pred(factors[i]));
  const unit = xs((d) => d <= 1 + 1e-6);
  const full = xs((d) => d >= factor * (1 - 1e-6));
  let A = NaN;
  let B = NaN;
  if (band.length >= 2) {
    const n = band.length;
    const mx = band.reduce((a, [x]) => a + x, 0) / n;
    const my = band.reduce((a, [, y]) => a + y, 0) / n;
    A = band.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0) / band.reduce((a, [x]) => a + (x - mx) ** 2, 0);
    B = my - A * mx;
  } else if (band.length === 1) {
    const [x1, s1] = band[0];
    const bounds = [...unit.map((x) => (1 - s1) / (x - x1)), ...full.map((x) => s1 / (x1 - x)), (s1 / x1) * 1.0001];
    A = Math.max(...bounds);
    B = s1 - A * x1;
  } else if (unit.length && full.length) {
    const xf = Math.max(...full);
    A = 1 / (Math.min(...unit) - xf);
    B = -xf * A;
  }
  if (A > 0 && B < 0) {
    // low = 1 gives high = 1 - 1/B, orig = -A/B; scaling all three keeps the curve: make orig an integer
    const orig = -A / B;
    const k = Math.max(1, Math.round(orig)) / orig;
    candidates.push({ low: k, high: k * (1 - 1 / B), orig: orig * k });
  }
  let worst = '';
  for (const c of candidates) {
    const scaling = { rope_type: 'llama3', factor, low_freq_factor: c.low, high_freq_factor: c.high, original_max_position_embeddings: Math.round(c.orig) };
    const cfg = parseConfig({ ...json, rope_scaling: scaling }, file);
    const base = ropeInvFreq({ ...cfg, ropeScaling: null });
    const scaled = ropeInvFreq(cfg);
    const bad = Array.from(factors).findIndex((d, i) => Math.abs(base[i] / scaled[i] - d) > 1e-5 * d);
    if (bad < 0) return scaling;
    worst = `factor ${bad} = ${factors[bad]} vs ${base[bad] / scaled[bad]} from ${JSON.stringify(scaling)}`;
  }
  throw new ConfigError(file, 'rope_freqs.weight', `per-frequency factors do not follow llama3 RoPE scaling (${worst}); unsupported RoPE scaling`);
}

/** Byte size of a ggml tensor, or a typed error for an unsupported type or a ragged row. */
function ggmlBytes(file: string, name: string, t: GgmlTypeInfo, numel: number, rowLen: number): number {
  if (rowLen % t.blockElems !== 0) throw new WeightsFormatError(file, name, `row length ${rowLen} is not a multiple of the ${t.name} block size ${t.blockElems}`);
  return (numel / t.blockElems) * t.blockBytes;
}

/**
 * The engine format that keeps a file's precision (--quant auto): the precision class of
 * the type holding most matrix elements — a Q4_K_M file (Q4_K, some Q6_K) stays 4-bit, a
 * Q8_0 or Q6_K file 8-bit; float files keep what loading does without --quant (f32).
 */
export function autoFormatOf(matrices: { type: GgmlTypeInfo; numel: number }[]): WeightFormat {
  const elems = new Map<string, number>();
  for (const m of matrices) elems.set(m.type.precision, (elems.get(m.type.precision) ?? 0) + m.numel);
  let best = 'float';
  for (const [k, n] of elems) if (n > (elems.get(best) ?? 0)) best = k;
  return best === 'float' ? 'f32' : (best as WeightFormat);
}

/** Undo convert_hf_to_gguf.py's permute(): row h*hd + 2i + j (llama.cpp) → h*hd + j*hd/2 + i (HF). */
export function unpermuteQK(w: Float32Array, nHead: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < nHead; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = h * headDim + 2 * i + j;
        const dst = h * headDim + j * half + i;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

interface GgufTensor extends TensorInfo {
  ggmlType: GgmlTypeInfo;
  ggufName: string;
}

export async function openGgufModel(source: ModelSource, file: string, opts: OpenModelOptions): Promise<OpenedModel> {
  const f = await source.open(file);
  try {
    return await openGgufFile(source, f, opts);
  } catch (err) {
    await f.close();
    throw err;
  }
}

async function openGgufFile(source: ModelSource, f: SourceFile, opts: OpenModelOptions): Promise<OpenedModel> {
  const file = f.name;
  let parsed: GGUFParseOutput;
  try {
    parsed = await gguf(`https://gguf.invalid/${encodeURIComponent(file)}`, { fetch: fetchShim(f) });
  } catch (err) {
    if (err instanceof ModelSourceError) throw err;
    throw new WeightsFormatError(file, '(header)', `not a readable GGUF file: ${(err as Error).message}`);
  }
  if (!parsed.littleEndian) throw new WeightsFormatError(file, '(header)', 'big-endian GGUF is not supported');
  const meta = parsed.metadata as unknown as Meta;
  const dataStart = Number(parsed.tensorDataOffset);
  const tensors: GgufTensor[] = [];
  let ropeFactors: Float32Array | null = null;
  for (const t of parsed.tensorInfos) {
    const ggmlShape = t.shape.map(Number);
    const numel = ggmlShape.reduce((a, b) => a * b, 1);
    const type = ggmlType(file, t.name, t.dtype);
    const byteLength = ggmlBytes(file, t.name, type, numel, ggmlShape[0]);
    const offset = dataStart + Number(t.offset);
    if (offset + byteLength > f.byteLength) {
      throw new WeightsFormatError(file, t.name, `data [${offset}, ${offset + byteLength}) runs past the end of the file (${f.byteLength} bytes): truncated download?`);
    }
    if (t.name === 'rope_freqs.weight') {
      ropeFactors = dequantizeGgml(await f.read(offset, byteLength), type, numel);
      continue;
    }
    const name = hfName(t.name);
    if (name === null) throw new WeightsFormatError(file, t.name, 'unexpected tensor for a llama GGUF');
    tensors.push({ name, ggufName: t.name, file, dtype: type.name, ggmlType: type, shape: [...ggmlShape].reverse(), offset, byteLength });
  }
  const configJson = ggufConfigJson(meta, file, parsed.tensorInfos, ropeFactors);
  const config = parseConfig(configJson, file);
  // checkTensorSet checks dtypes against safetensors' list; GGUF types were checked above.
  const usable = checkTensorSet(config, tensors.map((t) => ({ ...t, dtype: 'F32' }))).map((u) => tensors.find((t) => t.name === u.name)!);
  usable.sort((a, b) => a.offset - b.offset);
  const stat = await source.stat(file);
  const readJson = async (name: string): Promise<Record<string, unknown> | null> => {
    const text = await source.readText(name);
    if (text === null) return null;
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ConfigError(name, '(root)', `invalid JSON: ${(err as Error).message}`);
    }
  };
  const genRaw = await readJson('generation_config.json');
  // A tokenizer.json shipped beside the .gguf wins; else rebuild one from tokenizer.ggml.*.
  const tokenizerFiles = async (): Promise<{ tokenizerJson: Record<string, unknown> | null; tokenizerConfig: Record<string, unknown> | null }> => {
    const beside = await readJson('tokenizer.json');
    const rebuilt = ggufTokenizer(meta);
    const fromGguf = 'tokenizerJson' in rebuilt ? rebuilt : null;
    return {
      tokenizerJson: beside ?? fromGguf?.tokenizerJson ?? null,
      tokenizerConfig: (await readJson('tokenizer_config.json')) ?? (beside ? null : fromGguf?.tokenizerConfig ?? null),
    };
  };
  const generationConfig: GenerationConfig = parseGenerationConfig(genRaw ?? {}, config);
  const totalBytes = usable.reduce((a, t) => a + t.byteLength, 0);
  const autoFormat = autoFormatOf(usable.filter((t) => t.shape.length === 2).map((t) => ({ type: t.ggmlType, numel: t.shape[0] * t.shape[1] })));
  return {
    source,
    format: 'gguf',
    config,
    configJson,
    generationConfig,
    ...(await tokenizerFiles()),
    weightFiles: [{ name: file, byteLength: f.byteLength, version: stat?.version }],
    tensorInfos: usable,
    autoFormat,
    async *tensors(): AsyncIterable<LoadedTensor> {
      const progress = new ProgressTracker(totalBytes, opts.onProgress);
      for (const t of usable) {
        const rows = t.shape.length > 1 ? t.shape[0] : 1;
        const data = await readRowsF32(t, 0, rows, (n) => progress.add(file, n));
        yield { name: t.name, shape: t.shape, data: toHf(t, data, t.shape[0]) };
      }
      progress.add(file, 0, true);
    },
    async readRows(name, rowStart, rowCount) {
      const t = usable.find((u) => u.name === name);
      if (!t) throw new WeightsFormatError(file, name, 'no such tensor in this model');
      const cols = t.shape.length > 1 ? t.shape[t.shape.length - 1] : t.shape[0];
      const rows = t.shape.length > 1 ? t.shape[0] : 1;
      if (rowStart < 0 || rowCount < 0 || rowStart + rowCount > rows) throw new RangeError(`${name}: rows [${rowStart}, ${rowStart + rowCount}) outside [0, ${rows})`);
      if (isQK(t) && (rowStart % config.headDim || rowCount % config.headDim)) {
        throw new RangeError(`${name}: Q/K rows must be read in whole heads (multiples of ${config.headDim}) to undo llama.cpp's permutation`);
      }
      return toHf(t, await readRowsF32(t, rowStart, rowCount), rowCount);
    },
    async close() {
      await f.close();
    },
  };

  /**
   * Rows [rowStart, rowStart + rowCount) as f32, read and decoded a slab of whole rows at a
   * time (about source.chunkBytes of file bytes), so the peak is the f32 result plus one slab.
   */
  async function readRowsF32(t: GgufTensor, rowStart: number, rowCount: number, onBytes?: (n: number) => void): Promise<Float32Array> {
    const rows = t.shape.length > 1 ? t.shape[0] : 1;
    const cols = t.shape[t.shape.length - 1];
    const rowBytes = t.byteLength / rows;
    const slabRows = Math.max(1, Math.floor(source.chunkBytes / rowBytes));
    const out = new Float32Array(rowCount * cols);
    for (let r = 0; r < rowCount; r += slabRows) {
      const n = Math.min(slabRows, rowCount - r);
      let bytes: Uint8Array;
      try {
        bytes = await f.read(t.offset + (rowStart + r) * rowBytes, n * rowBytes);
      } catch (err) {
        if (err instanceof ShortReadError) throw new WeightsFormatError(file, t.ggufName, err.message.slice(file.length + 2));
        throw err;
      }
      dequantizeInto(out, r * cols, bytes, t.ggmlType, n * cols);
      onBytes?.(bytes.length);
    }
    return out;
  }

  function isQK(t: GgufTensor): boolean {
    return t.ggufName.endsWith('.attn_q.weight') || t.ggufName.endsWith('.attn_k.weight');
  }

  /** Undo the Q/K permutation on `rows` whole-head rows (the permutation never crosses heads). */
  function toHf(t: GgufTensor, data: Float32Array, rows: number): Float32Array {
    if (!isQK(t)) return data;
    return unpermuteQK(data, rows / config.headDim, config.headDim, t.shape[t.shape.length - 1]);
  }
}
