// `duet logits`: the logits of a HF model directory at given token ids, on the CPU reference or
// the WGSL engine (Node + Dawn). With --quant, the cpu backend runs on the weights the chosen
// format stores (quantized then dequantized), so both backends compute the same function;
// --quant auto takes the format that keeps a GGUF file's own precision (q4 / q8 / f32).

import { parseArgs } from 'node:util';
import { type LlamaConfig } from '../engine/config.ts';
import type { CausalLM } from '../engine/model.ts';
import { CpuLlama } from '../engine/reference.ts';
import { type WeightFormat, dequantize, packMatrix } from '../engine/quantize.ts';
import { type LlamaWeights, expectedShapes } from '../engine/weights.ts';
import { openModelDir } from '../engine/loader/node.ts';
import { loadWeightsF32, resolveWeightFormat } from '../engine/loader/model.ts';
import { createEngine } from '../engine/gpu/index.ts';
import { requestDevice } from '../kernels/gpu.ts';

const USAGE = `usage: duet logits --model DIR --tokens 1,2,3 [--backend cpu|webgpu] [--quant none|auto|q8|q4] [--json]
  --model DIR     HF model folder (config.json + *.safetensors) or a .gguf file
  --tokens LIST   comma-separated token ids, run as one forward from position 0
  --backend B     cpu (TypeScript reference, default) or webgpu (WGSL engine via Dawn)
  --quant Q       weight format: none (f32), q8, q4, or auto (a 4-bit GGUF as q4, an 8-bit one as q8, else f32)
  --json          print {"vocab","positions","argmax","logits"} as JSON`;

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface LogitsResult {
  vocab: number;
  positions: number;
  argmax: number[];
  logits: number[][];
}

export interface LogitsOptions {
  model: string;
  tokens: number[];
  backend: 'cpu' | 'webgpu';
  quant: 'none' | 'auto' | 'q8' | 'q4';
}

export function parseLogitsArgs(argv: string[]): LogitsOptions & { json: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      tokens: { type: 'string' },
      backend: { type: 'string', default: 'cpu' },
      quant: { type: 'string', default: 'none' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!values.model) throw new UsageError(`--model is required\n${USAGE}`);
  if (!values.tokens) throw new UsageError(`--tokens is required\n${USAGE}`);
  const tokens = values.tokens.split(',').map((s) => s.trim());
  if (tokens.some((t) => !/^\d+$/.test(t))) throw new UsageError(`--tokens must be comma-separated non-negative integers, got "${values.tokens}"`);
  if (values.backend !== 'cpu' && values.backend !== 'webgpu') throw new UsageError(`--backend must be cpu or webgpu, got "${values.backend}"`);
  if (!['none', 'auto', 'q8', 'q4'].includes(values.quant!)) throw new UsageError(`--quant must be none, auto, q8 or q4, got "${values.quant}"`);
  return { model: values.model, tokens: tokens.map(Number), backend: values.backend, quant: values.quant as LogitsOptions['quant'], json: values.json! };
}

/** Replace every matrix by the values `format` stores. */
function asStored(c: LlamaConfig, w: LlamaWeights, format: WeightFormat): LlamaWeights {
  if (format === 'f32') return w;
  const shapes = expectedShapes(c);
  const q = (m: Float32Array, name: string) => {
    const [rows, cols] = shapes.get(name)!;
    return dequantize(packMatrix(m, rows, cols, format));
  };
  return {
    embed: q(w.embed, 'model.embed_tokens.weight'),
    finalNorm: w.finalNorm,
    lmHead: w.lmHead && q(w.lmHead, 'lm_head.weight'),
    layers: w.layers.map((L, l) => {
      const p = `model.layers.${l}.`;
      return {
        ...L,
        wq: q(L.wq, p + 'self_attn.q_proj.weight'),
        wk: q(L.wk, p + 'self_attn.k_proj.weight'),
        wv: q(L.wv, p + 'self_attn.v_proj.weight'),
        wo: q(L.wo, p + 'self_attn.o_proj.weight'),
        wGate: q(L.wGate, p + 'mlp.gate_proj.weight'),
        wUp: q(L.wUp, p + 'mlp.up_proj.weight'),
        wDown: q(L.wDown, p + 'mlp.down_proj.weight'),
      };
    }),
  };
}

export async function computeLogits(o: LogitsOptions): Promise<LogitsResult & { format: WeightFormat }> {
  let model: CausalLM;
  let cleanup = () => {};
  let format: WeightFormat;
  if (o.backend === 'cpu') {
    const opened = await openModelDir(o.model);
    try {
      format = resolveWeightFormat(o.quant, opened);
      model = new CpuLlama(opened.config, asStored(opened.config, await loadWeightsF32(opened), format), Math.max(1, o.tokens.length));
    } finally {
      await opened.close();
    }
  } else {
    const ctx = await requestDevice();
    const opened = await openModelDir(o.model);
    format = resolveWeightFormat(o.quant, opened);
    try {
      // Streamed: one tensor in CPU memory at a time. f32 KV keeps the cache exact.
      model = await createEngine(ctx, opened.config, opened.tensors(), { format, kvFormat: 'f32', maxContext: Math.max(1, o.tokens.length) });
    } finally {
      await opened.close();
    }
    cleanup = () => ctx.device.destroy();
  }
  try {
    const V = model.config.vocabSize;
    const bad = o.tokens.find((t) => t >= V);
    if (bad !== undefined) throw new UsageError(`token id ${bad} is outside the model's vocabulary [0, ${V})`);
    const flat = await model.forward(o.tokens, 0);
    const logits: number[][] = [];
    const argmax: number[] = [];
    for (let r = 0; r < o.tokens.length; r++) {
      const row = flat.subarray(r * V, (r + 1) * V);
      let best = 0;
      for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
      argmax.push(best);
      logits.push(Array.from(row));
    }
    return { vocab: V, positions: o.tokens.length, argmax, logits, format };
  } finally {
    model.dispose();
    cleanup();
  }
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  let opts: ReturnType<typeof parseLogitsArgs>;
  try {
    opts = parseLogitsArgs(argv);
  } catch (err) {
    console.error(`duet logits: ${(err as Error).message}`);
    return 2;
  }
  const { format, ...r } = await computeLogits(opts);
  if (opts.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
  } else {
    console.log(`vocab ${r.vocab}, ${r.positions} position(s), backend ${opts.backend}, quant ${opts.quant}${opts.quant === 'auto' ? ` (${format})` : ''}`);
    r.logits.forEach((row, i) => {
      const top = row.map((v, j) => [v, j]).sort((a, b) => b[0] - a[0]).slice(0, 5);
      console.log(`  pos ${i} token ${opts.tokens[i]}: argmax ${r.argmax[i]}  top5 ${top.map(([v, j]) => `${j}:${v.toFixed(3)}`).join(' ')}`);
    });
  }
  return 0;
}
