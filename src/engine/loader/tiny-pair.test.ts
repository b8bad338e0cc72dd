// The bundled tiny pair (public/models, trained by tools/train) through the loader: target
// in bf16 and draft in f16 safetensors as committed, one shared tokenizer (equal hashes),
// identical weights from disk and over HTTP Range (as the gateway serves them), and a
// sanity bound on held-out perplexity (a mis-loaded model — wrong dtype decode, transposed
// or permuted matrices — scores near the vocabulary size, 4096; the trained pair far below).

import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:http';
import { join, resolve } from 'node:path';
import { openModelDir, loadModelDir } from './node.ts';
import { openModel, loadWeightsF32 } from './model.ts';
import { UrlSource } from './source.ts';
import { Tokenizer, tokenizerHash } from '../tokenizer.ts';
import { CpuLlama } from '../reference.ts';
import { nllSum } from '../../cli/perplexity.ts';
import { buildGguf, ggufTokenizerFromHf } from '../../../tools/fixtures/gguf-writer.ts';

const models = resolve(import.meta.dirname, '../../../public/models');
let server: Server;
let base: string;

beforeAll(async () => {
  server = createServer(async (req, res) => {
    try {
      const body = await readFile(join(models, decodeURIComponent(req.url ?? '').replace(/^\/+/, '').replace(/\.\./g, '')));
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
      if (!m) return void res.writeHead(200, { 'content-length': body.length }).end(req.method === 'HEAD' ? undefined : body);
      const [a, b] = [Number(m[1]), Math.min(Number(m[2]), body.length - 1)];
      res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${body.length}`, 'content-length': b - a + 1 }).end(body.subarray(a, b + 1));
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('bundled tiny pair', () => {
  it('target is bf16, draft one float dtype; both share one tokenizer', async () => {
    const t = await openModelDir(join(models, 'tiny-target'));
    const d = await openModelDir(join(models, 'tiny-draft'));
    await Promise.all([t.close(), d.close()]);
    expect(new Set(t.tensorInfos.map((i) => i.dtype))).toEqual(new Set(['BF16']));
    // the issue fixes the target's dtype (bf16); the draft ships in one float dtype (f16 today)
    expect(new Set(d.tensorInfos.map((i) => i.dtype)).size).toBe(1);
    expect(t.config.vocabSize).toBe(d.config.vocabSize);
    expect(await tokenizerHash(t.tokenizerJson!)).toBe(await tokenizerHash(d.tokenizerJson!));
    const tok = new Tokenizer(t.tokenizerJson!, t.tokenizerConfig);
    const { prompts } = JSON.parse(await readFile(join(models, 'heldout-prompts.json'), 'utf8')) as { prompts: { text: string }[] };
    for (const p of prompts) expect(tok.decode(tok.encode(p.text))).toBe(p.text);
    expect(tok.encode('x', { addSpecialTokens: true })[0]).toBe(t.config.bosTokenId);
  });

  it('loads identically from disk and over HTTP Range; held-out perplexity is far below the vocabulary size', async () => {
    const { prompts } = JSON.parse(await readFile(join(models, 'heldout-prompts.json'), 'utf8')) as { prompts: { text: string }[] };
    for (const name of ['tiny-target', 'tiny-draft']) {
      const disk = await loadModelDir(join(models, name));
      const remote = await openModel(new UrlSource(`${base}/${name}/`));
      const w = await loadWeightsF32(remote);
      await remote.close();
      // bitwise comparison by hand: toEqual walks a 1M-element typed array far too slowly
      const same = (a: Float32Array, b: Float32Array) => a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
      expect(same(w.embed, disk.weights.embed), `${name} embed`).toBe(true);
      expect(w.layers.every((l, i) => same(l.wq, disk.weights.layers[i].wq) && same(l.wDown, disk.weights.layers[i].wDown)), `${name} layers`).toBe(true);
      const tok = new Tokenizer(disk.tokenizerJson!, disk.tokenizerConfig);
      const ids = tok.encode(prompts.slice(0, 4).map((p) => p.text).join('\n'), { addSpecialTokens: true });
      const lm = new CpuLlama(disk.config, disk.weights, ids.length);
      const ppl = Math.exp(nllSum(await lm.forward(ids, 0), disk.config.vocabSize, ids.slice(1)) / (ids.length - 1));
      console.log(`[${name}: held-out perplexity ${ppl.toFixed(1)} over ${ids.length - 1} tokens (first 4 held-out prompts)]`);
      expect(ppl, name).toBeLessThan(disk.config.vocabSize / 4);
    }
  });

  it('as a lone GGUF file (BF16, tokenizer rebuilt from metadata) it is the same model', async () => {
    const disk = await loadModelDir(join(models, 'tiny-target'));
    const dir = await mkdtemp(join(tmpdir(), 'duet-tiny-gguf-'));
    try {
      const path = join(dir, 'tiny-target.gguf');
      const tk = ggufTokenizerFromHf(disk.tokenizerJson!, disk.tokenizerConfig!, 'gpt-2');
      await writeFile(path, buildGguf(disk.config, disk.weights, { type: 'BF16', tokenizer: tk }));
      const g = await loadModelDir(path);
      // GGUF has one eos_token_id (plus eot/eom ids); HF lists several
      expect({ ...g.config, eosTokenIds: [] }).toEqual({ ...disk.config, eosTokenIds: [] });
      expect(disk.config.eosTokenIds).toEqual(expect.arrayContaining(g.config.eosTokenIds));
      expect(await tokenizerHash(g.tokenizerJson!)).toBe(await tokenizerHash(disk.tokenizerJson!));
      const a = new Tokenizer(g.tokenizerJson!, g.tokenizerConfig);
      const b = new Tokenizer(disk.tokenizerJson!, disk.tokenizerConfig);
      const ids = b.encode('And Joseph fell upon his face', { addSpecialTokens: true });
      expect(a.encode('And Joseph fell upon his face', { addSpecialTokens: true })).toEqual(ids);
      // bf16 weights survive BF16 GGUF exactly, Q/K permutation included: logits are bitwise equal
      const la = await new CpuLlama(g.config, g.weights, 32).forward(ids, 0);
      const lb = await new CpuLlama(disk.config, disk.weights, 32).forward(ids, 0);
      expect(Buffer.compare(Buffer.from(la.buffer), Buffer.from(lb.buffer))).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
