// The gateway's OpenAI-shaped API through the official `openai` npm client (a client nobody
// here wrote), on the bundled tiny target with the cpu verifier: streamed and whole chat
// completions and text completions whose greedy text equals `duet generate`'s token loop
// (src/cli/generate.ts generateTokens, in-process) on the same prompt; typed errors (401, 400,
// 404, 429); the shared session limit; a client that aborts mid-stream frees its session; stop
// strings cut exactly where the text first contains them.
import { existsSync } from 'node:fs';
import OpenAI from 'openai';
import parse, { type PromFamily } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateTokens, openBackend, type Backend } from '../src/cli/generate.ts';
import { stopTokenIds } from '../src/engine/loader/model.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { RemoteTarget } from '../src/protocol/client.ts';
import { startGateway, type Gateway } from './gateway.ts';
import { StopMatcher } from './openai.ts';
import { until } from './testing.ts';
import { createCpuVerifier, type CpuBackend } from './verifiers/cpu.ts';
import { loadTargetDir, type TargetModel } from './verifiers/load.ts';

type ApiErr = InstanceType<typeof OpenAI.APIError>;
const TARGET = 'public/models/tiny-target';
const have = existsSync(`${TARGET}/config.json`);
if (!have) console.warn(`openai.test: skipped, ${TARGET} is missing (the bundled tiny pair is built by tools/train)`);
const TOKEN = 'sekret-token';
const CTX = 256;
const N = 24;
const PROMPTS = ['Once upon a time', 'The king said to the'];

describe.skipIf(!have)('the openai client against the gateway (tiny target, cpu verifier)', () => {
  let m: TargetModel;
  let verifier: CpuBackend;
  let gw: Gateway;
  let client: OpenAI;
  let be: Backend;
  let eos: Set<number>;

  /** `duet generate --chat` / `--prompt`, greedy, in-process: the oracle's tokens and text. */
  async function reference(prompt: number[], maxTokens = N): Promise<{ text: string; tokens: number[]; finish: 'stop' | 'length' }> {
    const g = await generateTokens(be.lm, prompt, GREEDY, maxTokens, eos);
    return { text: be.tokenizer!.decode(g.tokens, { skipSpecialTokens: true }), tokens: g.tokens, finish: g.stopReason === 'eos' ? 'stop' : 'length' };
  }

  beforeAll(async () => {
    m = await loadTargetDir(TARGET);
    verifier = createCpuVerifier({ config: m.config, weights: m.weights, model: 'tiny-target', tokenizerHash: m.tokenizerHash, maxContext: CTX, maxBatch: 16 });
    gw = await startGateway({ verifier, textModel: m.text, token: TOKEN, maxSessions: 3, maxSessionsPerAddress: 3 });
    client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: TOKEN, maxRetries: 0 });
    be = await openBackend(TARGET, 'cpu', 'none', CTX);
    eos = new Set(stopTokenIds(be.model.generationConfig, be.lm.config, be.tokenizer));
  });
  afterAll(async () => {
    await gw?.close();
    await verifier?.dispose();
    await be?.close();
  });

  it('lists the served model', async () => {
    const list = await client.models.list();
    expect(list.data.map((x) => x.id)).toEqual(['tiny-target']);
    expect((await client.models.retrieve('tiny-target')).id).toBe('tiny-target');
  });

  it('non-streamed chat completion, greedy == duet generate --chat greedy, with usage', async () => {
    for (const content of PROMPTS) {
      const prompt = be.tokenizer!.encodeChat([{ role: 'user', content }]);
      const want = await reference(prompt);
      const r = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content }], temperature: 0, max_tokens: N });
      expect(r.object).toBe('chat.completion');
      expect(r.choices[0].message.role).toBe('assistant');
      expect(r.choices[0].message.content, content).toBe(want.text);
      expect(r.choices[0].finish_reason).toBe(want.finish);
      expect(r.usage).toEqual({ prompt_tokens: prompt.length, completion_tokens: want.tokens.length, total_tokens: prompt.length + want.tokens.length });
    }
  });

  it('streamed chat completion: the deltas concatenate to the same text; usage chunk; [DONE] ends it', async () => {
    const content = PROMPTS[1];
    const prompt = be.tokenizer!.encodeChat([{ role: 'user', content }]);
    const want = await reference(prompt);
    const stream = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content }], temperature: 0, max_tokens: N, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let deltas = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (!c) continue;
      if (c.delta.content) {
        text += c.delta.content;
        deltas++;
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    expect(text).toBe(want.text);
    expect(deltas).toBeGreaterThan(1); // streamed, not one lump
    expect(finish).toBe(want.finish);
    expect(usage?.completion_tokens).toBe(want.tokens.length);
  });

  it('text completion (stream and not) == duet generate --prompt greedy', async () => {
    const prompt = be.tokenizer!.encode(PROMPTS[0], { addSpecialTokens: true });
    const want = await reference(prompt, 16);
    const r = await client.completions.create({ model: 'tiny-target', prompt: PROMPTS[0], temperature: 0, max_tokens: 16 });
    expect(r.choices[0].text).toBe(want.text);
    expect(r.usage?.prompt_tokens).toBe(prompt.length);
    let text = '';
    for await (const c of await client.completions.create({ model: 'tiny-target', prompt: PROMPTS[0], temperature: 0, max_tokens: 16, stream: true })) text += c.choices[0]?.text ?? '';
    expect(text).toBe(want.text);
  });

  it('stop strings cut where the text first contains one (both ways)', async () => {
    const prompt = be.tokenizer!.encode(PROMPTS[1], { addSpecialTokens: true });
    const want = await reference(prompt);
    // a stop string from the middle of the greedy reply, so the cut keeps real text before it
    const from = want.text.search(/\S/) + 4;
    const stop = want.text.slice(from, from + 3);
    const cut = want.text.slice(0, want.text.indexOf(stop));
    expect(stop.length).toBe(3);
    expect(cut.trim().length).toBeGreaterThan(0);
    const r = await client.completions.create({ model: 'tiny-target', prompt: PROMPTS[1], temperature: 0, max_tokens: N, stop: ['zzzz-never', stop] });
    expect(r.choices[0].text).toBe(cut);
    expect(r.choices[0].finish_reason).toBe('stop');
    let text = '';
    for await (const c of await client.completions.create({ model: 'tiny-target', prompt: PROMPTS[1], temperature: 0, max_tokens: N, stop, stream: true })) text += c.choices[0]?.text ?? '';
    expect(text).toBe(cut);
  });

  it('errors arrive typed: 401 wrong key, 400 bad field, 404 unknown model, 400 context', async () => {
    const bad = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    const e401 = await bad.models.list().catch((e: unknown) => e);
    expect(e401).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((e401 as ApiErr).status).toBe(401);
    expect((e401 as ApiErr).code).toBe('invalid_api_key');

    const e400 = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content: 'x' }], temperature: 7 }).catch((e: unknown) => e);
    expect(e400).toBeInstanceOf(OpenAI.BadRequestError);
    expect((e400 as ApiErr).param).toBe('temperature');

    const e404 = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    expect(e404).toBeInstanceOf(OpenAI.NotFoundError);
    expect((e404 as ApiErr).code).toBe('model_not_found');

    const eCtx = await client.completions.create({ model: 'tiny-target', prompt: 'x', max_tokens: CTX + 1 }).catch((e: unknown) => e);
    expect(eCtx).toBeInstanceOf(OpenAI.BadRequestError);
    expect((eCtx as ApiErr).code).toBe('context_length_exceeded');

    const eN = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content: 'x' }], n: 2 }).catch((e: unknown) => e);
    expect(eN).toBeInstanceOf(OpenAI.BadRequestError);
    expect((eN as ApiErr).message).toMatch(/n > 1 is not supported/);
  });

  it('raw HTTP: case-insensitive Bearer, OpenAI error bodies for bad JSON and unknown routes', async () => {
    const ok = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `bEaReR ${TOKEN}` } });
    expect(ok.status).toBe(200);
    const none = await fetch(`${gw.url}/v1/models`);
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error: { type: 'authentication_error', code: 'invalid_api_key', param: null } });
    const badJson = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{"model":' });
    expect(badJson.status).toBe(400);
    const body = await badJson.json();
    expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(body.error.message).toMatch(/not valid JSON/);
    const get = await fetch(`${gw.url}/v1/chat/completions`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(get.status).toBe(405);
    const nope = await fetch(`${gw.url}/v1/embeddings`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(nope.status).toBe(404);
    expect((await nope.json()).error.type).toBe('not_found_error');
    // the SSE framing itself: data lines of JSON chunks, then data: [DONE]
    const sse = await fetch(`${gw.url}/v1/completions`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'tiny-target', prompt: 'Once', max_tokens: 3, temperature: 0, stream: true }) });
    expect(sse.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = (await sse.text()).split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    for (const e of events.slice(0, -1)) expect(JSON.parse(e.replace(/^data: /, '')).object).toBe('text_completion');
    expect(events.length).toBeGreaterThanOrEqual(3);
    // /metrics takes the same key (scrapers send it as bearer credentials)
    expect((await fetch(`${gw.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    // the rest of the gateway is untouched by the API's routes
    expect((await fetch(`${gw.url}/api/info`)).status).toBe(200);
  });

  it('shares the session limit with WebSocket sessions: 429 when full, served again once one closes', async () => {
    const links = [0, 1, 2].map(() => new RemoteTarget({ url: `${gw.wsUrl}?token=${TOKEN}`, tokenizerHash: m.tokenizerHash, mode: 'baseline' }));
    await Promise.all(links.map((l) => l.open([1, 2, 3], GREEDY)));
    expect(gw.stats().sessions).toBe(3);
    const e = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.RateLimitError);
    expect((e as ApiErr).code).toBe('too_many_sessions');
    await links[0].close();
    await until(() => gw.stats().sessions === 2, 5_000, 'a WS session freed');
    const r = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content: 'x' }], max_tokens: 2, temperature: 0 });
    expect(r.choices[0].finish_reason).toBeTruthy();
    await Promise.all(links.slice(1).map((l) => l.close()));
    await until(() => gw.stats().sessions === 0 && verifier.sessionCount === 0, 5_000, 'all sessions freed');
  });

  it('a client that aborts mid-stream frees its session at once, long before max_tokens', async () => {
    const baselineTokens = async (): Promise<number> => {
      const text = await (await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
      return Number(/^duet_generated_tokens_total\{mode="baseline"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const before = gw.stats().sessions;
    const tokens0 = await baselineTokens();
    // greedy on this prompt runs on without an eos (checked below by the 200-token budget not being spent)
    const stream = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content: PROMPTS[0] }], max_tokens: 200, temperature: 0, stream: true });
    let chunks = 0;
    for await (const _ of stream) {
      if (++chunks === 3) {
        expect(gw.stats().sessions).toBe(before + 1);
        stream.controller.abort();
        break;
      }
    }
    await until(() => gw.stats().sessions === before && verifier.sessionCount === 0, 5_000, 'the aborted session freed');
    expect(await baselineTokens() - tokens0).toBeLessThan(20);
    const full = await reference(be.tokenizer!.encodeChat([{ role: 'user', content: PROMPTS[0] }]), 40);
    expect(full.finish).toBe('length'); // so the stream above could not have ended on its own within 40 tokens
  });

  it('40 fuzzed request bodies get 4xx OpenAI errors or a proper answer, never a 500 or a crash', async () => {
    const JUNK: unknown[] = [null, true, -1, 0, 1, 2 ** 32, 1e308, -0.5, '', 'x'.repeat(300), [], [1, -1], [1e9], {}, { a: 1 }, [{ role: 'user' }], [{ type: 'image_url' }]];
    const chat = { model: 'tiny-target', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1, temperature: 0.5, top_p: 0.9, seed: 1, stop: ['\n'], stream: false };
    const text = { model: 'tiny-target', prompt: 'hi', max_tokens: 1, temperature: 0, stream: true };
    let seed = 12345;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const pick = <T,>(a: T[]): T => a[Math.floor(rand() * a.length)];
    const statuses = new Map<number, number>();
    for (let i = 0; i < 40; i++) {
      const [path, base] = i % 2 ? ['/v1/chat/completions', chat] : ['/v1/completions', text];
      const body: Record<string, unknown> = structuredClone(base);
      const field = pick(Object.keys(body));
      if (field !== 'max_tokens' && rand() < 0.2) delete body[field];
      else body[field] = pick(JUNK);
      const raw = i % 17 === 0 ? JSON.stringify(body).slice(0, 20) : JSON.stringify(body);
      const r = await fetch(`${gw.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: raw });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      const t = await r.text();
      if (r.status !== 200) {
        expect([400, 404], `${path} ${raw} → ${r.status} ${t}`).toContain(r.status);
        expect(Object.keys(JSON.parse(t).error).sort()).toEqual(['code', 'message', 'param', 'type']);
      }
    }
    expect(statuses.get(400)).toBeGreaterThan(10);
    expect(statuses.get(200)).toBeGreaterThan(2);
    await until(() => gw.stats().sessions === 0 && verifier.sessionCount === 0, 5_000, 'sessions freed after the fuzz');
    const prompt = be.tokenizer!.encode(PROMPTS[0], { addSpecialTokens: true });
    const r = await client.completions.create({ model: 'tiny-target', prompt: PROMPTS[0], temperature: 0, max_tokens: 8 });
    expect(r.choices[0].text).toBe((await reference(prompt, 8)).text);
  });

  it('/metrics counts the HTTP session: opened, prompt tokens, baseline steps, the request by status', async () => {
    const scrape = async () => new Map(parse(await (await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text()).map((f) => [f.name, f]));
    const v = (m: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}) =>
      Number(m.get(name)?.metrics.find((x) => Object.entries(labels).every(([k, val]) => x.labels?.[k] === val))?.value ?? 0);
    const before = await scrape();
    const r = await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content: 'x' }], max_tokens: 3, temperature: 0 });
    await client.chat.completions.create({ model: 'tiny-target', messages: [{ role: 'user', content: 'x' }], temperature: 9 }).catch(() => null);
    const after = await scrape();
    const d = (name: string, labels?: Record<string, string>) => v(after, name, labels) - v(before, name, labels);
    expect(d('duet_sessions_opened_total', { api: 'http' })).toBe(1);
    expect(d('duet_prompt_tokens_total')).toBe(r.usage!.prompt_tokens);
    // the first token comes from the prefill; each later one is one baseline step
    expect(d('duet_generated_tokens_total', { mode: 'baseline' })).toBe(r.usage!.completion_tokens - 1);
    expect(d('duet_http_api_requests_total', { endpoint: '/v1/chat/completions', status: '200' })).toBe(1);
    expect(d('duet_http_api_requests_total', { endpoint: '/v1/chat/completions', status: '400' })).toBe(1);
  });
});

describe('StopMatcher', () => {
  const cases: { text: string; stops: string[] }[] = [
    { text: 'hello world, goodbye world', stops: ['bye'] },
    { text: 'aaab', stops: ['aab'] },
    { text: 'no stop here', stops: ['xyz', 'zz'] },
    { text: 'first END then STOP', stops: ['STOP', 'END'] },
  ];
  for (const { text, stops } of cases) {
    it(`${JSON.stringify(text)} / ${JSON.stringify(stops)}: any split of the text gives the whole-text answer`, () => {
      const hits = stops.map((s) => text.indexOf(s)).filter((i) => i >= 0);
      const want = hits.length ? text.slice(0, Math.min(...hits)) : text;
      for (let size = 1; size <= 4; size++) {
        const m = new StopMatcher(stops);
        let shown = '';
        let stopped = false;
        for (let i = 0; i < text.length && !stopped; i += size) {
          const r = m.push(text.slice(i, i + size));
          shown += r.text;
          stopped = r.stopped;
          // never shows text past where a stop string begins
          expect(want.startsWith(shown), `piece size ${size}: showed ${JSON.stringify(shown)}`).toBe(true);
        }
        if (!stopped) shown += m.flush();
        expect(shown, `piece size ${size}`).toBe(want);
        expect(stopped).toBe(hits.length > 0);
      }
    });
  }
});
