// Round trips and rejects of the protocol v1 codec: every message survives encode → decode
// unchanged, and every kind of bad input is refused with its typed code.
import { describe, expect, it } from 'vitest';
import { decodeClientFrame, decodeServerFrame, decodeVerify, encodeJson, encodeVerify, errorMessage, type Limits } from './codec.ts';
import { ProtocolError, type ErrorCode } from './errors.ts';
import { PROTOCOL_VERSION, type ClientMessage, type ServerMessage, type VerifyMsg } from './messages.ts';
import { mulberry32 } from '../engine/weights.ts';

const limits: Limits = { vocabSize: 1031, maxBlock: 16, maxContext: 512 };

function rejects(fn: () => unknown, code: ErrorCode): ProtocolError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError);
    expect((e as ProtocolError).code).toBe(code);
    return e as ProtocolError;
  }
  throw new Error(`expected a ProtocolError ${code}, nothing was thrown`);
}

function randomDist(rand: () => number, n: number, V: number): { ids: Int32Array; probs: Float32Array } {
  const ids = new Int32Array(n);
  const used = new Set<number>();
  for (let j = 0; j < n; j++) {
    let id: number;
    do id = Math.floor(rand() * V); while (used.has(id));
    used.add(id);
    ids[j] = id;
  }
  const w = Array.from({ length: n }, () => rand() + 1e-3);
  const s = w.reduce((a, b) => a + b, 0);
  return { ids, probs: Float32Array.from(w, (x) => x / s) };
}

describe('verify frames', () => {
  it('round-trips greedy blocks of k = 1, 2, 7, 16', () => {
    const rand = mulberry32(3);
    for (const k of [1, 2, 7, 16]) {
      const draft = Int32Array.from({ length: k }, () => Math.floor(rand() * limits.vocabSize));
      const msg: VerifyMsg = { type: 'verify', session: 4_000_000_000, seq: 123456, draft };
      const bytes = encodeVerify(msg);
      expect(bytes.byteLength).toBe(16 + 4 * k);
      expect(decodeVerify(bytes, limits)).toEqual(msg);
    }
  });

  it('round-trips sampled blocks with sparse q (support 1, 13, full vocab), also from an unaligned offset', () => {
    const rand = mulberry32(5);
    const V = limits.vocabSize;
    const dists = [randomDist(rand, 1, V), randomDist(rand, 13, V), randomDist(rand, V, V)];
    const draft = Int32Array.from(dists, (d) => d.ids[0]);
    const msg: VerifyMsg = { type: 'verify', session: 9, seq: 0, draft, dists };
    const bytes = encodeVerify(msg);
    expect(bytes.byteLength).toBe(16 + 8 * 3 + 8 * (1 + 13 + V));
    const shifted = new Uint8Array(bytes.byteLength + 3);
    shifted.set(bytes, 3);
    const back = decodeClientFrame(shifted.subarray(3), true, limits) as VerifyMsg;
    expect(back.draft).toEqual(draft);
    expect(back.dists!.length).toBe(3);
    for (let i = 0; i < 3; i++) {
      expect(back.dists![i].ids).toEqual(dists[i].ids);
      expect(back.dists![i].probs).toEqual(dists[i].probs); // f32 → f32: bit exact
    }
  });

  it('rejects bad verify frames with typed codes', () => {
    const good = encodeVerify({ type: 'verify', session: 1, seq: 2, draft: Int32Array.of(5, 6) });
    const mutate = (f: (dv: DataView, b: Uint8Array) => void, len = good.byteLength): Uint8Array => {
      const b = new Uint8Array(len);
      b.set(good.subarray(0, Math.min(len, good.byteLength)));
      f(new DataView(b.buffer), b);
      return b;
    };
    rejects(() => decodeVerify(good.subarray(0, 10), limits), 'BAD_FRAME');
    rejects(() => decodeVerify(good.subarray(0, 20), limits), 'BAD_FRAME'); // truncated tokens
    rejects(() => decodeVerify(mutate(() => {}, good.byteLength + 4), limits), 'BAD_FRAME'); // trailing bytes
    rejects(() => decodeVerify(mutate((dv) => dv.setUint8(0, 7)), limits), 'UNKNOWN_TYPE');
    rejects(() => decodeVerify(mutate((dv) => dv.setUint8(1, 2)), limits), 'BAD_VERSION');
    rejects(() => decodeVerify(mutate((dv) => dv.setUint16(2, 4, true)), limits), 'BAD_FIELD');
    rejects(() => decodeVerify(mutate((dv) => dv.setUint32(12, 0, true)), limits), 'BAD_FIELD');
    const big = rejects(() => decodeVerify(mutate((dv) => dv.setUint32(12, 17, true)), limits), 'BLOCK_TOO_LARGE');
    expect([big.session, big.seq]).toEqual([1, 2]);
    rejects(() => decodeVerify(mutate((dv) => dv.setUint32(12, 0xffffffff, true)), limits), 'BLOCK_TOO_LARGE');
    rejects(() => decodeVerify(mutate((dv) => dv.setInt32(16, 1031, true)), limits), 'TOKEN_OUT_OF_RANGE');
    rejects(() => decodeVerify(mutate((dv) => dv.setInt32(20, -1, true)), limits), 'TOKEN_OUT_OF_RANGE');
    rejects(() => decodeClientFrame('{"type":"verify"}', false, limits), 'BAD_FRAME');
    rejects(() => decodeClientFrame('x', true, limits), 'BAD_FRAME');
  });

  it('rejects malformed distributions', () => {
    const d = { ids: Int32Array.of(3, 4), probs: Float32Array.of(0.5, 0.5) };
    const enc = (dist: { ids: Int32Array; probs: Float32Array }) => encodeVerify({ type: 'verify', session: 0, seq: 0, draft: Int32Array.of(3), dists: [dist] });
    expect(decodeVerify(enc(d), limits).dists![0].probs).toEqual(d.probs);
    rejects(() => decodeVerify(enc({ ids: Int32Array.of(3, 3), probs: d.probs }), limits), 'BAD_FIELD'); // duplicate id
    rejects(() => decodeVerify(enc({ ids: Int32Array.of(3, 5000), probs: d.probs }), limits), 'TOKEN_OUT_OF_RANGE');
    rejects(() => decodeVerify(enc({ ids: d.ids, probs: Float32Array.of(0.5, 0.4) }), limits), 'BAD_FIELD'); // sum 0.9
    rejects(() => decodeVerify(enc({ ids: d.ids, probs: Float32Array.of(NaN, 1) }), limits), 'BAD_FIELD');
    rejects(() => decodeVerify(enc({ ids: d.ids, probs: Float32Array.of(-0.5, 1.5) }), limits), 'BAD_FIELD');
    const empty = enc({ ids: new Int32Array(0), probs: new Float32Array(0) });
    rejects(() => decodeVerify(empty, limits), 'BAD_FIELD'); // support size 0
    expect(() => encodeVerify({ type: 'verify', session: 0, seq: 0, draft: Int32Array.of(1, 2), dists: [d] })).toThrow(ProtocolError);
  });
});

describe('JSON control messages', () => {
  const sampling = { temperature: 0.7, topK: 40, topP: 0.9, seed: 42 };

  it('round-trips every client message', () => {
    const msgs: Exclude<ClientMessage, VerifyMsg>[] = [
      { type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: 'abc', token: 's3cret', client: 'test' },
      { type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: 'abc' },
      { type: 'open', session: 3, prompt: [1, 2, 1030], sampling, mode: 'speculative' },
      { type: 'open', session: 4, prompt: [0], sampling, mode: 'baseline', resume: [5, 6] },
      { type: 'generate', session: 4, n: 17 },
      { type: 'close', session: 4 },
      { type: 'ping', t: 12.5 },
    ];
    for (const m of msgs) expect(decodeClientFrame(encodeJson(m), false, limits)).toEqual(m);
    // text frames may arrive as bytes (ws hands Buffers to the server)
    expect(decodeClientFrame(new TextEncoder().encode(encodeJson(msgs[5])), false, limits)).toEqual(msgs[5]);
  });

  it('rejects bad client messages with typed codes', () => {
    const open = (over: Record<string, unknown>) => JSON.stringify({ type: 'open', session: 1, prompt: [1], sampling, mode: 'speculative', ...over });
    rejects(() => decodeClientFrame('{', false, limits), 'BAD_FRAME');
    rejects(() => decodeClientFrame('[1,2]', false, limits), 'BAD_FRAME');
    rejects(() => decodeClientFrame('{"type":5}', false, limits), 'BAD_FRAME');
    rejects(() => decodeClientFrame('{"type":"launch"}', false, limits), 'UNKNOWN_TYPE');
    const v = rejects(() => decodeClientFrame('{"type":"hello","protocol":2,"tokenizerHash":"a"}', false, limits), 'BAD_VERSION');
    expect(v.fatal).toBe(true);
    rejects(() => decodeClientFrame('{"type":"hello","protocol":1}', false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame('{"type":"hello","protocol":1,"tokenizerHash":"a","extra":1}', false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame(open({ prompt: [] }), false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame(open({ prompt: [1.5] }), false, limits), 'BAD_FIELD');
    const oor = rejects(() => decodeClientFrame(open({ prompt: [1, 1031] }), false, limits), 'TOKEN_OUT_OF_RANGE');
    expect(oor.session).toBe(1);
    rejects(() => decodeClientFrame(open({ prompt: new Array(513).fill(1) }), false, limits), 'BLOCK_TOO_LARGE');
    rejects(() => decodeClientFrame(open({ prompt: new Array(300).fill(1), resume: new Array(300).fill(1) }), false, limits), 'BLOCK_TOO_LARGE');
    rejects(() => decodeClientFrame(open({ mode: 'turbo' }), false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame(open({ session: -1 }), false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame(open({ sampling: { ...sampling, topP: 0 } }), false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame(open({ sampling: { ...sampling, temperature: -1 } }), false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame(open({ sampling: { ...sampling, seed: 2 ** 33 } }), false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame(open({ sampling: { temperature: 0 } }), false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame('{"type":"generate","session":1,"n":0}', false, limits), 'BAD_FIELD');
    rejects(() => decodeClientFrame('{"type":"ping","t":"now"}', false, limits), 'BAD_FIELD');
  });

  it('round-trips every server message and validates them at the client', () => {
    const info = { protocol: 1, backend: 'cpu', model: 'tiny-target', device: 'cpu', tokenizerHash: 'h', vocabSize: 1031, maxContext: 512, maxBlock: 16, maxBatch: 8, maxSessions: 64, maxPayloadBytes: 1 << 20, ratePerSec: 200, auth: false };
    const msgs: ServerMessage[] = [
      { type: 'welcome', protocol: 1, info },
      { type: 'opened', session: 1, firstToken: 7, length: 4, prefillMs: 1.5 },
      { type: 'verdict', session: 1, seq: 3, accepted: 2, token: 9, verifyMs: 0.25, queueMs: 1, batch: 3 },
      { type: 'tokens', session: 1, tokens: [1, 2], done: false },
      { type: 'closed', session: 1 },
      { type: 'pong', t: 1 },
      { type: 'error', code: 'BUSY', message: 'x', fatal: false, session: 1, seq: 2 },
      errorMessage(new ProtocolError('RATE_LIMITED', 'slow down', false, 5)),
    ];
    for (const m of msgs) expect(decodeServerFrame(encodeJson(m), 1031)).toEqual(m);
    rejects(() => decodeServerFrame(encodeJson({ ...msgs[2], token: 1031 } as ServerMessage), 1031), 'BAD_FIELD');
    rejects(() => decodeServerFrame('{"type":"error","code":"NOPE","message":"","fatal":true}'), 'BAD_FIELD');
    rejects(() => decodeServerFrame(encodeJson({ type: 'welcome', protocol: 9, info })), 'BAD_VERSION');
    rejects(() => decodeServerFrame('{"type":"surprise"}'), 'UNKNOWN_TYPE');
  });
});
