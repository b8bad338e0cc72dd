// Loader tests: random-weight models written by the fixture writer are read back through
// every source (dir, URL with and without Range, browser File objects) and compared with the
// weights that were written (exact for F32, within the dtype's rounding for F16/BF16), and
// through CpuLlama logits. Every corruption case must name the file and the tensor/field.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, readFile, writeFile, rm, readdir, copyFile, mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syntheticConfig, type LlamaConfig, ConfigError } from '../config.ts';
import { randomWeights, type LlamaWeights } from '../weights.ts';
import { CpuLlama } from '../reference.ts';
import { hfConfigJson, namedTensors, writeModelDir, writeSafetensors, safetensorsHeader } from '../../../tools/fixtures/safetensors-writer.ts';
import { loadModelDir, openModelDir } from './node.ts';
import { openModel, loadWeightsF32 } from './model.ts';
import { UrlSource, FolderSource, type LoadProgress } from './source.ts';
import { convertInto } from './safetensors.ts';
import { WeightsFormatError, ModelSourceError } from './errors.ts';

// Odd sizes on purpose: 3 layers, prime vocab, hidden 40, GQA 4:2, intermediate 67.
const cfg: LlamaConfig = syntheticConfig('tiny', { hiddenSize: 40, numHeads: 4, numKvHeads: 2, headDim: 10, intermediateSize: 67, numLayers: 3, vocabSize: 101 });
const untied: LlamaConfig = { ...cfg, tieWordEmbeddings: false };
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'duet-loader-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function maxRelErr(a: Float32Array, b: Float32Array, floor: number): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), floor));
  return m;
}

function expectWeightsClose(c: LlamaConfig, got: LlamaWeights, want: LlamaWeights, relTol: number): void {
  const g = namedTensors(c, got);
  const w = namedTensors(c, want);
  expect(g.map((t) => t[0])).toEqual(w.map((t) => t[0]));
  for (let i = 0; i < g.length; i++) {
    expect(g[i][1].length, g[i][0]).toBe(w[i][1].length);
    const err = maxRelErr(g[i][1], w[i][1], 1e-3);
    if (err > relTol) throw new Error(`${g[i][0]}: max relative error ${err} > ${relTol}`);
  }
}

async function logitsOf(c: LlamaConfig, w: LlamaWeights, tokens: number[]): Promise<Float32Array> {
  return new CpuLlama(c, w, 16).forward(tokens, 0);
}

describe('dtype conversion (known bit patterns)', () => {
  it('decodes F16 and BF16 exactly', () => {
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x3555]);
    const out = new Float32Array(f16.length);
    convertInto(out, 0, new Uint8Array(f16.buffer), 'F16');
    expect([...out]).toEqual([1, -2, 65504, 2 ** -24, -0, Infinity, 0.333251953125]);
    const bf = new Uint16Array([0x3f80, 0xc040, 0x4049, 0x0000, 0xff80]);
    const out2 = new Float32Array(bf.length);
    convertInto(out2, 0, new Uint8Array(bf.buffer), 'BF16');
    expect([...out2]).toEqual([1, -3, 3.140625, 0, -Infinity]);
  });
});

describe('safetensors from a directory', () => {
  it('F32 round-trips exactly and gives the same logits', async () => {
    const w = randomWeights(cfg, 7);
    const dir = join(root, 'f32');
    await writeModelDir(dir, cfg, w, 'F32');
    const m = await loadModelDir(dir);
    expect(m.config).toEqual(cfg);
    expectWeightsClose(cfg, m.weights, w, 0);
    expect(await logitsOf(cfg, m.weights, [1, 5, 100, 0])).toEqual(await logitsOf(cfg, w, [1, 5, 100, 0]));
  });

  it('BF16 and F16 load within their rounding (untied lm_head)', async () => {
    const w = randomWeights(untied, 8);
    for (const [dtype, tol] of [['BF16', 2 ** -8], ['F16', 2 ** -10]] as const) {
      const dir = join(root, dtype);
      await writeModelDir(dir, untied, w, dtype);
      const m = await loadModelDir(dir);
      expect(m.weights.lmHead).not.toBeNull();
      expectWeightsClose(untied, m.weights, w, tol);
    }
  });

  it('reads shards listed in model.safetensors.index.json', async () => {
    const w = randomWeights(cfg, 9);
    const dir = join(root, 'sharded');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), JSON.stringify(hfConfigJson(cfg)));
    const all = namedTensors(cfg, w);
    const half = Math.ceil(all.length / 2);
    const shards = [all.slice(0, half), all.slice(half)];
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < 2; s++) {
      const file = `model-0000${s + 1}-of-00002.safetensors`;
      // reverse order inside the shard: the reader must not assume header order == name order
      await writeSafetensors(join(dir, file), shards[s].reverse().map(([name, data, shape]) => ({ name, dtype: 'BF16', shape, fill: (o, st) => o.set(data.subarray(st, st + o.length)) })));
      for (const [name] of shards[s]) weightMap[name] = file;
    }
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const m = await loadModelDir(dir);
    expectWeightsClose(cfg, m.weights, w, 2 ** -8);
  });
});

describe('errors name the file and the tensor/field', () => {
  let good: string;
  beforeAll(async () => {
    good = join(root, 'good');
    await writeModelDir(good, cfg, randomWeights(cfg, 3), 'BF16');
  });

  async function variant(name: string, edit: (dir: string) => Promise<void>): Promise<string> {
    const dir = join(root, name);
    await mkdir(dir, { recursive: true });
    for (const f of await readdir(good)) await copyFile(join(good, f), join(dir, f));
    await edit(dir);
    return dir;
  }

  async function expectError(dir: string, cls: new (...a: never[]) => Error, ...parts: (string | RegExp)[]): Promise<void> {
    const err = await loadModelDir(dir).then(() => null, (e: Error) => e);
    expect(err, 'load must fail').toBeInstanceOf(cls);
    for (const p of parts) expect(err!.message).toMatch(p);
  }

  it('truncated file: names the file, the tensor and the offsets', async () => {
    const dir = await variant('trunc', async (d) => {
      const b = await readFile(join(d, 'model.safetensors'));
      await writeFile(join(d, 'model.safetensors'), b.subarray(0, b.length - 10));
    });
    await expectError(dir, WeightsFormatError, 'model.safetensors', 'model.norm.weight', /truncated/, /file offset \d+/);
  });

  it('corrupt header length and corrupt header JSON', async () => {
    const d1 = await variant('hdrlen', async (d) => {
      const b = await readFile(join(d, 'model.safetensors'));
      b.writeBigUInt64LE(1n << 40n, 0);
      await writeFile(join(d, 'model.safetensors'), b);
    });
    await expectError(d1, WeightsFormatError, 'model.safetensors', '(header)', /offset 0/);
    const d2 = await variant('hdrjson', async (d) => {
      const b = await readFile(join(d, 'model.safetensors'));
      b[8] = 0x78; // 'x' where the JSON's opening brace was
      await writeFile(join(d, 'model.safetensors'), b);
    });
    await expectError(d2, WeightsFormatError, 'model.safetensors', '(header)', /does not parse/);
    const d3 = await variant('tiny', async (d) => writeFile(join(d, 'model.safetensors'), Buffer.from([1, 2, 3])));
    await expectError(d3, WeightsFormatError, 'model.safetensors', /only 3 bytes/);
  });

  it('wrong dtype, missing, extra and misshaped tensors', async () => {
    const rewrite = (mutate: (t: [string, Float32Array, number[]][]) => [string, Float32Array, number[]][], dtypeOf = (_n: string): 'F32' | 'BF16' => 'F32') =>
      async (d: string) => {
        const ts = mutate(namedTensors(cfg, randomWeights(cfg, 3)));
        await writeSafetensors(join(d, 'model.safetensors'), ts.map(([name, data, shape]) => ({ name, dtype: dtypeOf(name), shape, fill: (o, s) => o.set(data.subarray(s, s + o.length)) })));
      };
    const missing = await variant('missing', rewrite((ts) => ts.filter((t) => t[0] !== 'model.layers.1.mlp.up_proj.weight')));
    await expectError(missing, WeightsFormatError, 'model.safetensors', 'model.layers.1.mlp.up_proj.weight', /missing/, /\[67,40\]/);
    // tied config + an lm_head.weight copy (some exports write one) and an old rotary inv_freq: both ignored
    const tiedCopy = await variant('tiedcopy', rewrite((ts) => [...ts, ['lm_head.weight', ts[0][1], ts[0][2]], ['model.layers.0.self_attn.rotary_emb.inv_freq', new Float32Array(5), [5]]]));
    const loaded = await loadModelDir(tiedCopy);
    expect(loaded.weights.lmHead).toBeNull();
    expect(loaded.weights.embed).toEqual(randomWeights(cfg, 3).embed);
    const extra = await variant('extra', rewrite((ts) => [...ts, ['model.layers.3.input_layernorm.weight', new Float32Array(40), [40]]]));
    await expectError(extra, WeightsFormatError, 'model.layers.3.input_layernorm.weight', /unexpected tensor/);
    const shaped = await variant('shaped', rewrite((ts) => ts.map((t) => (t[0] === 'model.layers.0.self_attn.k_proj.weight' ? [t[0], t[1], [40, 20]] : t))));
    await expectError(shaped, WeightsFormatError, 'model.layers.0.self_attn.k_proj.weight', /shape \[40,20\]/, /\[20,40\]/);
    // I8 is not writable by our fixture writer, so patch the header dtype string in place (same length).
    const i8 = await variant('dtype', async (d) => {
      const b = await readFile(join(d, 'model.safetensors'));
      const s = b.toString('latin1');
      const at = s.indexOf('"BF16"');
      b.write('"I16" ', at, 'latin1'); // still valid JSON; byte count per element matches (2)
      await writeFile(join(d, 'model.safetensors'), b);
    });
    await expectError(i8, WeightsFormatError, 'model.safetensors', /dtype I16 is not supported/);
  });

  it('missing / invalid config.json and unsupported configs', async () => {
    const noCfg = await variant('nocfg', async (d) => rm(join(d, 'config.json')));
    await expectError(noCfg, ModelSourceError, 'config.json', /missing/);
    const badJson = await variant('badcfg', async (d) => writeFile(join(d, 'config.json'), '{"hidden_size": 40,'));
    await expectError(badJson, ConfigError, 'config.json', /invalid JSON/);
    const mistral = await variant('mtype', async (d) => writeFile(join(d, 'config.json'), JSON.stringify({ ...hfConfigJson(cfg), model_type: 'mistral' })));
    await expectError(mistral, ConfigError, 'config.json', 'model_type');
    const rope = await variant('rope', async (d) => writeFile(join(d, 'config.json'), JSON.stringify({ ...hfConfigJson(cfg), rope_scaling: { rope_type: 'yarn', factor: 4 } })));
    await expectError(rope, ConfigError, 'rope_scaling.rope_type');
  });

  it('no weights file, and an index that disagrees with its shards', async () => {
    const none = await variant('noweights', async (d) => rm(join(d, 'model.safetensors')));
    await expectError(none, ModelSourceError, 'model.safetensors', /missing/);
    const idx = await variant('badindex', async (d) =>
      writeFile(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': 'model-00002.safetensors' } })));
    await expectError(idx, ModelSourceError, 'model-00002.safetensors', /not found/);
  });
});

describe('URL and browser-folder sources', () => {
  let server: Server;
  let base: string;
  let rangeRequests = 0;
  let fullRequests = 0;
  let w: LlamaWeights;
  const dir = () => join(root, 'served');

  beforeAll(async () => {
    w = randomWeights(cfg, 11);
    await writeModelDir(dir(), cfg, w, 'BF16');
    await writeFile(join(dir(), 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 3], temperature: 0.6, top_p: 0.9, do_sample: true }));
    // /range/ honours Range; /plain/ ignores it and streams the whole body in small writes.
    server = createServer(async (req, res) => {
      const [, mode, ...rest] = (req.url ?? '').split('/');
      let body: Buffer;
      try {
        body = await readFile(join(dir(), rest.join('/')));
      } catch {
        res.writeHead(404).end();
        return;
      }
      const range = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
      if ((mode === 'stall' || mode === 'cut') && range && rest.join('/') === 'model.safetensors' && Number(range[1]) > body.length / 2) {
        // a big tensor read: send part of it, then stall (or drop the connection)
        const a = Number(range[1]);
        const b = Number(range[2]);
        res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${body.length}`, 'content-length': b - a + 1 });
        res.write(body.subarray(a, a + 100));
        if (mode === 'cut') setTimeout(() => res.destroy(), 20);
        return;
      }
      if ((mode === 'range' || mode === 'stall' || mode === 'cut') && range) {
        rangeRequests++;
        const a = Number(range[1]);
        const b = Math.min(Number(range[2]), body.length - 1);
        res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${body.length}`, 'content-length': b - a + 1 });
        res.end(body.subarray(a, b + 1));
        return;
      }
      fullRequests++;
      res.writeHead(200, { 'content-length': body.length });
      if (req.method === 'HEAD') return void res.end();
      for (let i = 0; i < body.length; i += 997) res.write(body.subarray(i, i + 997));
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const addr = server.address() as { port: number };
    base = `http://127.0.0.1:${addr.port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  for (const mode of ['range', 'plain']) {
    it(`loads over HTTP (${mode}) with progress events`, async () => {
      const events: LoadProgress[] = [];
      const before = { rangeRequests, fullRequests };
      const m = await openModel(new UrlSource(`${base}/${mode}/`), { onProgress: (p) => events.push(p) });
      expect(m.generationConfig).toMatchObject({ eosTokenIds: [2, 3], temperature: 0.6, topP: 0.9, doSample: true });
      const got = await loadWeightsF32(m);
      await m.close();
      expectWeightsClose(cfg, got, w, 2 ** -8);
      const last = events[events.length - 1];
      const total = m.tensorInfos.reduce((a, t) => a + t.byteLength, 0);
      expect(last).toMatchObject({ file: 'model.safetensors', loadedBytes: total, totalBytes: total, etaSec: 0 });
      expect(last.bytesPerSec).toBeGreaterThan(0);
      if (mode === 'range') expect(rangeRequests - before.rangeRequests).toBeGreaterThan(2);
      else expect(fullRequests - before.fullRequests).toBeLessThanOrEqual(9); // json files + HEAD + probe + one streamed body
    });
  }

  it('a stalled or dropped download fails with a ModelSourceError naming the file (no hang)', async () => {
    for (const [mode, why] of [['stall', /no data for 0.3 s at byte \d+/], ['cut', /connection lost at byte \d+|ends at byte/]] as const) {
      const m = await openModel(new UrlSource(`${base}/${mode}/`, { stallTimeoutMs: 300 }));
      const err = await loadWeightsF32(m).catch((e: Error) => e);
      await m.close();
      expect(err, mode).toBeInstanceOf(ModelSourceError);
      expect((err as Error).message).toMatch(/^model\.safetensors: /);
      expect((err as Error).message).toMatch(why);
    }
  });

  it('missing files over HTTP give a ModelSourceError', async () => {
    const err = await openModel(new UrlSource(`${base}/range/nope/`)).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ModelSourceError);
    expect((err as Error).message).toMatch(/config.json/);
  });

  it('loads from File objects as a folder picker yields them', async () => {
    const files: File[] = [];
    for (const name of await readdir(dir())) {
      const f = new File([new Uint8Array(await readFile(join(dir(), name)))], name);
      Object.defineProperty(f, 'webkitRelativePath', { value: `served/${name}` });
      files.push(f);
    }
    const src = new FolderSource(files);
    expect(src.id).toBe('folder:served');
    const m = await openModel(src);
    const got = await loadWeightsF32(m);
    expectWeightsClose(cfg, got, w, 2 ** -8);
    expect(await logitsOf(cfg, got, [3, 1, 4])).toEqual(await logitsOf(cfg, (await loadModelDir(dir())).weights, [3, 1, 4]));
  });

  it('streams tensors one at a time in file order', async () => {
    const m = await openModelDir(dir());
    const names: string[] = [];
    for await (const t of m.tensors()) {
      names.push(t.name);
      expect(t.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
    }
    expect(names).toEqual(namedTensors(cfg, w).map((t) => t[0]));
    // readRows: any row range equals the same rows of the whole tensor (BF16 → f32 exact both ways)
    const full = (await loadModelDir(dir())).weights;
    expect(await m.readRows('model.embed_tokens.weight', 13, 7)).toEqual(full.embed.subarray(13 * 40, 20 * 40));
    expect(await m.readRows('model.layers.2.mlp.down_proj.weight', 39, 1)).toEqual(full.layers[2].wDown.subarray(39 * 67, 40 * 67));
    expect(await m.readRows('model.norm.weight', 0, 1)).toEqual(full.finalNorm);
    await expect(m.readRows('model.embed_tokens.weight', 100, 2)).rejects.toThrow(RangeError);
    await m.close();
    expect(safetensorsHeader([{ name: 'x', dtype: 'F32', shape: [1] }]).length % 8).toBe(0);
  });
});
