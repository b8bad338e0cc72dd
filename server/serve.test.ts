// `duet serve` end to end on the trained tiny pair (public/models, H4's): the CLI starts the
// gateway as a child process, the draft (CPU reference, in this process) decodes through it
// with the WebSocket client, and the greedy output equals target-only greedy decoding of the
// target model (incremental CpuLlama oracle). Also checks /api/info and /models from the CLI.
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelDir, type LoadedModel } from '../src/engine/loader/node.ts';
import { Tokenizer, tokenizerHash } from '../src/engine/tokenizer.ts';
import { CpuLlama } from '../src/engine/reference.ts';
import { speculate } from '../src/engine/speculative.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { RemoteTarget } from '../src/protocol/client.ts';
import { spawnServe, targetGreedy as greedy, type ServeChild, type ServeStarted } from './testing.ts';

const TARGET = 'public/models/tiny-target';
const DRAFT = 'public/models/tiny-draft';
const havePair = existsSync(`${TARGET}/config.json`) && existsSync(`${DRAFT}/config.json`);
if (!havePair) console.warn(`serve.test: skipped, ${TARGET} / ${DRAFT} are missing (the bundled tiny pair is built by tools/train)`);

describe.skipIf(!havePair)('duet serve on the tiny pair', () => {
  let child: ServeChild | undefined;
  let started: ServeStarted;
  let target: LoadedModel;
  let draft: LoadedModel;

  beforeAll(async () => {
    child = await spawnServe(['--port', '0', '--max-context', '256']);
    started = child.started;
    [target, draft] = await Promise.all([loadModelDir(TARGET), loadModelDir(DRAFT)]);
  });
  afterAll(() => {
    child?.proc.kill('SIGTERM');
  });

  it('reports the tiny target and the tokenizer the draft shares', async () => {
    const info = await (await fetch(`${started.url}/api/info`)).json();
    expect(info).toMatchObject({ backend: 'cpu', model: 'tiny-target', vocabSize: target.config.vocabSize });
    expect(info.tokenizerHash).toBe(await tokenizerHash(draft.tokenizerJson!));
    const r = await fetch(`${started.url}/models/tiny-target/config.json`, { headers: { Range: 'bytes=0-0' } });
    expect(r.status).toBe(206);
    expect(await r.text()).toBe('{');
  });

  it('greedy speculative through the CLI gateway == target-only greedy on held-out prompts', async () => {
    const tok = new Tokenizer(draft.tokenizerJson!, draft.tokenizerConfig);
    const held = JSON.parse(readFileSync('public/models/heldout-prompts.json', 'utf8')) as { prompts: { text: string }[] };
    const hash = await tokenizerHash(draft.tokenizerJson!);
    for (const [i, p] of held.prompts.slice(0, 2).entries()) {
      const prompt = tok.encode(p.text.split(' ').slice(0, 6).join(' '));
      const link = new RemoteTarget({ url: started.ws, tokenizerHash: hash });
      const r = await speculate(new CpuLlama(draft.config, draft.weights, 256), link, prompt, { params: GREEDY, maxTokens: 16, k: 4, pipeline: i === 1 });
      await link.close();
      expect(r.tokens, `prompt ${i}: ${p.text}`).toEqual(greedy(target, prompt, 16));
      // accounting through the CLI gateway: the prefill plus one pass per verify round
      expect(r.stats.targetPasses).toBe(1 + r.stats.rounds);
    }
  });
});
