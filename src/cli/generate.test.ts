// `duet generate` / `duet perplexity` end to end through the CLI entry (main), on a
// random-weight model written to disk with a small byte-level BPE tokenizer (fast to build;
// the Llama 3 tokenizer itself is tested in src/engine/tokenizer.test.ts). Oracles: a greedy
// loop that recomputes the full sequence with a fresh CpuLlama each step (no KV cache), and
// a perplexity computed token by token with the reference softmax.

import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syntheticConfig } from '../engine/config.ts';
import { randomWeights } from '../engine/weights.ts';
import { CpuLlama, softmax } from '../engine/reference.ts';
import { Tokenizer } from '../engine/tokenizer.ts';
import { writeModelDir } from '../../tools/fixtures/safetensors-writer.ts';
import { byteBpeTokenizer } from '../../tools/fixtures/byte-bpe.ts';
import { main } from './main.ts';

const bpe = byteBpeTokenizer();
const BOS = bpe.bosId;
const EOS = bpe.eosId;
// hidden 24, 3:1 GQA, 2 layers, intermediate 37 (prime).
const cfg = syntheticConfig('tiny', { hiddenSize: 24, numHeads: 3, numKvHeads: 1, headDim: 8, intermediateSize: 37, numLayers: 2, vocabSize: bpe.vocabSize, bosTokenId: BOS, eosTokenIds: [EOS] });
const w = randomWeights(cfg, 21);
let dir: string;
let tok: Tokenizer;

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  const l = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void (out += a.join(' ') + '\n'));
  const e = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += a.join(' ') + '\n'));
  try {
    return { code: await main(args), out, err };
  } finally {
    o.mockRestore();
    l.mockRestore();
    e.mockRestore();
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'duet-cli-'));
  await writeModelDir(dir, cfg, w, 'BF16');
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(bpe.tokenizerJson));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(bpe.tokenizerConfig));
  const { loadModelDir } = await import('../engine/loader/node.ts');
  const m = await loadModelDir(dir);
  Object.assign(w, m.weights); // the oracle runs on the bf16-rounded weights the CLI loads
  tok = new Tokenizer(m.tokenizerJson!, m.tokenizerConfig);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function greedyOracle(prompt: number[], n: number): number[] {
  const seq = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const logits = new CpuLlama(cfg, w, 64).forwardSync(seq, 0);
    const row = logits.subarray((seq.length - 1) * cfg.vocabSize, seq.length * cfg.vocabSize);
    let best = 0;
    for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
    out.push(best);
    if (best === EOS) break;
    seq.push(best);
  }
  return out;
}

describe('duet generate', () => {
  it('greedy --tokens matches a no-KV-cache greedy oracle', async () => {
    const r = await cli(['generate', '--model', dir, '--tokens', `${BOS},72,101`, '--max-tokens', '9', '--json']);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.tokens).toEqual(greedyOracle([BOS, 72, 101], 9));
    expect(j.stopReason === 'length' || j.stopReason === 'eos').toBe(true);
    expect(j.text).toBe(tok.decode(j.tokens, { skipSpecialTokens: true }));
  });

  it('--prompt streams the same text the JSON mode reports; sampling is seeded', async () => {
    const args = ['generate', '--model', dir, '--prompt', 'Hello world', '--max-tokens', '6', '--temperature', '0.9', '--top-k', '50', '--seed', '7'];
    const a = JSON.parse((await cli([...args, '--json'])).out);
    expect(a.promptTokens).toEqual([BOS, tok.tokenToId('H'), tok.tokenToId('e'), tok.tokenToId('l'), tok.tokenToId('l'), tok.tokenToId('o'), tok.tokenToId('Ġworld')]);
    const b = JSON.parse((await cli([...args, '--json'])).out);
    expect(b.tokens).toEqual(a.tokens);
    const streamed = await cli(args);
    expect(streamed.code).toBe(0);
    expect(streamed.out).toBe(a.text + '\n');
    const c = JSON.parse((await cli([...args.slice(0, -1), '8', '--json'])).out);
    expect(c.promptTokens).toEqual(a.promptTokens);
    expect(c.tokens).not.toEqual(a.tokens); // another seed, another draw (vocab ~300, 6 tokens)
    const chat = JSON.parse((await cli(['generate', '--model', dir, '--prompt', 'Hi', '--chat', '--max-tokens', '1', '--json'])).out);
    expect(chat.promptTokens).toEqual(tok.encodeChat([{ role: 'user', content: 'Hi' }]));
    expect(chat.promptTokens.filter((t: number) => t === BOS)).toHaveLength(1);
  });

  it('--quant q8 on cpu runs the quantized values (close to, not equal to, f32)', async () => {
    // Perplexity sees the logits: q8 must move it a little (quantization happened) but not much.
    const file = join(dir, 'q.txt');
    await writeFile(file, 'Hello world, the other world.');
    const ppl = async (q: string) => JSON.parse((await cli(['perplexity', '--model', dir, '--file', file, '--quant', q, '--json'])).out).perplexity;
    const [f32, q8, q4] = [await ppl('none'), await ppl('q8'), await ppl('q4')];
    expect(q8).not.toBe(f32);
    expect(Math.abs(q8 - f32) / f32).toBeLessThan(0.02);
    expect(Math.abs(q4 - f32) / f32).toBeLessThan(0.3);
  });

  it('bad input: usage errors name the flag and exit 1', async () => {
    const r1 = await cli(['generate', '--model', dir, '--prompt', 'x', '--quant', 'q3']);
    expect([r1.code, r1.err]).toEqual([1, expect.stringMatching(/--quant q3: use one of/)]);
    const r2 = await cli(['generate', '--prompt', 'x']);
    expect(r2.err).toMatch(/--model DIR is required/);
    const r3 = await cli(['generate', '--model', dir, '--tokens', '1,999999']);
    expect(r3.err).toMatch(new RegExp(`--tokens: ids must be integers in \\[0, ${cfg.vocabSize}\\)`));
    const r4 = await cli(['generate', '--model', join(dir, 'nope'), '--prompt', 'x']);
    expect(r4.err).toMatch(/ModelSourceError: .*nope: no such file or directory/);
  });
});

describe('duet perplexity', () => {
  it('equals exp(mean NLL) computed token by token with the reference softmax', async () => {
    const text = 'In the beginning God created the heaven and the earth. And the earth was without form, and void.';
    const file = join(dir, 'text.txt');
    await writeFile(file, text);
    const window = 11; // prime, and the text is longer: several windows, a short last one
    const r = await cli(['perplexity', '--model', dir, '--file', file, '--context', String(window), '--json']);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    const ids = tok.encode(text, { addSpecialTokens: true });
    let nll = 0;
    let n = 0;
    for (let s = 0; s < ids.length; s += window) {
      const chunk = ids.slice(s, s + window);
      const lm = new CpuLlama(cfg, w, 64);
      for (let t = 0; t + 1 < chunk.length; t++) {
        const p = lm.forwardSync([chunk[t]], t);
        softmax(p, cfg.vocabSize);
        nll -= Math.log(p[chunk[t + 1]]);
        n++;
      }
    }
    expect(j.scoredTokens).toBe(n);
    expect(Math.abs(j.perplexity - Math.exp(nll / n)) / Math.exp(nll / n)).toBeLessThan(1e-4);
    // random weights: perplexity near the vocabulary size, not 1 and not NaN
    expect(j.perplexity).toBeGreaterThan(cfg.vocabSize / 10);
  });
});
