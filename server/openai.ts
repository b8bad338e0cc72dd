// The gateway's OpenAI-shaped HTTP API, for clients that do not draft (the target alone):
// GET /v1/models, POST /v1/chat/completions, POST /v1/completions (streamed as SSE ending in
// `data: [DONE]`, or one JSON body), and GET /metrics. Routing is Hono (mounted on the
// gateway's node:http server through @hono/node-server), request validation is zod, errors are
// OpenAI's `{error: {message, type, param, code}}` with the matching HTTP status.
//
// Each request is one session on the SAME verifier, batcher and session limit as the WebSocket
// sessions: the gateway hands in `ApiSessions` (reserve a slot, open = prefill through the
// batcher, step = one baseline token, close). A client that goes away mid-generation stops the
// loop at the next token and frees the session.

import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { streamSSE } from 'hono/streaming';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import type { SamplingParams } from '../src/engine/sampling.ts';
import type { ChatMessage, Tokenizer } from '../src/engine/tokenizer.ts';
import type { GatewayMetrics } from './metrics.ts';
import { bearerToken, tokenAccepted } from './upgrade.ts';

/** What the API needs from the gateway: its session slots and its one road to the verifier. */
export interface ApiSessions {
  /** Reserve a session slot under the gateway's limits; null when it holds its maximum. */
  acquire(): string | null;
  /** Give the slot back (after close). */
  release(key: string): void;
  /** Prefill through the batcher; resolves with the first token. */
  open(key: string, prompt: number[], sampling: SamplingParams): Promise<number>;
  /** One baseline token for this session (the gateway's single baseline-step function). */
  step(key: string): Promise<number>;
  close(key: string): Promise<void>;
  /** The gateway is shutting down (new requests get 503). */
  closing(): boolean;
}

/** The tokenizer side the API needs to turn text into tokens and back. */
export interface TextModel {
  tokenizer: Tokenizer;
  /** Tokens that end a reply (generation_config + config + tokenizer eos, as `duet generate` uses). */
  eosIds: number[];
}

export interface OpenAiApiOptions {
  /** The served model id (`model` in requests must equal it). */
  model: string;
  maxContext: number;
  maxSessions: number;
  /** Absent: the completion endpoints answer 503 (a sidecar target without --target DIR). */
  text?: TextModel;
  /** The gateway's --token, required as `Authorization: Bearer TOKEN` when set. */
  token?: string;
  allowOrigins: string[];
  sessions: ApiSessions;
  metrics: GatewayMetrics;
  log: (line: string) => void;
  /** Request bodies larger than this are refused with 413 (default 4 MiB). */
  maxBodyBytes?: number;
}

export interface OpenAiApi {
  /** This request is the API's (/v1/..., /metrics). */
  owns(req: IncomingMessage): boolean;
  handle(req: IncomingMessage, res: ServerResponse): void;
}

// ---------------------------------------------------------------- errors

type ErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_error' | 'server_error';

/** An error with the HTTP status and OpenAI error fields it is answered with. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(readonly status: ContentfulStatusCode, message: string, readonly type: ErrorType, readonly code: string | null = null, readonly param: string | null = null) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const badRequest = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, message, 'invalid_request_error', code, param);

function zodError(e: z.ZodError): ApiError {
  const issue = e.issues[0];
  const param = issue.path.length ? issue.path.join('.') : null;
  return badRequest(`${param ? `${param}: ` : ''}${issue.message}`, param, 'invalid_value');
}

// ---------------------------------------------------------------- request schemas

const unsupported = (what: string) => ({ error: `${what} is not supported by this gateway` });

/** Fields shared by both completion endpoints. Unknown fields are ignored, as OpenAI's SDKs expect. */
const common = {
  model: z.string({ error: 'model is required: GET /v1/models lists the served model' }),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** Not OpenAI's; vLLM and llama.cpp accept it too. */
  top_k: z.number().int().min(0).nullish(),
  seed: z.number().int().min(0).max(0xffffffff).nullish(),
  max_tokens: z.number().int().min(1).nullish(),
  stop: z.union([z.string(), z.array(z.string().min(1)).max(4)]).nullish(),
  n: z.literal(1, unsupported('n > 1')).nullish(),
  presence_penalty: z.literal(0, unsupported('a non-zero presence_penalty')).nullish(),
  frequency_penalty: z.literal(0, unsupported('a non-zero frequency_penalty')).nullish(),
  user: z.string().nullish(),
};

const textPart = z.object({ type: z.literal('text', { error: 'only text content parts are supported' }), text: z.string() });
const chatMessage = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(textPart), z.null()]).optional(),
});

const chatRequest = z.object({
  ...common,
  messages: z.array(chatMessage).min(1, { error: 'messages needs at least one message' }),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.literal(false, unsupported('logprobs')).nullish(),
  tools: z.array(z.unknown()).max(0, unsupported('tools')).nullish(),
});

const completionRequest = z.object({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).length(1, { error: 'one prompt per request (a batch of prompts is not supported)' }), z.array(z.number().int().min(0)).min(1)]),
  echo: z.literal(false, unsupported('echo')).nullish(),
  logprobs: z.null(unsupported('logprobs')).optional(),
  suffix: z.null(unsupported('suffix')).optional(),
});

type ChatRequest = z.infer<typeof chatRequest>;
type CompletionRequest = z.infer<typeof completionRequest>;
type Common = ChatRequest | CompletionRequest;

// ---------------------------------------------------------------- stop strings

/**
 * Cuts generated text at the first stop string, holding back a tail that could still become
 * one (a suffix that is a prefix of a stop string) so a streamed reply never shows the start of
 * a stop sequence it later retracts.
 */
export class StopMatcher {
  private held = '';

  constructor(private readonly stops: readonly string[]) {}

  /** Feed new text; returns what may be shown now, and whether a stop string was reached. */
  push(text: string): { text: string; stopped: boolean } {
    const buf = this.held + text;
    let cut = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.held = '';
      return { text: buf.slice(0, cut), stopped: true };
    }
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** The held-back tail (the reply ended without completing a stop string). */
  flush(): string {
    const h = this.held;
    this.held = '';
    return h;
  }
}

// ---------------------------------------------------------------- generation

interface Generation {
  prompt: number[];
  sampling: SamplingParams;
  maxTokens: number;
  stops: string[];
  signal: () => boolean;
}

interface Outcome {
  finish: 'stop' | 'length';
  completionTokens: number;
  text: string;
}

type Usage = { prompt_tokens: number; completion_tokens: number; total_tokens: number };
const usage = (prompt: number, completion: number): Usage => ({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion });

/** Thrown to end a generation whose client went away; never answered. */
class ClientGone extends Error {
  override name = 'ClientGone';
}

function randomSeed(): number {
  return globalThis.crypto.getRandomValues(new Uint32Array(1))[0];
}

export function createOpenAiApi(o: OpenAiApiOptions): OpenAiApi {
  const app = new Hono();
  const created = Math.floor(Date.now() / 1000);

  const answerError = (c: Context, e: ApiError): Response => c.json(e.body(), e.status);

  app.onError((err, c) => {
    if (err instanceof ApiError) return answerError(c, err);
    o.log(`api ${c.req.method} ${c.req.path}: ${err.message}`);
    return answerError(c, new ApiError(500, `the gateway failed: ${err.message}`, 'server_error'));
  });
  app.notFound((c) => answerError(c, new ApiError(404, `no route ${c.req.method} ${c.req.path}; the API has GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /metrics`, 'not_found_error', 'not_found')));

  app.use('*', cors({ origin: (origin) => (o.allowOrigins.includes('*') || o.allowOrigins.includes(origin) ? origin : null), allowHeaders: ['Authorization', 'Content-Type'], allowMethods: ['GET', 'POST', 'OPTIONS'] }));

  // Count every answer by endpoint and status (a streamed reply counts at its 200 header).
  app.use('*', async (c, next) => {
    await next();
    const p = c.req.path;
    const endpoint = p === '/metrics' || p === '/v1/models' || p === '/v1/chat/completions' || p === '/v1/completions' ? p : p.startsWith('/v1/models/') ? '/v1/models/{id}' : 'other';
    if (endpoint !== '/metrics') o.metrics.apiRequest(endpoint, c.res.status);
  });

  // The gateway's --token as the API key, compared where the WebSocket upgrade compares it.
  app.use('*', async (c, next) => {
    if (c.req.method === 'OPTIONS' || !o.token) return next();
    const given = bearerToken(c.req.header('authorization'));
    if (!tokenAccepted(given, o.token)) {
      throw new ApiError(401, given !== null ? 'wrong API key: use the gateway\'s --token as the key' : 'missing API key: send `Authorization: Bearer TOKEN` with the gateway\'s --token', 'authentication_error', 'invalid_api_key');
    }
    return next();
  });

  app.use('/v1/*', bodyLimit({
    maxSize: o.maxBodyBytes ?? 4 << 20,
    onError: (c) => answerError(c, new ApiError(413, `request body over ${o.maxBodyBytes ?? 4 << 20} bytes`, 'invalid_request_error', 'request_too_large')),
  }));

  app.get('/metrics', async (c) => c.body(await o.metrics.text(), 200, { 'Content-Type': o.metrics.contentType }));

  const modelCard = () => ({ id: o.model, object: 'model' as const, created, owned_by: 'duet', max_model_len: o.maxContext });
  app.get('/v1/models', (c) => c.json({ object: 'list', data: [modelCard()] }));
  app.get('/v1/models/:id', (c) => {
    if (c.req.param('id') !== o.model) throw modelNotFound(c.req.param('id'));
    return c.json(modelCard());
  });

  app.post('/v1/chat/completions', async (c) => {
    const r = parse(chatRequest, await jsonBody(c));
    const text = textModel();
    checkModel(r.model);
    if (!text.tokenizer.hasChatTemplate) throw badRequest(`${o.model} has no chat template (tokenizer_config.json chat_template); use POST /v1/completions with a plain prompt`, 'messages');
    const messages: ChatMessage[] = r.messages.map((m) => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join(''),
    }));
    let prompt: number[];
    try {
      prompt = text.tokenizer.encodeChat(messages);
    } catch (e) {
      throw badRequest(`messages do not render through the chat template: ${(e as Error).message}`, 'messages');
    }
    return complete(c, 'chat', r, prompt, r.max_completion_tokens ?? r.max_tokens ?? undefined);
  });

  app.post('/v1/completions', async (c) => {
    const r = parse(completionRequest, await jsonBody(c));
    const text = textModel();
    checkModel(r.model);
    let prompt: number[];
    if (typeof r.prompt === 'string' || typeof r.prompt[0] === 'string') {
      // as `duet generate --prompt`: the tokenizer's post-processor adds BOS where the model wants it
      prompt = text.tokenizer.encode(typeof r.prompt === 'string' ? r.prompt : (r.prompt[0] as string), { addSpecialTokens: true });
    } else {
      prompt = r.prompt as number[];
      const bad = prompt.findIndex((t) => t >= text.tokenizer.vocabSize);
      if (bad >= 0) throw badRequest(`prompt[${bad}]: token id ${prompt[bad]} is outside the vocabulary (${text.tokenizer.vocabSize})`, 'prompt');
    }
    if (prompt.length === 0) throw badRequest('prompt encodes to no tokens', 'prompt');
    return complete(c, 'text', r, prompt, r.max_tokens ?? undefined);
  });

  for (const path of ['/v1/chat/completions', '/v1/completions']) {
    app.all(path, (c) => answerError(c, new ApiError(405, `${c.req.method} ${path}: use POST`, 'invalid_request_error', 'method_not_allowed')));
  }

  // ---- helpers ----

  function textModel(): TextModel {
    if (!o.text) throw new ApiError(503, 'this gateway has no tokenizer for its target (a sidecar verifier started without --target DIR): the completion endpoints need one', 'server_error', 'no_tokenizer');
    return o.text;
  }

  function modelNotFound(id: string): ApiError {
    return new ApiError(404, `the model "${id}" is not served here; this gateway serves "${o.model}" (GET /v1/models)`, 'not_found_error', 'model_not_found', 'model');
  }

  function checkModel(model: string): void {
    if (model !== o.model) throw modelNotFound(model);
  }

  async function jsonBody(c: Context): Promise<unknown> {
    try {
      return await c.req.json();
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw badRequest(`request body is not valid JSON: ${(e as Error).message}`);
    }
  }

  function parse<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
    const r = schema.safeParse(body);
    if (!r.success) throw zodError(r.error);
    return r.data;
  }

  /** Validate limits, reserve and open a session, then answer streamed or whole. */
  async function complete(c: Context, kind: 'chat' | 'text', r: Common, prompt: number[], maxTokensAsked: number | undefined): Promise<Response> {
    if (prompt.length >= o.maxContext) {
      throw badRequest(`the prompt has ${prompt.length} tokens; this model's context holds ${o.maxContext}`, kind === 'chat' ? 'messages' : 'prompt', 'context_length_exceeded');
    }
    if (maxTokensAsked !== undefined && prompt.length + maxTokensAsked > o.maxContext) {
      throw badRequest(`this model's context holds ${o.maxContext} tokens; you asked for ${prompt.length + maxTokensAsked} (${prompt.length} in the prompt, ${maxTokensAsked} to generate): lower max_tokens`, 'max_tokens', 'context_length_exceeded');
    }
    const sampling: SamplingParams = { temperature: r.temperature ?? 1, topP: r.top_p ?? 1, topK: r.top_k ?? 0, seed: r.seed ?? randomSeed() };
    const g: Generation = {
      prompt, sampling,
      maxTokens: maxTokensAsked ?? o.maxContext - prompt.length,
      stops: r.stop == null ? [] : typeof r.stop === 'string' ? [r.stop] : r.stop,
      signal: () => c.req.raw.signal.aborted,
    };
    if (o.sessions.closing()) throw new ApiError(503, 'the gateway is shutting down; retry on another', 'server_error', 'shutting_down');
    const key = o.sessions.acquire();
    if (key === null) {
      c.header('Retry-After', '1');
      throw new ApiError(429, `the gateway holds its maximum of ${o.maxSessions} sessions; retry shortly`, 'rate_limit_error', 'too_many_sessions');
    }
    let first: number;
    try {
      first = await o.sessions.open(key, prompt, sampling);
    } catch (e) {
      await release(key);
      throw new ApiError(500, `the target backend failed to open a session: ${(e as Error).message}`, 'server_error', 'verifier_failed');
    }
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const now = Math.floor(Date.now() / 1000);
    const head = { id, object: kind === 'chat' ? 'chat.completion' : 'text_completion', created: now, model: o.model, system_fingerprint: null };
    if (!r.stream) {
      try {
        const out = await run(key, first, g, () => {});
        const choice = kind === 'chat'
          ? { index: 0, message: { role: 'assistant', content: out.text }, logprobs: null, finish_reason: out.finish }
          : { index: 0, text: out.text, logprobs: null, finish_reason: out.finish };
        return c.json({ ...head, choices: [choice], usage: usage(prompt.length, out.completionTokens) });
      } catch (e) {
        if (e instanceof ClientGone) return c.body(null, 499 as ContentfulStatusCode);
        throw new ApiError(500, `the target backend failed mid-generation: ${(e as Error).message}`, 'server_error', 'verifier_failed');
      }
    }
    const includeUsage = !!r.stream_options?.include_usage;
    const chunkHead = { ...head, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion' };
    const chunk = (delta: string | null, finish: string | null, role = false) => ({
      ...chunkHead,
      choices: [kind === 'chat'
        ? { index: 0, delta: delta === null ? {} : { ...(role ? { role: 'assistant' } : {}), content: delta }, logprobs: null, finish_reason: finish }
        : { index: 0, text: delta ?? '', logprobs: null, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {}),
    });
    c.header('X-Accel-Buffering', 'no'); // nginx and friends must not hold SSE back
    return streamSSE(c, async (stream) => {
      const gone = () => stream.aborted || c.req.raw.signal.aborted;
      const send = (body: unknown) => stream.writeSSE({ data: JSON.stringify(body) });
      try {
        if (kind === 'chat') await send(chunk('', null, true));
        const out = await run(key, first, { ...g, signal: gone }, (delta) => send(chunk(delta, null)));
        await send(chunk(null, out.finish));
        if (includeUsage) await send({ ...chunkHead, choices: [], usage: usage(prompt.length, out.completionTokens) });
        await stream.writeSSE({ data: '[DONE]' });
      } catch (e) {
        if (e instanceof ClientGone) return;
        o.log(`api ${id}: ${(e as Error).message}`);
        // headers are out: OpenAI's SDKs raise an APIError for a chunk that carries `error`
        await send(new ApiError(500, `the target backend failed mid-generation: ${(e as Error).message}`, 'server_error', 'verifier_failed').body());
      }
    });
  }

  async function release(key: string): Promise<void> {
    try {
      await o.metrics.background('http_session_close', `close ${key}`, o.sessions.close(key), o.log);
    } finally {
      o.sessions.release(key);
    }
  }

  /** The token loop of an opened session; always closes it. onText gets the shown text as it grows. */
  async function run(key: string, first: number, g: Generation, onText: (delta: string) => unknown): Promise<Outcome> {
    const { tokenizer, eosIds } = o.text!;
    const eos = new Set(eosIds);
    const decoder = tokenizer.streamDecoder({ skipSpecialTokens: true });
    const stop = new StopMatcher(g.stops);
    let text = '';
    let count = 0;
    const emit = async (delta: string): Promise<void> => {
      if (!delta) return;
      text += delta;
      await onText(delta);
    };
    try {
      let tok = first;
      for (;;) {
        count++;
        if (eos.has(tok)) break;
        const s = stop.push(decoder.push(tok));
        await emit(s.text);
        if (s.stopped) return { finish: 'stop', completionTokens: count, text };
        if (count >= g.maxTokens || g.prompt.length + count > o.maxContext) {
          await emit(stop.push(decoder.flush()).text + stop.flush());
          return { finish: 'length', completionTokens: count, text };
        }
        if (g.signal()) throw new ClientGone();
        tok = await o.sessions.step(key);
      }
      const tail = stop.push(decoder.flush());
      await emit(tail.text + (tail.stopped ? '' : stop.flush()));
      return { finish: 'stop', completionTokens: count, text };
    } finally {
      await release(key);
    }
  }

  const listener = getRequestListener(app.fetch, { overrideGlobalObjects: false });
  return {
    owns(req) {
      const path = (req.url ?? '/').split('?')[0];
      return path === '/metrics' || path === '/v1' || path.startsWith('/v1/');
    },
    handle(req, res) {
      void Promise.resolve(listener(req, res)).catch((e: Error) => {
        o.log(`api ${req.method} ${req.url}: ${e.message}`);
        if (!res.headersSent) res.writeHead(500).end();
        else res.destroy();
      });
    },
  };
}
