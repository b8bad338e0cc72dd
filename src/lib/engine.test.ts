// DuetEngine's OpenAI shapes without a browser: a scripted worker (a DuetWorkerApi exposed by
// comlink on a MessageChannel) replays run events; the engine must turn them into chunks with
// the role first, content deltas, rounds and stats under `duet`, usage and finish_reason last,
// a non-stream completion equal to the stream, typed errors, abort → stop, validation.

import { afterEach, describe, expect, it } from 'vitest';
import * as Comlink from 'comlink';
import { DuetEngine, settingsOf } from './engine.ts';
import { DuetError } from './errors.ts';
import type { ChatCompletionChunk, DraftInfo, RunStats } from './types.ts';
import type { DuetWorkerApi, RunEvent, RunRequest } from './worker/protocol.ts';

const STATS = (tokens: number): RunStats => ({ promptTokens: 7, tokens, ttftMs: 1, wallMs: 10, tokPerSec: 100, targetPasses: 2, tokensPerTargetPass: tokens / 2, acceptanceRate: 0.5, rounds: 1 });
const INFO = { name: 'd', backend: 'cpu', format: 'f32', gpuBytes: 0, cacheNotice: null, fallbackReason: null, adapter: null, fromCache: false, loadMs: 1, params: 1, vocabSize: 9, tokenizerHash: 'h', hasChatTemplate: false } satisfies DraftInfo;

/** A worker whose run replays `script(req)`; records the requests and stops it saw. */
function fakeWorker(script: (req: RunRequest) => RunEvent[], opts: { holdAfter?: number } = {}) {
  const seen = { runs: [] as RunRequest[], stops: [] as string[] };
  // A run held at `holdAfter` goes on once stopped (the stop may come before it gets there).
  let release!: () => void;
  const stopped = new Promise<void>((r) => { release = r; });
  const api: DuetWorkerApi = {
    loadDraft: async () => INFO,
    connect: async (g) => ({ url: g.url, backend: 'cpu', model: 'tiny-target', device: 'cpu', tokenizerHash: 'h', vocabSize: 9, maxContext: 64 }),
    async run(req, onEvent) {
      seen.runs.push(req);
      const events = script(req);
      for (const [i, e] of events.entries()) {
        if (i === opts.holdAfter) await stopped;
        await onEvent(e);
      }
    },
    async stop(runId) {
      seen.stops.push(runId);
      release();
    },
    listCache: async () => [{ key: 'k', name: 'd', format: 'f32', byteLength: 4, savedAt: 0 }],
    deleteCache: async () => undefined,
    engineCheck: async () => { throw new Error('not here'); },
    simulateDeviceLoss: async () => false,
  };
  const ch = new MessageChannel();
  Comlink.expose(api, ch.port1);
  const worker = Object.assign(ch.port2, { terminate: () => ch.port2.close() }) as unknown as Worker;
  return { worker, seen, close: () => { ch.port1.close(); ch.port2.close(); } };
}

const reply = (runId: string): RunEvent[] => [
  { kind: 'round', runId, round: { k: 2, accepted: 1, draftMs: 1, networkMs: 1, verifyMs: 1, startMs: 0 } },
  { kind: 'tokens', runId, pieces: [{ id: 5, text: 'He', prov: 'target' }, { id: 6, text: 'llo', prov: 'draft' }], stats: STATS(2) },
  { kind: 'tokens', runId, pieces: [{ id: 7, text: '!', prov: 'correction' }], stats: STATS(3) },
  { kind: 'done', runId, reason: 'max-tokens', stats: STATS(3) },
];

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup) c();
  cleanup = [];
});

async function engineWith(script: (req: RunRequest) => RunEvent[], opts?: { holdAfter?: number }) {
  const w = fakeWorker(script, opts);
  cleanup.push(w.close);
  const engine = new DuetEngine({ worker: w.worker, gateway: { url: 'ws://gw' } });
  await engine.load('http://host/models/d/');
  return { engine, seen: w.seen };
}

describe('chat.completions.create', () => {
  it('streams OpenAI chunks: role first, deltas, duet detail, usage and finish_reason last', async () => {
    const { engine, seen } = await engineWith((r) => reply(r.runId));
    const chunks: ChatCompletionChunk[] = [];
    for await (const c of await engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], stream: true, temperature: 0, max_tokens: 3 })) chunks.push(c);
    expect(chunks.map((c) => c.choices[0].delta)).toEqual([{ role: 'assistant', content: 'Hello' }, { content: '!' }, {}]);
    expect(chunks.map((c) => c.choices[0].finish_reason)).toEqual([null, null, 'length']);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id && c.model === 'tiny-target')).toBe(true);
    expect(chunks[0].duet.rounds).toHaveLength(1);
    expect(chunks[0].duet.tokens.map((t) => t.prov)).toEqual(['target', 'draft']);
    expect(chunks[2].usage).toEqual({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
    expect(chunks[0].usage).toBeUndefined();
    // connected lazily on first use, with OpenAI's defaults filled in where the request is silent
    expect(engine.gateway?.model).toBe('tiny-target');
    expect(seen.runs[0].settings).toEqual({ temperature: 0, topP: 1, topK: 0, seed: 0, maxTokens: 3, k: 4, adaptive: true, rttMs: 0 });
    expect(seen.runs[0].mode).toBe('speculative');
  });

  it('a non-stream completion is the stream put together', async () => {
    const { engine } = await engineWith((r) => reply(r.runId));
    const c = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], duet: { mode: 'baseline' } });
    expect(c.object).toBe('chat.completion');
    expect(c.choices).toEqual([{ index: 0, message: { role: 'assistant', content: 'Hello!' }, finish_reason: 'length', logprobs: null }]);
    expect(c.duet.tokens.map((t) => t.id)).toEqual([5, 6, 7]);
    expect(c.duet.rounds).toHaveLength(1);
    expect(c.duet.stats.tokens).toBe(3);
    expect(c.usage.completion_tokens).toBe(3);
  });

  it('a worker error event rejects with a typed DuetError', async () => {
    const { engine } = await engineWith((r) => [{ kind: 'error', runId: r.runId, error: { code: 'tokenizer-mismatch', message: 'no', hint: 'pick another draft' } }]);
    const err = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DuetError);
    expect((err as DuetError).code).toBe('tokenizer-mismatch');
    expect((err as DuetError).hint).toBe('pick another draft');
  });

  it('abort stops the run in the worker and the stream ends with finish_reason abort', async () => {
    const events = (runId: string): RunEvent[] => [
      { kind: 'tokens', runId, pieces: [{ id: 5, text: 'a', prov: 'target' }], stats: STATS(1) },
      { kind: 'done', runId, reason: 'stopped', stats: STATS(1) },
    ];
    const { engine, seen } = await engineWith((r) => events(r.runId), { holdAfter: 1 });
    const ac = new AbortController();
    const finishes: (string | null)[] = [];
    for await (const c of await engine.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], stream: true }, { signal: ac.signal })) {
      finishes.push(c.choices[0].finish_reason);
      ac.abort();
    }
    expect(seen.stops).toEqual([seen.runs[0].runId]);
    expect(finishes).toEqual([null, 'abort']);
  });

  it('refuses bad requests with invalid-request before starting a run', async () => {
    const { engine, seen } = await engineWith((r) => reply(r.runId));
    const code = (req: object) => engine.chat.completions.create(req as never).then(() => 'none', (e: DuetError) => e.code);
    expect(await code({ messages: [] })).toBe('invalid-request');
    expect(await code({ messages: [{ role: 'robot', content: 'x' }] })).toBe('invalid-request');
    expect(await code({ messages: [{ role: 'user', content: 'x' }], top_p: 0 })).toBe('invalid-request');
    expect(await code({ messages: [{ role: 'user', content: 'x' }], max_tokens: 1.5 })).toBe('invalid-request');
    expect(await code({ messages: [{ role: 'user', content: 'x' }], temperature: -1 })).toBe('invalid-request');
    expect(seen.runs).toHaveLength(0);
  });

  it('cache calls pass through', async () => {
    const { engine } = await engineWith((r) => reply(r.runId));
    expect((await engine.cache.list()).map((e) => e.key)).toEqual(['k']);
  });
});

describe('settingsOf and DuetError.from', () => {
  it('maps OpenAI names onto the run settings', () => {
    expect(settingsOf({ messages: [], temperature: 0.7, top_p: 0.9, top_k: 40, seed: 3, max_tokens: 12, duet: { k: 6, adaptive: false, rttMs: 20 } }))
      .toEqual({ temperature: 0.7, topP: 0.9, topK: 40, seed: 3, maxTokens: 12, k: 6, adaptive: false, rttMs: 20 });
  });

  it("reads the worker's JSON failures and wraps anything else as internal", () => {
    const e = DuetError.from(new Error(JSON.stringify({ code: 'auth-refused', message: 'm', hint: 'h' })));
    expect([e.code, e.message, e.hint]).toEqual(['auth-refused', 'm', 'h']);
    expect(DuetError.from(new Error('boom')).code).toBe('internal');
    expect(DuetError.from(new Error('{"code": 1}')).code).toBe('internal');
  });
});
