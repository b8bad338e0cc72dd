// Encoding and strict validation of protocol v1 frames, used at both ends. JSON text frames
// carry control messages; the binary `verify` frame carries token ids and sparse draft
// distributions as little-endian typed data (a q with full support over a 128k vocabulary
// is 1 MB as raw i32 + f32, several MB as JSON text that must then be parsed):
//
//   offset  type        field
//   0       u8          kind = 1 (verify)
//   1       u8          protocol version (1)
//   2       u16         flags: bit 0 = distributions present
//   4       u32         session
//   8       u32         seq
//   12      u32         k (draft length)
//   16      i32[k]      draft token ids
//   if flags & 1:
//           u32[k]      n_i, support size of q_i
//           then for i in 0..k-1:  i32[n_i] ids, f32[n_i] probs
//
// The frame length must match exactly. Every violation throws a ProtocolError with a code.

import type { SamplingParams, SparseDist } from '../engine/sampling.ts';
import { ProtocolError, isErrorCode, type ErrorCode } from './errors.ts';
import {
  PROTOCOL_VERSION,
  type ClientMessage,
  type GatewayInfo,
  type ServerMessage,
  type VerifyMsg,
} from './messages.ts';

export const VERIFY_KIND = 1;
const VERIFY_HEADER_BYTES = 16;
const FLAG_DISTS = 1;
/** How far the probabilities of a sparse q may sum from 1 (f32 rounding over a large support). */
export const PROB_SUM_TOLERANCE = 1e-3;
const U32_MAX = 0xffffffff;

export interface Limits {
  vocabSize: number;
  /** Longest verify block. */
  maxBlock: number;
  /** Longest prompt + resume transcript. */
  maxContext: number;
}

// ---- encoding ----

export function encodeJson(msg: Exclude<ClientMessage, VerifyMsg> | ServerMessage): string {
  return JSON.stringify(msg);
}

export function encodeVerify(msg: VerifyMsg): Uint8Array {
  const k = msg.draft.length;
  const dists = msg.dists && msg.dists.length > 0 ? msg.dists : undefined;
  if (dists && dists.length !== k) {
    throw new ProtocolError('BAD_FIELD', `verify: ${dists.length} distributions for ${k} draft tokens`);
  }
  let bytes = VERIFY_HEADER_BYTES + 4 * k;
  if (dists) {
    bytes += 4 * k;
    for (const d of dists) bytes += 8 * d.ids.length;
  }
  const buf = new ArrayBuffer(bytes);
  const dv = new DataView(buf);
  dv.setUint8(0, VERIFY_KIND);
  dv.setUint8(1, PROTOCOL_VERSION);
  dv.setUint16(2, dists ? FLAG_DISTS : 0, true);
  dv.setUint32(4, msg.session, true);
  dv.setUint32(8, msg.seq, true);
  dv.setUint32(12, k, true);
  let off = VERIFY_HEADER_BYTES;
  for (let i = 0; i < k; i++, off += 4) dv.setInt32(off, msg.draft[i], true);
  if (dists) {
    for (let i = 0; i < k; i++, off += 4) dv.setUint32(off, dists[i].ids.length, true);
    for (const d of dists) {
      if (d.probs.length !== d.ids.length) {
        throw new ProtocolError('BAD_FIELD', `verify: a distribution has ${d.ids.length} ids but ${d.probs.length} probs`);
      }
      for (let j = 0; j < d.ids.length; j++, off += 4) dv.setInt32(off, d.ids[j], true);
      for (let j = 0; j < d.probs.length; j++, off += 4) dv.setFloat32(off, d.probs[j], true);
    }
  }
  return new Uint8Array(buf);
}

// ---- field checks ----

function fail(code: ErrorCode, message: string, session?: number, seq?: number): never {
  throw new ProtocolError(code, message, false, session, seq);
}

type Obj = Record<string, unknown>;

function expectKeys(o: Obj, type: string, required: string[], optional: string[] = []): void {
  for (const k of required) if (!(k in o)) fail('BAD_FIELD', `${type}: missing field "${k}"`);
  for (const k of Object.keys(o)) {
    if (k !== 'type' && !required.includes(k) && !optional.includes(k)) fail('BAD_FIELD', `${type}: unknown field "${k}"`);
  }
}

function int(o: Obj, type: string, key: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail('BAD_FIELD', `${type}.${key}: expected an integer in [${min}, ${max}], got ${short(v)}`);
  }
  return v;
}

function num(o: Obj, type: string, key: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    fail('BAD_FIELD', `${type}.${key}: expected a number in [${min}, ${max}], got ${short(v)}`);
  }
  return v;
}

function str(o: Obj, type: string, key: string, maxLen: number): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length > maxLen) fail('BAD_FIELD', `${type}.${key}: expected a string of at most ${maxLen} characters`);
  return v;
}

function bool(o: Obj, type: string, key: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') fail('BAD_FIELD', `${type}.${key}: expected true or false, got ${short(v)}`);
  return v;
}

function short(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function tokenList(o: Obj, type: string, key: string, minLen: number, maxLen: number, vocabSize: number): number[] {
  const v = o[key];
  if (!Array.isArray(v)) fail('BAD_FIELD', `${type}.${key}: expected an array of token ids`);
  if (v.length < minLen) fail('BAD_FIELD', `${type}.${key}: expected at least ${minLen} token(s), got ${v.length}`);
  if (v.length > maxLen) fail('BLOCK_TOO_LARGE', `${type}.${key}: ${v.length} tokens exceed the limit of ${maxLen}`);
  for (let i = 0; i < v.length; i++) {
    const t = v[i];
    if (typeof t !== 'number' || !Number.isInteger(t)) fail('BAD_FIELD', `${type}.${key}[${i}]: expected an integer token id, got ${short(t)}`);
    if (t < 0 || t >= vocabSize) fail('TOKEN_OUT_OF_RANGE', `${type}.${key}[${i}] = ${t} is outside the vocabulary [0, ${vocabSize})`);
  }
  return v as number[];
}

function sampling(o: Obj, type: string, vocabSize: number): SamplingParams {
  const s = o.sampling;
  if (typeof s !== 'object' || s === null || Array.isArray(s)) fail('BAD_FIELD', `${type}.sampling: expected an object`);
  const so = s as Obj;
  const t = `${type}.sampling`;
  expectKeys(so, t, ['temperature', 'topK', 'topP', 'seed']);
  return {
    temperature: num(so, t, 'temperature', 0, 100),
    topK: int(so, t, 'topK', 0, vocabSize),
    topP: num(so, t, 'topP', Number.MIN_VALUE, 1),
    seed: int(so, t, 'seed', 0, U32_MAX),
  };
}

function parseJsonObject(text: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    fail('BAD_FRAME', `text frame is not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('BAD_FRAME', 'text frame must be a JSON object with a "type"');
  const o = v as Obj;
  if (typeof o.type !== 'string') fail('BAD_FRAME', 'message has no string "type"');
  return o;
}

// ---- client → gateway ----

/**
 * Decode and validate a frame from a client. `binary` says which kind of WebSocket frame it
 * was (text frames must be JSON, binary frames must be a verify block).
 */
export function decodeClientFrame(data: string | Uint8Array, binary: boolean, limits: Limits): ClientMessage {
  if (binary) {
    if (typeof data === 'string') fail('BAD_FRAME', 'binary frame expected');
    return decodeVerify(data, limits);
  }
  const text = typeof data === 'string' ? data : new TextDecoder('utf-8', { fatal: false }).decode(data);
  const o = parseJsonObject(text);
  const v = limits.vocabSize;
  switch (o.type) {
    case 'hello': {
      expectKeys(o, 'hello', ['protocol', 'tokenizerHash'], ['token', 'client']);
      const protocol = int(o, 'hello', 'protocol', 0, U32_MAX);
      if (protocol !== PROTOCOL_VERSION) {
        throw new ProtocolError('BAD_VERSION', `client speaks protocol ${protocol}, this gateway speaks ${PROTOCOL_VERSION}`, true);
      }
      return {
        type: 'hello',
        protocol,
        tokenizerHash: str(o, 'hello', 'tokenizerHash', 256),
        ...('token' in o ? { token: str(o, 'hello', 'token', 1024) } : {}),
        ...('client' in o ? { client: str(o, 'hello', 'client', 256) } : {}),
      };
    }
    case 'open': {
      expectKeys(o, 'open', ['session', 'prompt', 'sampling', 'mode'], ['resume']);
      const session = int(o, 'open', 'session', 0, U32_MAX);
      const mode = o.mode;
      if (mode !== 'speculative' && mode !== 'baseline') fail('BAD_FIELD', `open.mode: expected "speculative" or "baseline", got ${short(mode)}`, session);
      try {
        const prompt = tokenList(o, 'open', 'prompt', 1, limits.maxContext, v);
        const resume = 'resume' in o ? tokenList(o, 'open', 'resume', 1, limits.maxContext, v) : undefined;
        if (resume && prompt.length + resume.length > limits.maxContext) {
          fail('BLOCK_TOO_LARGE', `open: prompt + resume is ${prompt.length + resume.length} tokens, over maxContext ${limits.maxContext}`);
        }
        return { type: 'open', session, prompt, sampling: sampling(o, 'open', v), mode, ...(resume ? { resume } : {}) };
      } catch (e) {
        throw withSession(e, session);
      }
    }
    case 'generate': {
      expectKeys(o, 'generate', ['session', 'n']);
      return { type: 'generate', session: int(o, 'generate', 'session', 0, U32_MAX), n: int(o, 'generate', 'n', 1, limits.maxContext) };
    }
    case 'close':
      expectKeys(o, 'close', ['session']);
      return { type: 'close', session: int(o, 'close', 'session', 0, U32_MAX) };
    case 'ping':
      expectKeys(o, 'ping', ['t']);
      return { type: 'ping', t: num(o, 'ping', 't', -Number.MAX_VALUE, Number.MAX_VALUE) };
    case 'verify':
      fail('BAD_FRAME', 'verify must be sent as a binary frame (see src/protocol/codec.ts)');
    default:
      fail('UNKNOWN_TYPE', `unknown message type ${short(o.type)}`);
  }
}

function withSession(e: unknown, session: number): unknown {
  if (e instanceof ProtocolError && e.session === undefined) return new ProtocolError(e.code, e.message, e.fatal, session, e.seq);
  return e;
}

/** Reusable scratch for duplicate-id checks (one stamp per distribution, no per-frame allocation). */
let seen = new Uint32Array(0);
let stamp = 0;

export function decodeVerify(bytes: Uint8Array, limits: Limits): VerifyMsg {
  if (bytes.byteLength < VERIFY_HEADER_BYTES) fail('BAD_FRAME', `binary frame of ${bytes.byteLength} bytes is shorter than the ${VERIFY_HEADER_BYTES}-byte verify header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = dv.getUint8(0);
  if (kind !== VERIFY_KIND) fail('UNKNOWN_TYPE', `unknown binary frame kind ${kind}`);
  const version = dv.getUint8(1);
  if (version !== PROTOCOL_VERSION) fail('BAD_VERSION', `verify frame of protocol ${version}, expected ${PROTOCOL_VERSION}`);
  const flags = dv.getUint16(2, true);
  const session = dv.getUint32(4, true);
  const seq = dv.getUint32(8, true);
  const k = dv.getUint32(12, true);
  if (flags & ~FLAG_DISTS) fail('BAD_FIELD', `verify: unknown flags 0x${flags.toString(16)}`, session, seq);
  if (k < 1) fail('BAD_FIELD', 'verify: empty draft block', session, seq);
  if (k > limits.maxBlock) fail('BLOCK_TOO_LARGE', `verify: block of ${k} tokens exceeds maxBlock ${limits.maxBlock}`, session, seq);
  const hasDists = (flags & FLAG_DISTS) !== 0;
  let off = VERIFY_HEADER_BYTES;
  const need = off + 4 * k * (hasDists ? 2 : 1);
  if (bytes.byteLength < need) fail('BAD_FRAME', `verify: frame of ${bytes.byteLength} bytes is truncated (k = ${k})`, session, seq);
  const V = limits.vocabSize;
  const draft = new Int32Array(k);
  for (let i = 0; i < k; i++, off += 4) {
    const t = dv.getInt32(off, true);
    if (t < 0 || t >= V) fail('TOKEN_OUT_OF_RANGE', `verify: draft[${i}] = ${t} is outside the vocabulary [0, ${V})`, session, seq);
    draft[i] = t;
  }
  if (!hasDists) {
    if (off !== bytes.byteLength) fail('BAD_FRAME', `verify: ${bytes.byteLength - off} trailing bytes`, session, seq);
    return { type: 'verify', session, seq, draft };
  }
  const sizes = new Uint32Array(k);
  let total = off + 4 * k;
  for (let i = 0; i < k; i++, off += 4) {
    const n = dv.getUint32(off, true);
    if (n < 1 || n > V) fail('BAD_FIELD', `verify: support size of q[${i}] is ${n}, expected 1..${V}`, session, seq);
    sizes[i] = n;
    total += 8 * n;
  }
  if (total !== bytes.byteLength) fail('BAD_FRAME', `verify: frame is ${bytes.byteLength} bytes, its header describes ${total}`, session, seq);
  if (seen.length < V) seen = new Uint32Array(V);
  const dists: SparseDist[] = [];
  for (let i = 0; i < k; i++) {
    const n = sizes[i];
    const ids = new Int32Array(n);
    const probs = new Float32Array(n);
    stamp = stamp === U32_MAX ? 1 : stamp + 1;
    if (stamp === 1) seen.fill(0);
    for (let j = 0; j < n; j++, off += 4) {
      const id = dv.getInt32(off, true);
      if (id < 0 || id >= V) fail('TOKEN_OUT_OF_RANGE', `verify: q[${i}] id ${id} is outside the vocabulary [0, ${V})`, session, seq);
      if (seen[id] === stamp) fail('BAD_FIELD', `verify: q[${i}] lists id ${id} twice`, session, seq);
      seen[id] = stamp;
      ids[j] = id;
    }
    let sum = 0;
    for (let j = 0; j < n; j++, off += 4) {
      const p = dv.getFloat32(off, true);
      if (!(p >= 0 && p <= 1)) fail('BAD_FIELD', `verify: q[${i}] has probability ${p}, expected a number in [0, 1]`, session, seq);
      probs[j] = p;
      sum += p;
    }
    if (Math.abs(sum - 1) > PROB_SUM_TOLERANCE) fail('BAD_FIELD', `verify: q[${i}] sums to ${sum}, expected 1 ± ${PROB_SUM_TOLERANCE}`, session, seq);
    dists.push({ ids, probs });
  }
  return { type: 'verify', session, seq, draft, dists };
}

// ---- gateway → client ----

function gatewayInfo(o: Obj): GatewayInfo {
  const t = 'welcome.info';
  expectKeys(o, t, ['protocol', 'backend', 'model', 'device', 'tokenizerHash', 'vocabSize', 'maxContext', 'maxBlock', 'maxBatch', 'maxSessions', 'maxPayloadBytes', 'ratePerSec', 'auth']);
  return {
    protocol: int(o, t, 'protocol', 0, U32_MAX),
    backend: str(o, t, 'backend', 64),
    model: str(o, t, 'model', 1024),
    device: str(o, t, 'device', 1024),
    tokenizerHash: str(o, t, 'tokenizerHash', 256),
    vocabSize: int(o, t, 'vocabSize', 1, U32_MAX),
    maxContext: int(o, t, 'maxContext', 1, U32_MAX),
    maxBlock: int(o, t, 'maxBlock', 1, U32_MAX),
    maxBatch: int(o, t, 'maxBatch', 1, U32_MAX),
    maxSessions: int(o, t, 'maxSessions', 1, U32_MAX),
    maxPayloadBytes: int(o, t, 'maxPayloadBytes', 1, Number.MAX_SAFE_INTEGER),
    ratePerSec: num(o, t, 'ratePerSec', 0, Number.MAX_VALUE),
    auth: bool(o, t, 'auth'),
  };
}

/** Decode and validate a gateway message; token ids are checked once vocabSize is known. */
export function decodeServerFrame(text: string, vocabSize = U32_MAX): ServerMessage {
  const o = parseJsonObject(text);
  const V = vocabSize;
  switch (o.type) {
    case 'welcome': {
      expectKeys(o, 'welcome', ['protocol', 'info']);
      const protocol = int(o, 'welcome', 'protocol', 0, U32_MAX);
      if (protocol !== PROTOCOL_VERSION) throw new ProtocolError('BAD_VERSION', `gateway speaks protocol ${protocol}, this client speaks ${PROTOCOL_VERSION}`, true);
      const info = o.info;
      if (typeof info !== 'object' || info === null || Array.isArray(info)) fail('BAD_FIELD', 'welcome.info: expected an object');
      return { type: 'welcome', protocol, info: gatewayInfo(info as Obj) };
    }
    case 'opened':
      expectKeys(o, 'opened', ['session', 'firstToken', 'length', 'prefillMs']);
      return {
        type: 'opened',
        session: int(o, 'opened', 'session', 0, U32_MAX),
        firstToken: int(o, 'opened', 'firstToken', 0, V - 1),
        length: int(o, 'opened', 'length', 1, U32_MAX),
        prefillMs: num(o, 'opened', 'prefillMs', 0, Number.MAX_VALUE),
      };
    case 'verdict':
      expectKeys(o, 'verdict', ['session', 'seq', 'accepted', 'token', 'verifyMs', 'queueMs', 'batch']);
      return {
        type: 'verdict',
        session: int(o, 'verdict', 'session', 0, U32_MAX),
        seq: int(o, 'verdict', 'seq', 0, U32_MAX),
        accepted: int(o, 'verdict', 'accepted', 0, U32_MAX),
        token: int(o, 'verdict', 'token', 0, V - 1),
        verifyMs: num(o, 'verdict', 'verifyMs', 0, Number.MAX_VALUE),
        queueMs: num(o, 'verdict', 'queueMs', 0, Number.MAX_VALUE),
        batch: int(o, 'verdict', 'batch', 1, U32_MAX),
      };
    case 'tokens':
      expectKeys(o, 'tokens', ['session', 'tokens', 'done']);
      return {
        type: 'tokens',
        session: int(o, 'tokens', 'session', 0, U32_MAX),
        tokens: tokenList(o, 'tokens', 'tokens', 0, U32_MAX, V),
        done: bool(o, 'tokens', 'done'),
      };
    case 'closed':
      expectKeys(o, 'closed', ['session']);
      return { type: 'closed', session: int(o, 'closed', 'session', 0, U32_MAX) };
    case 'pong':
      expectKeys(o, 'pong', ['t']);
      return { type: 'pong', t: num(o, 'pong', 't', -Number.MAX_VALUE, Number.MAX_VALUE) };
    case 'error': {
      expectKeys(o, 'error', ['code', 'message', 'fatal'], ['session', 'seq']);
      if (!isErrorCode(o.code)) fail('BAD_FIELD', `error.code: unknown code ${short(o.code)}`);
      return {
        type: 'error',
        code: o.code,
        message: str(o, 'error', 'message', 4096),
        fatal: bool(o, 'error', 'fatal'),
        ...('session' in o ? { session: int(o, 'error', 'session', 0, U32_MAX) } : {}),
        ...('seq' in o ? { seq: int(o, 'error', 'seq', 0, U32_MAX) } : {}),
      };
    }
    default:
      fail('UNKNOWN_TYPE', `unknown message type ${short(o.type)}`);
  }
}

/** The wire form of an error. */
export function errorMessage(e: ProtocolError): ServerMessage {
  return {
    type: 'error',
    code: e.code,
    message: e.message.slice(0, 4096),
    fatal: e.fatal,
    ...(e.session !== undefined ? { session: e.session } : {}),
    ...(e.seq !== undefined ? { seq: e.seq } : {}),
  };
}
