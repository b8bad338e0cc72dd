// Bad input at the gateway: every kind of malformed or illegal request is answered with its
// typed error code; fatal ones close the offending connection, per-session ones leave the
// session usable; and a well-behaved session running alongside is unaffected throughout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { greedyOracle } from '../src/engine/spec-fixtures.ts';
import { speculate } from '../src/engine/speculative.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { encodeJson, encodeVerify } from '../src/protocol/codec.ts';
import { ProtocolError } from '../src/protocol/errors.ts';
import { PROTOCOL_VERSION } from '../src/protocol/messages.ts';
import { RawClient, TEST_TOKENIZER_HASH, remote, startTestGateway, until, type TestGateway } from './testing.ts';

const SMALL = { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 };
const V = SMALL.vocabSize;
const hello = encodeJson({ type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: TEST_TOKENIZER_HASH });
const open = (session: number, prompt = [1, 2, 3], extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: 'open', session, prompt, sampling: GREEDY, mode: 'speculative', ...extra });
const verify = (session: number, seq: number, draft: number[]) => encodeVerify({ type: 'verify', session, seq, draft: Int32Array.from(draft) });

let t: TestGateway;

beforeAll(async () => {
  // a long batch window makes "two verifies in flight" deterministic (the first waits for it)
  t = await startTestGateway({ pairOptions: { seed: 3, config: SMALL }, maxBlock: 8, maxSessions: 6, maxSessionsPerAddress: 6, maxContext: 64, batchWindowMs: 40, ratePerSec: 0 });
});
afterAll(async () => t?.close());

async function ready(): Promise<RawClient> {
  const c = await RawClient.connect(t.gateway.wsUrl);
  c.send(hello);
  await c.next((m) => m.type === 'welcome');
  return c;
}

describe('typed errors for bad input', () => {
  it('keeps a bystander session exact while others misbehave', async () => {
    const prompt = [5, 6, 7, 8];
    const link = remote(t.gateway);
    // the bystander runs concurrently with every other test in this block
    const bystander = speculate(t.pair.newDraft(64), link, prompt, { params: GREEDY, maxTokens: 30, k: 3 });
    const c = await ready();
    // a burst of garbage from another connection while the bystander decodes
    for (let i = 0; i < 50; i++) c.send(i % 2 ? '{"type":"open"' : new Uint8Array([1, 1, 0, 0, 9]));
    for (let i = 0; i < 50; i++) await c.error();
    const r = await bystander;
    expect(r.tokens).toEqual(greedyOracle(t.pair.newTarget(64), prompt, 30));
    await link.close();
    c.close();
  });

  it('malformed frames and unknown types: non-fatal, the connection keeps working', async () => {
    const c = await RawClient.connect(t.gateway.wsUrl);
    c.send('{not json');
    expect((await c.error()).code).toBe('BAD_FRAME');
    c.send(new Uint8Array([1, 2, 3]));
    expect((await c.error()).code).toBe('BAD_FRAME');
    c.send('{"type":"teleport"}');
    expect((await c.error()).code).toBe('UNKNOWN_TYPE');
    c.send(new Uint8Array(16).fill(0)); // binary kind 0
    expect((await c.error()).code).toBe('UNKNOWN_TYPE');
    c.send(open(1));
    expect((await c.error()).code).toBe('NOT_READY');
    c.send(JSON.stringify({ type: 'ping', t: 42 }));
    expect(await c.next((m) => m.type === 'pong')).toEqual({ type: 'pong', t: 42 });
    c.send(hello);
    await c.next((m) => m.type === 'welcome');
    c.send(hello);
    expect((await c.error()).code).toBe('BAD_FIELD');
    expect(c.closed).toBeNull();
    c.close();
  });

  it('wrong protocol version and tokenizer mismatch are fatal: the connection is closed', async () => {
    const a = await RawClient.connect(t.gateway.wsUrl);
    a.send(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION + 1, tokenizerHash: TEST_TOKENIZER_HASH }));
    const ea = await a.error('BAD_VERSION');
    expect(ea.fatal).toBe(true);
    await a.waitClosed();
    const b = await RawClient.connect(t.gateway.wsUrl);
    b.send(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: 'some-other-tokenizer' }));
    const eb = await b.error('TOKENIZER_MISMATCH');
    expect(eb.fatal).toBe(true);
    expect(eb.message).toMatch(/tokenizer/);
    await b.waitClosed();
    // the client surfaces it as a typed error
    const link = remote(t.gateway, { tokenizerHash: 'some-other-tokenizer' });
    await expect(link.open([1], GREEDY)).rejects.toMatchObject({ name: 'ProtocolError', code: 'TOKENIZER_MISMATCH' });
  });

  it('out-of-range ids, oversized blocks, bad seq, busy: typed per-session errors, the session stays usable', async () => {
    const c = await ready();
    c.send(open(1, [1, V]));
    expect(await c.error()).toMatchObject({ code: 'TOKEN_OUT_OF_RANGE', session: 1, fatal: false });
    c.send(open(1, [1, 2, 3]));
    const opened = await c.next((m) => m.type === 'opened');
    expect(opened).toMatchObject({ session: 1, length: 4 });
    c.send(open(1));
    expect((await c.error()).code).toBe('SESSION_EXISTS');
    c.send(verify(1, 0, [4, V + 5]));
    expect(await c.error()).toMatchObject({ code: 'TOKEN_OUT_OF_RANGE', session: 1, seq: 0 });
    c.send(verify(1, 0, [1, 2, 3, 4, 5, 6, 7, 8, 9]));
    expect(await c.error()).toMatchObject({ code: 'BLOCK_TOO_LARGE', session: 1 });
    c.send(verify(1, 3, [4]));
    expect(await c.error()).toMatchObject({ code: 'BAD_SEQ', session: 1, seq: 3 });
    c.send(verify(2, 0, [4]));
    expect(await c.error()).toMatchObject({ code: 'UNKNOWN_SESSION', session: 2 });
    c.send(verify(1, 0, [4, 4]));
    c.send(verify(1, 1, [4]));
    expect(await c.error()).toMatchObject({ code: 'BUSY', session: 1 });
    const v = await c.next((m) => m.type === 'verdict');
    expect(v).toMatchObject({ session: 1, seq: 0 });
    // and the session goes on
    c.send(verify(1, 1, [9]));
    expect(await c.next((m) => m.type === 'verdict')).toMatchObject({ session: 1, seq: 1 });
    c.send(JSON.stringify({ type: 'close', session: 1 }));
    await c.next((m) => m.type === 'closed');
    c.send(verify(1, 2, [4]));
    expect((await c.error()).code).toBe('UNKNOWN_SESSION');
    expect(c.closed).toBeNull();
    c.close();
  });

  it('sampled sessions need q for each draft token', async () => {
    const c = await ready();
    c.send(open(1, [1, 2], { sampling: { temperature: 0.8, topK: 0, topP: 1, seed: 1 } }));
    await c.next((m) => m.type === 'opened');
    c.send(verify(1, 0, [4, 5]));
    expect(await c.error()).toMatchObject({ code: 'BAD_FIELD', session: 1 });
    c.send(encodeVerify({ type: 'verify', session: 1, seq: 0, draft: Int32Array.of(4), dists: [{ ids: Int32Array.of(4, 5), probs: Float32Array.of(0.75, 0.25) }] }));
    expect(await c.next((m) => m.type === 'verdict')).toMatchObject({ session: 1, seq: 0 });
    c.close();
  });

  it('context and session limits', async () => {
    const c = await ready();
    c.send(open(1, new Array(64).fill(3)));
    expect((await c.error()).code).toBe('CONTEXT_FULL');
    c.send(open(1, new Array(60).fill(3)));
    await c.next((m) => m.type === 'opened');
    c.send(verify(1, 0, [1, 2, 3, 4, 5]));
    expect((await c.error()).code).toBe('CONTEXT_FULL');
    c.send(JSON.stringify({ type: 'generate', session: 1, n: 10 }));
    expect((await c.error()).code).toBe('CONTEXT_FULL');
    for (let s = 2; s <= 6; s++) c.send(open(s));
    for (let s = 2; s <= 6; s++) await c.next((m) => m.type === 'opened' && m.session === s);
    c.send(open(7));
    expect(await c.error()).toMatchObject({ code: 'TOO_MANY_SESSIONS', session: 7 });
    c.close();
    await until(() => t.gateway.stats().sessions === 0 && t.verifier.sessionCount === 0, 5_000, 'sessions freed on disconnect');
  });

  it('frames over maxPayload are refused by closing the connection (1009)', async () => {
    const c = await ready();
    c.send(new Uint8Array(t.gateway.info.maxPayloadBytes + 1));
    await c.waitClosed();
    expect(c.closed?.code).toBe(1009);
  });
});

describe('limits on a gateway with a rate limit, a token and an origin allowlist', () => {
  let g: TestGateway;
  beforeAll(async () => {
    g = await startTestGateway({ pairOptions: { seed: 3, config: SMALL }, ratePerSec: 2, token: 's3cret', allowOrigins: ['http://app.example'] });
  });
  afterAll(async () => g?.close());

  it('per-session rate limit → RATE_LIMITED, the session survives', async () => {
    const c = await RawClient.connect(`${g.gateway.wsUrl}?token=s3cret`);
    c.send(hello);
    await c.next((m) => m.type === 'welcome');
    c.send(open(1));
    await c.next((m) => m.type === 'opened');
    c.send(verify(1, 0, [4]));
    await c.next((m) => m.type === 'verdict');
    c.send(verify(1, 1, [4]));
    expect(await c.error()).toMatchObject({ code: 'RATE_LIMITED', session: 1 });
    await new Promise((r) => setTimeout(r, 600)); // the bucket refills at 2/s
    c.send(verify(1, 1, [4]));
    expect(await c.next((m) => m.type === 'verdict')).toMatchObject({ seq: 1 });
    c.close();
  });

  it('refuses a missing/wrong token and a foreign origin on upgrade, with typed client errors', async () => {
    const status = (url: string, headers: Record<string, string> = {}) => new Promise<number>((resolve) => {
      const ws = new WebSocket(url, { headers });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => {
        resolve(101);
        ws.close();
      });
      ws.on('error', () => {});
    });
    expect(await status(g.gateway.wsUrl)).toBe(401);
    expect(await status(`${g.gateway.wsUrl}?token=nope`)).toBe(401);
    expect(await status(g.gateway.wsUrl, { Authorization: 'Bearer s3cret' })).toBe(101);
    expect(await status(`${g.gateway.wsUrl}?token=s3cret`, { Origin: 'http://evil.example' })).toBe(403);
    expect(await status(`${g.gateway.wsUrl}?token=s3cret`, { Origin: 'http://app.example' })).toBe(101);
    expect(await status(`${g.gateway.url}/elsewhere?token=s3cret`)).toBe(404);

    const bad = remote(g.gateway, { token: 'nope', reconnect: false });
    await expect(bad.connect()).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    const foreign = remote(g.gateway, { token: 's3cret', createWebSocket: (u) => new WebSocket(u, { headers: { Origin: 'http://evil.example' } }) as never });
    await expect(foreign.connect()).rejects.toBeInstanceOf(ProtocolError);
    await expect(foreign.connect()).rejects.toMatchObject({ code: 'ORIGIN_REFUSED' });
    const good = remote(g.gateway, { token: 's3cret' });
    expect((await good.connect()).auth).toBe(true);
    await good.close();
  });
});

describe('connection hygiene', () => {
  let g: TestGateway;
  beforeAll(async () => {
    g = await startTestGateway({ pairOptions: { seed: 3, config: SMALL }, helloTimeoutMs: 150, maxSessionsPerConnection: 2, maxConnections: 2 });
  });
  afterAll(async () => g?.close());

  it('closes a connection that never says hello', async () => {
    const c = await RawClient.connect(g.gateway.wsUrl);
    expect(await c.error('NOT_READY')).toMatchObject({ fatal: true });
    await c.waitClosed();
  });

  it('caps sessions per connection and connections per gateway', async () => {
    const a = await RawClient.connect(g.gateway.wsUrl);
    a.send(hello);
    await a.next((m) => m.type === 'welcome');
    a.send(open(1));
    a.send(open(2));
    a.send(open(3));
    expect(await a.error()).toMatchObject({ code: 'TOO_MANY_SESSIONS', session: 3 });
    await a.next((m) => m.type === 'opened' && m.session === 2);
    const b = await RawClient.connect(g.gateway.wsUrl);
    await expect(RawClient.connect(g.gateway.wsUrl)).rejects.toThrow(/503/);
    b.close();
    a.close();
  });
});
