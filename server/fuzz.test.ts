// Fuzz: ≥ 10,000 random and mutated frames (random bytes, random text, bit-flipped and
// truncated verify frames, JSON with fields swapped for junk) over several connections. The
// gateway must answer without crashing, keep its heap bounded (measured, printed) and
// still serve a well-behaved session exactly afterwards.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { greedyOracle } from '../src/engine/spec-fixtures.ts';
import { speculate } from '../src/engine/speculative.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { mulberry32 } from '../src/engine/weights.ts';
import { encodeJson, encodeVerify } from '../src/protocol/codec.ts';
import { PROTOCOL_VERSION } from '../src/protocol/messages.ts';
import { RawClient, TEST_TOKENIZER_HASH, remote, startTestGateway, until, type TestGateway } from './testing.ts';

const SMALL = { hiddenSize: 32, intermediateSize: 67, numHeads: 2, numKvHeads: 1, headDim: 16, vocabSize: 263 };
const FRAMES = 10_000;
let t: TestGateway;

beforeAll(async () => {
  // rate limits off: this test is about what bad frames do, not how many (harden.test covers the limits)
  t = await startTestGateway({ pairOptions: { seed: 9, config: SMALL }, maxBlock: 8, maxSessions: 16, maxContext: 128, ratePerSec: 0, framesPerSec: 0, errorsPerSec: 0 });
});
afterAll(async () => t?.close());

const JUNK: unknown[] = [null, true, -1, 0, 1, 2 ** 32, 1e308, -0.5, NaN, '', 'x'.repeat(300), [], [1, -1], [263], {}, { a: 1 }, [1.5]];
const hello = { type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: TEST_TOKENIZER_HASH };
const validJson = (s: number): Record<string, unknown>[] => [
  hello,
  { type: 'open', session: s, prompt: [1, 2, 3], sampling: { temperature: 0, topK: 0, topP: 1, seed: 1 }, mode: 'speculative' },
  { type: 'open', session: s, prompt: [4], sampling: { temperature: 0.9, topK: 5, topP: 0.9, seed: 2 }, mode: 'baseline', resume: [5, 6] },
  { type: 'generate', session: s, n: 2 },
  { type: 'close', session: s },
  { type: 'ping', t: 1 },
];

function frame(rand: () => number, i: number): string | Uint8Array {
  const pick = <T,>(a: T[]): T => a[Math.floor(rand() * a.length)];
  const s = Math.floor(rand() * 4);
  switch (i % 6) {
    case 0: // random bytes
      return Uint8Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256));
    case 1: // random text
      return String.fromCharCode(...Array.from({ length: Math.floor(rand() * 64) }, () => 32 + Math.floor(rand() * 95)));
    case 2: { // a valid verify frame with bytes flipped or cut
      const k = 1 + Math.floor(rand() * 4);
      const dists = rand() < 0.5 ? Array.from({ length: k }, () => ({ ids: Int32Array.of(Math.floor(rand() * 263), 262), probs: Float32Array.of(0.5, 0.5) })) : undefined;
      const b = encodeVerify({ type: 'verify', session: s, seq: Math.floor(rand() * 3), draft: Int32Array.from({ length: k }, () => Math.floor(rand() * 263)), dists });
      const flips = Math.floor(rand() * 3);
      for (let f = 0; f < flips; f++) b[Math.floor(rand() * b.length)] ^= 1 << Math.floor(rand() * 8);
      return rand() < 0.2 ? b.subarray(0, Math.floor(rand() * b.length)) : b;
    }
    case 3: { // valid JSON with one field replaced by junk (or deleted)
      const m = { ...pick(validJson(s)) };
      const key = pick(Object.keys(m));
      if (rand() < 0.2) delete m[key];
      else m[key] = pick(JUNK);
      return JSON.stringify(m);
    }
    case 4: // valid JSON, sometimes truncated
      return rand() < 0.3 ? JSON.stringify(pick(validJson(s))).slice(0, 10) : JSON.stringify(pick(validJson(s)));
    default: // a valid verify frame
      return encodeVerify({ type: 'verify', session: s, seq: Math.floor(rand() * 3), draft: Int32Array.of(Math.floor(rand() * 263)) });
  }
}

describe('fuzz', () => {
  it(`survives ${FRAMES} random and mutated frames with bounded memory`, async () => {
    const rand = mulberry32(1234);
    // a forced GC before each heap reading, so the comparison measures retained memory
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as (() => void) | undefined;
    gc?.();
    const heap0 = process.memoryUsage().heapUsed;
    let sent = 0;
    let reconnects = 0;
    const CONNS = 4;
    const clients: RawClient[] = [];
    const connect = async (): Promise<RawClient> => {
      const c = await RawClient.connect(t.gateway.wsUrl);
      if (rand() < 0.9) c.send(encodeJson(hello as never));
      return c;
    };
    for (let i = 0; i < CONNS; i++) clients.push(await connect());
    while (sent < FRAMES) {
      for (let ci = 0; ci < CONNS && sent < FRAMES; ci++) {
        if (clients[ci].closed) {
          reconnects++;
          clients[ci] = await connect();
        }
        clients[ci].send(frame(rand, sent));
        sent++;
        // drop what the client collected so the test itself does not hold memory
        clients[ci].messages.length = 0;
      }
      // let the gateway answer (and the prefill/verify jobs run) every few hundred frames
      if (sent % 200 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    // every connection must still answer a ping (the gateway is alive and reading)
    for (const c of clients) {
      if (c.closed) continue;
      c.send(JSON.stringify({ type: 'ping', t: 7 }));
      await c.next((m) => m.type === 'pong' && m.t === 7, 30_000);
    }
    for (const c of clients) c.close();
    await until(() => t.gateway.stats().sessions === 0 && t.verifier.sessionCount === 0, 30_000, 'every fuzz session freed');
    gc?.();
    const heap1 = process.memoryUsage().heapUsed;
    const growthMb = (heap1 - heap0) / 2 ** 20;
    const st = t.gateway.stats();
    const errorsTotal = Object.values(st.errors).reduce((a, b) => a + (b ?? 0), 0);
    console.log(`fuzz: ${sent} frames, ${reconnects} reconnects after fatal errors, ${errorsTotal} typed errors ${JSON.stringify(st.errors)}, ${st.opened} sessions opened, heap ${(heap0 / 2 ** 20).toFixed(1)} → ${(heap1 / 2 ** 20).toFixed(1)} MB (gc ${gc ? 'forced' : 'not exposed'})`);
    expect(errorsTotal).toBeGreaterThan(FRAMES / 4);
    expect(st.errors.BAD_FRAME).toBeGreaterThan(0);
    expect(st.errors.UNKNOWN_TYPE).toBeGreaterThan(0);
    expect(st.errors.BAD_FIELD).toBeGreaterThan(0);
    // bounded: nothing per frame is retained (10k frames retained would be far above this)
    expect(growthMb).toBeLessThan(16);

    // and a well-behaved client is served exactly afterwards
    const prompt = [7, 8, 9];
    const link = remote(t.gateway);
    const r = await speculate(t.pair.newDraft(128), link, prompt, { params: GREEDY, maxTokens: 16, k: 4 });
    expect(r.tokens).toEqual(greedyOracle(t.pair.newTarget(128), prompt, 16));
    await link.close();
  });
});
