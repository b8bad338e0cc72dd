// `duet generate --model DIR --prompt TEXT [--backend cpu|webgpu] [--quant none|auto|f16|bf16|q8|q4]
//  [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--chat] [--json]`
// Plain autoregressive generation with one model (no speculation): the reference a user
// compares `duet speculate` against. Text streams to stdout as tokens arrive; --json prints
// one object at the end. Also exports openBackend(), shared with `duet perplexity`.

import { parseArgs } from 'node:util';
import type { CausalLM } from '../engine/model.ts';
import type { LlamaConfig } from '../engine/config.ts';
import type { LlamaWeights } from '../engine/weights.ts';
import { CpuLlama } from '../engine/reference.ts';
import { openModelDir } from '../engine/loader/node.ts';
import { type QuantChoice, loadWeightsF32, resolveWeightFormat, stopTokenIds, type OpenedModel } from '../engine/loader/model.ts';
import type { ProgressFn } from '../engine/loader/source.ts';
import { Tokenizer } from '../engine/tokenizer.ts';
import { Rng, STREAM_TARGET, sampleRow, validateSampling, type SamplingParams } from '../engine/sampling.ts';
import { type WeightFormat, dequantize, packMatrix } from '../engine/quantize.ts';
import { withLoadBar } from '../../server/progress.ts';

export class UsageError extends Error {
  override name = 'UsageError';
}

/** 'auto': the format that keeps a GGUF file's own precision (q4 / q8), else f32 (model.autoFormat). */
export type Quant = QuantChoice;
const QUANTS: readonly string[] = ['none', 'auto', 'f32', 'f16', 'bf16', 'q8', 'q4'];

export function parseQuant(s: string | undefined): Quant {
  const q = s ?? 'none';
  if (!QUANTS.includes(q)) throw new UsageError(`--quant ${q}: use one of ${QUANTS.join(', ')}`);
  return q as Quant;
}

export function parseBackend(s: string | undefined): 'cpu' | 'webgpu' {
  const b = s ?? 'cpu';
  if (b !== 'cpu' && b !== 'webgpu') throw new UsageError(`--backend ${b}: use cpu or webgpu`);
  return b;
}

export function num(flag: string, s: string | undefined, fallback: number, { int = false, min = -Infinity } = {}): number {
  if (s === undefined) return fallback;
  const v = Number(s);
  if (!Number.isFinite(v) || (int && !Number.isInteger(v)) || v < min) throw new UsageError(`--${flag} ${s}: expected ${int ? 'an integer' : 'a number'} >= ${min}`);
  return v;
}

/**
 * Round-trip every matrix through the engine's packed format, so the CPU reference runs on
 * exactly the values the GPU kernels would see with --quant (norms stay f32, as on the GPU).
 */
function quantizeForCpu(c: LlamaConfig, w: LlamaWeights, format: WeightFormat): LlamaWeights {
  const q = (m: Float32Array, rows: number, cols: number) => dequantize(packMatrix(m, rows, cols, format));
  const dim = c.hiddenSize;
  const qd = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const hid = c.intermediateSize;
  return {
    embed: q(w.embed, c.vocabSize, dim),
    finalNorm: w.finalNorm,
    lmHead: w.lmHead && q(w.lmHead, c.vocabSize, dim),
    layers: w.layers.map((l) => ({
      attnNorm: l.attnNorm, ffnNorm: l.ffnNorm,
      wq: q(l.wq, qd, dim), wk: q(l.wk, kv, dim), wv: q(l.wv, kv, dim), wo: q(l.wo, dim, qd),
      wGate: q(l.wGate, hid, dim), wUp: q(l.wUp, hid, dim), wDown: q(l.wDown, dim, hid),
    })),
  };
}

export interface Backend {
  model: OpenedModel;
  lm: CausalLM;
  tokenizer: Tokenizer | null;
  adapter: string | null;
  /** the weight format the backend runs (--quant resolved; 'auto' → the file's precision) */
  format: WeightFormat;
  loadMs: number;
  close(): Promise<void>;
}

/** Load `dir` (HF folder or .gguf) onto the cpu reference or the WGSL engine. */
export async function openBackend(dir: string, backend: 'cpu' | 'webgpu', quant: Quant, maxContext?: number, onProgress?: ProgressFn): Promise<Backend> {
  const t0 = performance.now();
  const model = await openModelDir(dir, { onProgress });
  const c = model.config;
  const ctxLen = Math.min(maxContext ?? 2048, c.maxPositionEmbeddings);
  const tokenizer = model.tokenizerJson ? new Tokenizer(model.tokenizerJson, model.tokenizerConfig) : null;
  const format = resolveWeightFormat(quant, model);
  try {
    if (backend === 'cpu') {
      let w = await loadWeightsF32(model);
      if (format !== 'f32') w = quantizeForCpu(c, w, format);
      const lm = new CpuLlama(c, w, ctxLen);
      return { model, lm, tokenizer, adapter: null, format, loadMs: performance.now() - t0, close: () => model.close() };
    }
    const { requestDevice } = await import('../kernels/gpu.ts');
    const { createEngine } = await import('../engine/gpu/index.ts');
    const gpu = await requestDevice();
    const lm = await createEngine(gpu, c, model.tensors(), { format, maxContext: ctxLen });
    return {
      model, lm, tokenizer, adapter: gpu.adapterName, format, loadMs: performance.now() - t0,
      close: async () => {
        lm.dispose();
        gpu.device.destroy();
        await model.close();
      },
    };
  } catch (err) {
    await model.close();
    throw err;
  }
}

export interface Generated {
  tokens: number[];
  stopReason: 'eos' | 'length' | 'context';
  prefillMs: number;
  decodeMs: number;
}

/** Plain autoregressive generation: prefill, then one forward per token until eos, maxTokens or a full context. */
export async function generateTokens(lm: CausalLM, prompt: number[], params: SamplingParams, maxTokens: number, eos: ReadonlySet<number>, onToken?: (t: number) => void): Promise<Generated> {
  const V = lm.config.vocabSize;
  const rng = new Rng(params.seed, STREAM_TARGET);
  const out: number[] = [];
  let stopReason: Generated['stopReason'] = 'length';
  const tPrefill = performance.now();
  let logits = await lm.forward(prompt, 0);
  let row = (prompt.length - 1) * V;
  const prefillMs = performance.now() - tPrefill;
  const tDecode = performance.now();
  for (;;) {
    const tok = sampleRow(logits, params, rng, row, V);
    out.push(tok);
    onToken?.(tok);
    if (eos.has(tok)) {
      stopReason = 'eos';
      break;
    }
    if (out.length >= maxTokens) break;
    if (lm.length + 1 > lm.maxContext) {
      stopReason = 'context';
      break;
    }
    logits = await lm.forward([tok], lm.length);
    row = 0;
  }
  return { tokens: out, stopReason, prefillMs, decodeMs: performance.now() - tDecode };
}

const HELP = `usage: duet generate --model DIR --prompt TEXT [options]
  --model DIR          HF model folder (config.json, tokenizer.json, *.safetensors) or a .gguf file
  --prompt TEXT        prompt text (encoded with the model's tokenizer, BOS added as it specifies)
  --tokens 1,2,3       prompt as token ids instead of text
  --chat               wrap the prompt as one user message in the model's chat template
  --backend cpu|webgpu default cpu
  --quant none|auto|f16|bf16|q8|q4   weight format (cpu: matrices rounded through the same format);
                       auto: a 4-bit GGUF (Q4_K_M, Q4_0, ...) as q4, an 8-bit one (Q8_0, Q6_K, ...) as q8, else f32
  --max-tokens N       default 64
  --temperature T      default 0 (greedy)
  --top-k K --top-p P  default off (0 / 1)
  --seed S             default 0
  --json               print one JSON object instead of streaming text`;

export async function run(argv: string[]): Promise<number> {
  const { values: a } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, prompt: { type: 'string' }, tokens: { type: 'string' }, chat: { type: 'boolean' },
      backend: { type: 'string' }, quant: { type: 'string' }, 'max-tokens': { type: 'string' }, temperature: { type: 'string' },
      'top-k': { type: 'string' }, 'top-p': { type: 'string' }, seed: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (a.help) {
    console.log(HELP);
    return 0;
  }
  if (!a.model) throw new UsageError('--model DIR is required\n' + HELP);
  if ((a.prompt === undefined) === (a.tokens === undefined)) throw new UsageError('give exactly one of --prompt TEXT or --tokens 1,2,3\n' + HELP);
  const backend = parseBackend(a.backend);
  const quant = parseQuant(a.quant);
  const maxTokens = num('max-tokens', a['max-tokens'], 64, { int: true, min: 1 });
  const params: SamplingParams = {
    temperature: num('temperature', a.temperature, 0, { min: 0 }),
    topK: num('top-k', a['top-k'], 0, { int: true, min: 0 }),
    topP: num('top-p', a['top-p'], 1),
    seed: num('seed', a.seed, 0, { int: true }),
  };
  validateSampling(params);

  const be = await withLoadBar(a.model, !!a.json, (onProgress) => openBackend(a.model!, backend, quant, undefined, onProgress));
  try {
    const { lm, tokenizer } = be;
    const c = lm.config;
    let prompt: number[];
    if (a.tokens !== undefined) {
      prompt = a.tokens.split(',').map((s) => Number(s.trim()));
      const bad = prompt.find((t) => !Number.isInteger(t) || t < 0 || t >= c.vocabSize);
      if (bad !== undefined || prompt.length === 0) throw new UsageError(`--tokens: ids must be integers in [0, ${c.vocabSize})`);
    } else {
      if (!tokenizer) throw new UsageError(`${a.model} has no tokenizer.json; pass --tokens instead of --prompt`);
      prompt = a.chat ? tokenizer.encodeChat([{ role: 'user', content: a.prompt! }]) : tokenizer.encode(a.prompt!, { addSpecialTokens: true });
      if (prompt.length === 0) throw new UsageError('--prompt encodes to no tokens');
    }
    if (prompt.length >= lm.maxContext) throw new UsageError(`prompt has ${prompt.length} tokens; the context holds ${lm.maxContext}`);
    const eos = new Set(stopTokenIds(be.model.generationConfig, c, tokenizer));
    const stream = tokenizer?.streamDecoder({ skipSpecialTokens: true });
    const { tokens: out, stopReason, prefillMs, decodeMs } = await generateTokens(lm, prompt, params, maxTokens, eos, (tok) => {
      if (!a.json && stream) process.stdout.write(stream.push(tok));
    });
    const text = tokenizer ? tokenizer.decode(out, { skipSpecialTokens: true }) : null;
    if (a.json) {
      console.log(JSON.stringify({
        model: be.model.source.id, backend, adapter: be.adapter, quant, format: be.format, sampling: params,
        promptTokens: prompt, tokens: out, text, stopReason,
        timings: { loadMs: round(be.loadMs), prefillMs: round(prefillMs), decodeMs: round(decodeMs), decodeTokensPerSec: round((out.length - 1) / (decodeMs / 1000)) },
      }));
    } else {
      if (stream) process.stdout.write(stream.flush() + '\n');
      else console.log(out.join(','));
      console.error(`[${out.length} tokens, stop: ${stopReason}, prefill ${round(prefillMs)} ms, decode ${round((out.length - 1) / (decodeMs / 1000))} tok/s, ${backend}${be.adapter ? ` (${be.adapter})` : ''}, quant ${quant}${quant === 'auto' ? ` (${be.format})` : ''}]`);
    }
    return 0;
  } finally {
    await be.close();
  }
}

const round = (x: number): number => (Number.isFinite(x) ? Math.round(x * 100) / 100 : 0);
