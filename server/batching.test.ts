// Continuous batching and batch invariance on the target side: baseline steps are k = 0
// verifies that share one pass with each other and with speculative blocks (batcher, gateway
// stats and /api/info prove it: mean baseline batch >= 8 at 16 sessions); a lone baseline
// step does not wait for the batch window; an open whose client left is never prefilled; and
// on the cpu verifier one session's greedy text is identical alone and sharing every pass with
// 1, 7 and 31 others (mixed k, baseline and speculative, greedy and sampled neighbours).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Batcher, JobAbandonedError } from './batcher.ts';
import { RawClient, remote, startTestGateway, until, type TestGateway } from './testing.ts';
import { createCpuVerifier } from './verifiers/cpu.ts';
import type { Verifier, VerifyRequest, VerifyResult } from './verifiers/types.ts';
import { greedyOracle, randomPrompts, tinyPair } from '../src/engine/spec-fixtures.ts';
import { baseline } from '../src/engine/speculative.ts';
import { GREEDY, type SamplingParams, type SparseDist } from '../src/engine/sampling.ts';
import { mulberry32 } from '../src/engine/weights.ts';
import { LocalTarget } from '../src/engine/local-target.ts';

function scripted(): { v: Verifier; batches: VerifyRequest[][] } {
  const batches: VerifyRequest[][] = [];
  const v: Verifier = {
    info: () => ({ backend: 'cpu', model: 'm', tokenizerHash: 'h', vocabSize: 10, maxContext: 64, maxBatch: 8, device: 'test' }),
    open: async () => ({ firstToken: 0 }),
    async verifyBatch(reqs) {
      batches.push(reqs);
      await new Promise((r) => setTimeout(r, 5));
      return reqs.map((r): VerifyResult => ({ sessionId: r.sessionId, accepted: r.draft.length, token: 7, forwardMs: 5 }));
    },
    generate: async () => [1],
    close: async () => {},
    dispose: async () => {},
  };
  return { v, batches };
}

describe('Batcher: baseline steps', () => {
  it('a baseline step on an idle verifier starts at once, not after the window', async () => {
    const { v, batches } = scripted();
    const b = new Batcher(v, 8, 400);
    const t0 = performance.now();
    const r = await b.step('a');
    expect(performance.now() - t0).toBeLessThan(200);
    expect(r).toMatchObject({ sessionId: 'a', accepted: 0, token: 7 });
    expect(batches[0][0].draft).toEqual([]);
  });

  it('steps and verifies that wait while the verifier is busy share the next pass', async () => {
    const { v, batches } = scripted();
    const b = new Batcher(v, 8, 0);
    const first = b.step('a');
    const rest = [b.step('b'), b.verify({ sessionId: 'c', draft: [1, 2] }), b.step('d')];
    await Promise.all([first, ...rest]);
    expect(batches.map((x) => x.map((r) => r.sessionId))).toEqual([['a'], ['b', 'c', 'd']]);
    expect(b.stats).toMatchObject({ baselineBatches: 2, baselineRequests: 3, batches: 2, batchedRequests: 4 });
  });

  it('a job whose session went away before its turn is dropped unrun', async () => {
    const { v } = scripted();
    const b = new Batcher(v, 8, 0);
    let ran = 0;
    let live = true;
    const busy = b.step('a'); // the verifier is busy while the job waits
    const job = b.job(async () => ++ran, () => live);
    live = false;
    await busy;
    await expect(job).rejects.toBeInstanceOf(JobAbandonedError);
    expect(ran).toBe(0);
    expect(b.stats.jobsDropped).toBe(1);
  });
});

describe('gateway: continuous batching of the baseline', () => {
  let t: TestGateway;
  beforeAll(async () => {
    t = await startTestGateway({ pairOptions: { seed: 11, noise: 0.25, config: { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 } } });
  });
  afterAll(async () => t?.close());

  it('16 baseline sessions run one pass per step for all of them (mean baseline batch >= 8) and each gets target-only text', async () => {
    const N = 16;
    const MAX = 40; // long enough that the ramp (sessions opening one per pass) does not dominate
    const prompts = randomPrompts(N, t.pair.config.vocabSize, 8, 9);
    const ref = t.pair.newTarget();
    const oracle = prompts.map((p) => greedyOracle(ref, p, MAX));
    const before = t.gateway.stats();
    const results = await Promise.all(prompts.map(async (p) => {
      const link = remote(t.gateway, { mode: 'baseline' });
      try {
        return await baseline(link, p, { params: GREEDY, maxTokens: MAX });
      } finally {
        await link.close();
      }
    }));
    results.forEach((r, i) => expect(r.tokens, `session ${i}`).toEqual(oracle[i]));
    const s = t.gateway.stats();
    const steps = s.baselineRequests - before.baselineRequests;
    const passes = s.baselineBatches - before.baselineBatches;
    expect(steps).toBe(N * (MAX - 1));
    expect(steps / passes, `${steps} baseline steps in ${passes} passes`).toBeGreaterThanOrEqual(8);
    const info = await (await fetch(`${t.gateway.url}/api/info`)).json() as { batching: { meanBaselineBatch: number; baselineBatches: number } };
    expect(info.batching.baselineBatches).toBe(s.baselineBatches);
    expect(info.batching.meanBaselineBatch).toBeCloseTo(s.baselineRequests / s.baselineBatches, 6);
  });

  it('an open the client abandoned (closed before its prefill ran) is never prefilled and frees its slot', async () => {
    const c = await RawClient.connect(t.gateway.wsUrl);
    c.send(JSON.stringify({ type: 'hello', protocol: t.gateway.info.protocol, tokenizerHash: t.gateway.info.tokenizerHash }));
    await c.next((m) => m.type === 'welcome');
    // a long baseline stream keeps the verifier busy, so the second open waits in the queue
    c.send(JSON.stringify({ type: 'open', session: 1, mode: 'baseline', prompt: [1, 2, 3], sampling: GREEDY }));
    await c.next((m) => m.type === 'opened');
    c.send(JSON.stringify({ type: 'generate', session: 1, n: 40 }));
    await c.next((m) => m.type === 'tokens');
    const dropped0 = t.gateway.stats().opensAbandoned;
    c.send(JSON.stringify({ type: 'open', session: 2, mode: 'baseline', prompt: Array.from({ length: 30 }, (_, i) => i + 1), sampling: GREEDY }));
    c.send(JSON.stringify({ type: 'close', session: 2 }));
    await c.next((m) => m.type === 'closed' && m.session === 2);
    await c.next((m) => m.type === 'tokens' && m.session === 1 && m.done);
    expect(t.gateway.stats().opensAbandoned).toBe(dropped0 + 1);
    expect(c.messages.filter((m) => m.type === 'opened' && m.session === 2)).toEqual([]);
    c.close();
    await until(() => t.gateway.stats().sessions === 0 && t.verifier.sessionCount === 0, 5_000, 'sessions freed');
  });
});

describe('gateway: an id reopened while its abandoned open is still queued', () => {
  it('the new session under the same id is served (the dropped open does not unregister it)', async () => {
    const t = await startTestGateway({ pairOptions: { seed: 3, config: { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 } } });
    try {
      const c = await RawClient.connect(t.gateway.wsUrl);
      c.send(JSON.stringify({ type: 'hello', protocol: t.gateway.info.protocol, tokenizerHash: t.gateway.info.tokenizerHash }));
      await c.next((m) => m.type === 'welcome');
      c.send(JSON.stringify({ type: 'open', session: 1, mode: 'baseline', prompt: [1, 2, 3], sampling: GREEDY }));
      await c.next((m) => m.type === 'opened');
      c.send(JSON.stringify({ type: 'generate', session: 1, n: 40 })); // keeps the verifier busy
      await c.next((m) => m.type === 'tokens');
      const prompt = [5, 6, 7, 8];
      c.send(JSON.stringify({ type: 'open', session: 2, mode: 'baseline', prompt, sampling: GREEDY }));
      c.send(JSON.stringify({ type: 'close', session: 2 }));
      c.send(JSON.stringify({ type: 'open', session: 2, mode: 'baseline', prompt, sampling: GREEDY }));
      const opened = await c.next((m) => m.type === 'opened' && m.session === 2);
      c.send(JSON.stringify({ type: 'generate', session: 2, n: 4 }));
      const got: number[] = [];
      for (;;) {
        const m = await c.next((x) => (x.type === 'tokens' && x.session === 2) || x.type === 'error');
        expect(m.type, JSON.stringify(m)).toBe('tokens');
        if (m.type !== 'tokens') break;
        got.push(...m.tokens);
        if (m.done) break;
      }
      expect([(opened as { firstToken: number }).firstToken, ...got]).toEqual(greedyOracle(t.pair.newTarget(), prompt, 5));
      expect(t.gateway.stats().errors).toEqual({});
      c.close();
    } finally {
      await t.close();
    }
  });
});

describe('cpu verifier: batch invariance', () => {
  const pair = tinyPair({ seed: 21, noise: 0.2 });
  const vocab = pair.config.vocabSize;
  const ROUNDS = 16;

  /** My greedy text over ROUNDS passes, sharing each with `others` sessions of mixed k / mode. */
  async function run(others: number, mine: { baselineEvery: number }): Promise<number[]> {
    const v = createCpuVerifier({ config: pair.config, weights: pair.target, model: 'm', tokenizerHash: 'h', maxContext: 256, maxBatch: 64 });
    const rand = mulberry32(100 + others);
    const prompt = [17, 4, 250, 9, 33, 71];
    const text = [(await v.open('me', prompt, GREEDY)).firstToken];
    const oParams: SamplingParams[] = [];
    for (let i = 0; i < others; i++) {
      oParams.push(i % 3 === 0 ? { temperature: 0.9, topK: 0, topP: 1, seed: i } : GREEDY);
      await v.open(`o${i}`, randomPrompts(1, vocab, 500 + i, 12)[0], oParams[i]);
    }
    const uniform: SparseDist = { ids: Int32Array.from({ length: vocab }, (_, i) => i), probs: new Float32Array(vocab).fill(1 / vocab) };
    for (let r = 0; r < ROUNDS; r++) {
      const k = r % mine.baselineEvery === 0 ? 0 : 1 + (r % 4);
      const proposal: number[] = [];
      if (k > 0) {
        // the noisy draft model's greedy continuation of my transcript: some blocks stand, some are cut
        const t = new LocalTarget(pair.newDraft());
        await t.open([...prompt, ...text.slice(0, -1)], GREEDY);
        let tok = text[text.length - 1];
        for (let i = 0; i < k; i++) {
          const logits = await t.model.forward([tok], t.model.length);
          tok = argmaxRow(logits, vocab);
          proposal.push(tok);
        }
      }
      const reqs: VerifyRequest[] = [{ sessionId: 'me', draft: proposal }];
      for (let i = 0; i < others; i++) {
        const ok = Math.floor(rand() * 6); // 0 = a baseline step
        const d = Array.from({ length: ok }, () => Math.floor(rand() * vocab));
        const req: VerifyRequest = { sessionId: `o${i}`, draft: d, ...(oParams[i].temperature > 0 ? { draftDists: d.map(() => uniform) } : {}) };
        reqs.splice(Math.floor(rand() * (reqs.length + 1)), 0, req);
      }
      const res = await v.verifyBatch(reqs);
      const me = res.find((x) => x.sessionId === 'me')!;
      text.push(...proposal.slice(0, me.accepted), me.token);
    }
    await v.dispose();
    return text;
  }

  function argmaxRow(logits: Float32Array, n: number): number {
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }

  it('one session\'s greedy text alone == sharing every pass with 1, 7 and 31 others, and == target-only greedy', async () => {
    const alone = await run(0, { baselineEvery: 3 });
    const prompt = [17, 4, 250, 9, 33, 71];
    const oracle = greedyOracle(pair.newTarget(), prompt, alone.length);
    expect(alone).toEqual(oracle);
    for (const others of [1, 7, 31]) expect(await run(others, { baselineEvery: 3 }), `beside ${others} others`).toEqual(alone);
  });
});

describe('cpu verifier: batched prefill', () => {
  const pair = tinyPair({ seed: 23, noise: 0.2 });
  const vocab = pair.config.vocabSize;
  const STEPS = 6;
  const rand = mulberry32(41);
  // odd lengths on purpose; the 5-token budget per pass cuts all but the shortest into chunks
  const prompts = [1, 3, 7, 13, 29].map((n) => Array.from({ length: n }, () => Math.floor(rand() * vocab)));
  const sampled: SamplingParams = { temperature: 0.8, topK: 0, topP: 1, seed: 5 };
  const params = prompts.map((_, i) => (i === 2 ? sampled : GREEDY));
  const newVerifier = () => createCpuVerifier({ config: pair.config, weights: pair.target, model: 'm', tokenizerHash: 'h', maxContext: 128, maxBatch: 64 });

  /** Each session alone: open, then STEPS baseline steps, each a pass of its own. */
  async function solo(prompt: number[], p: SamplingParams, resume?: number[]): Promise<number[]> {
    const v = newVerifier();
    const text = [(await v.open('me', prompt, p, resume)).firstToken];
    for (let i = 0; i < STEPS; i++) text.push((await v.verifyBatch([{ sessionId: 'me', draft: [] }]))[0].token);
    await v.dispose();
    return text;
  }

  it('opens that share passes with each other and with verify blocks, in chunks, give the solo texts (greedy == target-only)', async () => {
    const v = newVerifier();
    const shapes: { prefills: number; verifies: number }[] = [];
    const inner = v.pass!.bind(v);
    v.pass = (prefills, verifies) => {
      shapes.push({ prefills: prefills.length, verifies: verifies.length });
      return inner(prefills, verifies);
    };
    const b = new Batcher(v, 64, 0, () => true, 5);
    // busy neighbours: 6 sessions verifying random blocks (k = 0..4) the whole time
    let busy = true;
    const neighbours = Array.from({ length: 6 }, async (_, i) => {
      await b.open({ sessionId: `o${i}`, prompt: randomPrompts(1, vocab, 60 + i, 11)[0], sampling: GREEDY });
      while (busy) await b.verify({ sessionId: `o${i}`, draft: Array.from({ length: i % 5 }, () => Math.floor(rand() * vocab)) });
    });
    await until(() => v.sessionCount === 6, 10_000, 'the neighbours to open');
    try {
      // a resumed session too: the transcript a solo session produced, cut after its 3rd token
      const soloTexts = await Promise.all(prompts.map((p, i) => solo(p, params[i])));
      const resumeFrom = soloTexts[3].slice(0, 3);
      const texts = await Promise.all([...prompts.map((p, i) => ({ p, s: params[i], resume: undefined as number[] | undefined })), { p: prompts[3], s: GREEDY, resume: resumeFrom }]
        .map(async ({ p, s, resume }, i) => {
          const id = `me${i}`;
          const text = [(await b.open({ sessionId: id, prompt: p, sampling: s, ...(resume ? { resume } : {}) })).firstToken];
          for (let j = 0; j < STEPS; j++) text.push((await b.step(id)).token);
          return text;
        }));
      texts.slice(0, prompts.length).forEach((t, i) => expect(t, `prompt of ${prompts[i].length} tokens`).toEqual(soloTexts[i]));
      // resumed at the 3rd token: it continues the solo session's text, and equals a solo resume
      expect(texts[prompts.length].slice(0, STEPS - 1), 'resumed').toEqual(soloTexts[3].slice(2));
      expect(texts[prompts.length], 'resumed').toEqual(await solo(prompts[3], GREEDY, resumeFrom));
      const ref = pair.newTarget();
      prompts.forEach((p, i) => {
        if (params[i] === GREEDY) expect(soloTexts[i], `prompt ${i} vs target-only greedy`).toEqual(greedyOracle(ref, p, STEPS + 1));
      });
      // the opens really shared passes with verify blocks, and the long prompts went in chunks
      expect(shapes.some((x) => x.prefills >= 2 && x.verifies >= 1), JSON.stringify(shapes.slice(0, 20))).toBe(true);
      expect(b.stats.passOpens).toBe(6 + prompts.length + 1);
      expect(b.stats.prefillChunks).toBeGreaterThan(b.stats.passOpens + 8);
    } finally {
      busy = false;
      await Promise.allSettled(neighbours);
      await v.dispose();
    }
  });

  it('a bad open in a shared pass fails alone and holds nothing; a close between chunks frees the part-built session', async () => {
    const v = newVerifier();
    await v.open('a', prompts[1], GREEDY);
    const r = await v.pass!([
      { open: { sessionId: 'bad', prompt: [1, vocab], sampling: GREEDY }, tokens: 2 },
      { open: { sessionId: 'long', prompt: prompts[4], sampling: GREEDY }, tokens: 4 },
      { open: { sessionId: 'ok', prompt: prompts[2], sampling: GREEDY }, tokens: 99 },
    ], [{ sessionId: 'a', draft: [] }, { sessionId: 'nobody', draft: [] }]);
    expect([...r.failures.keys()].sort()).toEqual(['bad', 'nobody']);
    expect(r.failures.get('bad')?.message).toMatch(/outside the vocabulary/);
    expect(r.opened.map((o) => o.sessionId)).toEqual(['ok']);
    expect(r.verifies.map((x) => x.sessionId)).toEqual(['a']);
    expect(v.sessionCount).toBe(3); // a, ok, and long part-way
    await v.close('long');
    expect(v.sessionCount).toBe(2);
    await expect(v.verifyBatch([{ sessionId: 'long', draft: [] }])).rejects.toThrow(/no open session long/);
    await v.dispose();
  });
});
