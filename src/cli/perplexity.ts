// `duet perplexity --model DIR --file TEXT [--backend cpu|webgpu] [--quant ...] [--context N]
//  [--max-tokens N] [--json]`: perplexity of a model on a text file. The text is tokenized
// (BOS as the tokenizer adds it) and cut into non-overlapping windows of --context tokens;
// each window runs from position 0, and every token after the first in a window is scored
// by -log softmax(logits of the previous position) in f64. PPL = exp(mean NLL).

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { UsageError, num, openBackend, parseBackend, parseQuant } from './generate.ts';
import { withLoadBar } from '../../server/progress.ts';

/** Sum of -log p(targets[i] | row i) over rows of `logits` (rows × vocab), in f64. */
export function nllSum(logits: Float32Array, vocab: number, targets: ArrayLike<number>): number {
  let sum = 0;
  for (let r = 0; r < targets.length; r++) {
    const off = r * vocab;
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) max = Math.max(max, logits[off + i]);
    let z = 0;
    for (let i = 0; i < vocab; i++) z += Math.exp(logits[off + i] - max);
    sum += Math.log(z) + max - logits[off + targets[r]];
  }
  return sum;
}

const HELP = `usage: duet perplexity --model DIR --file TEXT [options]
  --model DIR          HF model folder or .gguf file
  --file TEXT          UTF-8 text file to score
  --backend cpu|webgpu default cpu
  --quant none|auto|f16|bf16|q8|q4   (auto: a 4-bit GGUF as q4, an 8-bit one as q8, else f32)
  --context N          window length in tokens (default min(512, model max))
  --max-tokens N       score at most N tokens of the file (default: all)
  --json               print one JSON object`;

export async function run(argv: string[]): Promise<number> {
  const { values: a } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, file: { type: 'string' }, backend: { type: 'string' }, quant: { type: 'string' },
      context: { type: 'string' }, 'max-tokens': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (a.help) {
    console.log(HELP);
    return 0;
  }
  if (!a.model || !a.file) throw new UsageError('--model DIR and --file TEXT are required\n' + HELP);
  const backend = parseBackend(a.backend);
  const quant = parseQuant(a.quant);
  let text: string;
  try {
    text = await readFile(a.file, 'utf8');
  } catch (err) {
    throw new UsageError(`--file ${a.file}: ${(err as Error).message}`);
  }
  const requested = num('context', a.context, 512, { int: true, min: 2 });
  const be = await withLoadBar(a.model, !!a.json, (onProgress) => openBackend(a.model!, backend, quant, requested, onProgress));
  try {
    const { lm, tokenizer } = be;
    if (!tokenizer) throw new UsageError(`${a.model} has no tokenizer.json; perplexity needs one to tokenize --file`);
    const vocab = lm.config.vocabSize;
    let ids = tokenizer.encode(text, { addSpecialTokens: true });
    const maxTokens = num('max-tokens', a['max-tokens'], ids.length, { int: true, min: 2 });
    ids = ids.slice(0, maxTokens);
    if (ids.length < 2) throw new UsageError(`--file ${a.file} has fewer than 2 tokens`);
    const window = Math.min(requested, lm.maxContext);
    const t0 = performance.now();
    let nll = 0;
    let scored = 0;
    for (let start = 0; start + 1 < ids.length; start += window) {
      const chunk = ids.slice(start, start + window);
      if (chunk.length < 2) break;
      const logits = await lm.forward(chunk, 0);
      nll += nllSum(logits, vocab, chunk.slice(1));
      scored += chunk.length - 1;
    }
    const ms = performance.now() - t0;
    const meanNll = nll / scored;
    const result = {
      model: be.model.source.id, backend, adapter: be.adapter, quant, format: be.format, file: a.file, window,
      tokens: ids.length, scoredTokens: scored, meanNll, perplexity: Math.exp(meanNll),
      bitsPerByte: nll / Math.LN2 / new TextEncoder().encode(tokenizer.decode(ids, { skipSpecialTokens: true })).length,
      ms: Math.round(ms), tokensPerSec: Math.round((scored / ms) * 1000 * 10) / 10,
    };
    if (a.json) console.log(JSON.stringify(result));
    else console.log(`perplexity ${result.perplexity.toFixed(3)} (mean NLL ${meanNll.toFixed(4)} nats, ${scored} tokens scored in windows of ${window}, ${result.bitsPerByte.toFixed(3)} bits/byte, ${backend}, quant ${quant}${quant === 'auto' ? ` (${be.format})` : ''})`);
    return 0;
  } finally {
    await be.close();
  }
}
