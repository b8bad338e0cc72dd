// The protocol README's error table against the code: every code in errors.ts has a row, the
// row's `fatal` column says what FATALITY says (rule and named exception), and the gateway,
// provoked into sending each code it sends, sets `fatal` (and closes the socket) exactly so.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyPair } from '../src/engine/spec-fixtures.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { encodeJson, encodeVerify } from '../src/protocol/codec.ts';
import { ERROR_CODES, FATALITY, type ErrorCode } from '../src/protocol/errors.ts';
import { PROTOCOL_VERSION } from '../src/protocol/messages.ts';
import { startGateway, type Gateway } from './gateway.ts';
import { createCpuVerifier } from './verifiers/cpu.ts';
import type { Verifier } from './verifiers/types.ts';
import { RawClient, TEST_TOKENIZER_HASH } from './testing.ts';

const README = readFileSync(new URL('../src/protocol/README.md', import.meta.url), 'utf8');

/** code → the fatal cell of its row in the README's error table. */
function readmeFatal(): Map<string, string> {
  const rows = new Map<string, string>();
  const table = README.slice(README.indexOf('| code | fatal | when | what to do |'));
  for (const line of table.split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    const cells = line.split('|').map((c) => c.trim());
    rows.set(cells[1].replace(/`/g, ''), cells[2]);
  }
  return rows;
}

/** What the README cell must say for a FATALITY entry. */
function cellFor(f: { fatal: boolean | null; except?: string }): string {
  if (f.fatal === null) return 'client-side';
  const rule = f.fatal ? 'yes' : 'no';
  return f.except ? `${rule} (${f.fatal ? 'no' : 'yes'}: ${f.except})` : rule;
}

describe('README error table == errors.ts FATALITY', () => {
  it('has one row per code, with the same fatal rule and exception', () => {
    const rows = readmeFatal();
    expect([...rows.keys()].sort()).toEqual([...ERROR_CODES].sort());
    for (const code of ERROR_CODES) expect(rows.get(code), code).toBe(cellFor(FATALITY[code]));
  });
});

const pair = tinyPair({ seed: 8, noise: 0.3, config: { hiddenSize: 32, intermediateSize: 67, numHeads: 2, numKvHeads: 1, headDim: 16, vocabSize: 263 } });
const MAX_CONTEXT = 24;
let g: Gateway;

beforeAll(async () => {
  const inner = createCpuVerifier({ config: pair.config, weights: pair.target, model: 'tiny-random', tokenizerHash: TEST_TOKENIZER_HASH, maxContext: MAX_CONTEXT, maxBatch: 4 });
  // draft token 7 as the first of a block makes the backend fail (VERIFIER_FAILED)
  const failing: Verifier = {
    ...inner, info: () => inner.info(), open: (...a) => inner.open(...a), generate: (s, n) => inner.generate(s, n), close: (s) => inner.close(s), dispose: () => inner.dispose(),
    verifyBatch: async (reqs) => {
      if (reqs.some((r) => r.draft[0] === 7)) throw new Error('injected backend failure');
      return inner.verifyBatch(reqs);
    },
  };
  g = await startGateway({ verifier: failing, ownsVerifier: true, token: 'tok', maxBlock: 4, maxSessions: 3, maxSessionsPerAddress: 3, ratePerSec: 4, helloTimeoutMs: 300, framesPerSec: 30, errorsPerSec: 1000, batchWindowMs: 30 });
});
afterAll(async () => g?.close());

const url = () => `${g.wsUrl}?token=tok`;
const hello = (extra: Record<string, unknown> = {}) => encodeJson({ type: 'hello', protocol: PROTOCOL_VERSION, tokenizerHash: TEST_TOKENIZER_HASH, ...extra } as never);
const open = (session: number, prompt: number[] = [1, 2, 3]) => JSON.stringify({ type: 'open', session, prompt, sampling: GREEDY, mode: 'speculative' });
const verify = (session: number, seq: number, draft: number[]) => encodeVerify({ type: 'verify', session, seq, draft: Int32Array.from(draft) });

async function ready(): Promise<RawClient> {
  const c = await RawClient.connect(url());
  c.send(hello());
  await c.next((m) => m.type === 'welcome');
  return c;
}

async function opened(c: RawClient, session: number): Promise<void> {
  c.send(open(session));
  await c.next((m) => m.type === 'opened' && m.session === session);
}

/** Expect `code` with fatal as given; a fatal one must also close the socket. */
async function expectError(c: RawClient, code: ErrorCode, fatal: boolean): Promise<void> {
  // the flood case sends non-fatal RATE_LIMITED first, then the fatal one: look for the one with this flag
  const e = await c.next((m) => m.type === 'error' && m.code === code && m.fatal === fatal);
  expect(e).toMatchObject({ code, fatal });
  if (fatal) await c.waitClosed();
  else expect(c.closed, `${code} closed the socket`).toBeNull();
}

// one provocation per (code, rule or exception) the gateway sends; names say which
const provocations: { code: ErrorCode; exception?: true; run: () => Promise<RawClient> }[] = [
  { code: 'BAD_FRAME', run: async () => { const c = await ready(); c.send('{not json'); return c; } },
  { code: 'UNKNOWN_TYPE', run: async () => { const c = await ready(); c.send('{"type":"teleport"}'); return c; } },
  { code: 'BAD_VERSION', run: async () => { const c = await RawClient.connect(url()); c.send(hello({ protocol: 99 })); return c; } },
  { code: 'BAD_VERSION', exception: true, run: async () => { const c = await ready(); const f = verify(1, 0, [1]); f[1] = 9; c.send(f); return c; } },
  { code: 'BAD_FIELD', run: async () => { const c = await ready(); c.send(JSON.stringify({ type: 'open', session: 1 })); return c; } },
  { code: 'TOKEN_OUT_OF_RANGE', run: async () => { const c = await ready(); c.send(open(1, [1, 99999])); return c; } },
  { code: 'BLOCK_TOO_LARGE', run: async () => { const c = await ready(); c.send(verify(1, 0, [1, 2, 3, 4, 5])); return c; } },
  { code: 'NOT_READY', run: async () => { const c = await RawClient.connect(url()); c.send(open(1)); return c; } },
  { code: 'NOT_READY', exception: true, run: async () => RawClient.connect(url()) }, // says nothing: the hello timeout
  { code: 'TOKENIZER_MISMATCH', run: async () => { const c = await RawClient.connect(url()); c.send(hello({ tokenizerHash: 'other' })); return c; } },
  { code: 'UNAUTHORIZED', run: async () => { const c = await RawClient.connect(url()); c.send(hello({ token: 'wrong' })); return c; } },
  { code: 'UNKNOWN_SESSION', run: async () => { const c = await ready(); c.send(verify(42, 0, [1])); return c; } },
  { code: 'SESSION_EXISTS', run: async () => { const c = await ready(); await opened(c, 1); c.send(open(1)); return c; } },
  { code: 'BAD_SEQ', run: async () => { const c = await ready(); await opened(c, 1); c.send(verify(1, 5, [1])); return c; } },
  { code: 'BUSY', run: async () => { const c = await ready(); await opened(c, 1); c.send(verify(1, 0, [1])); c.send(verify(1, 1, [1])); return c; } },
  { code: 'TOO_MANY_SESSIONS', run: async () => { const c = await ready(); for (const s of [1, 2, 3]) await opened(c, s); c.send(open(4)); return c; } },
  { code: 'CONTEXT_FULL', run: async () => { const c = await ready(); c.send(open(1, Array.from({ length: MAX_CONTEXT }, (_, i) => i + 1))); return c; } },
  {
    code: 'RATE_LIMITED', run: async () => {
      // ratePerSec 4 (burst 4): the open took one; one-token generates, one after another, run out of the rest
      const c = await ready();
      await opened(c, 1);
      for (let i = 0; i < 6; i++) {
        c.send(JSON.stringify({ type: 'generate', session: 1, n: 1 }));
        const m = await c.next((x) => (x.type === 'tokens' && x.done) || x.type === 'error');
        if (m.type === 'error') {
          c.messages.push(m);
          break;
        }
      }
      return c;
    },
  },
  // from another client address: the frame budget is per address, and this one's debt must not hit the other cases
  { code: 'RATE_LIMITED', exception: true, run: async () => { const c = await RawClient.connect(url(), {}, { localAddress: '127.0.0.2' }); for (let i = 0; i < 200; i++) c.send(JSON.stringify({ type: 'ping', t: i })); return c; } },
  { code: 'VERIFIER_FAILED', run: async () => { const c = await ready(); await opened(c, 1); c.send(verify(1, 0, [7])); return c; } },
];

/** The fatal flag the README's cell gives for a code's rule, or for its named exception. */
function readmeSays(code: ErrorCode, exception: boolean): boolean {
  const cell = readmeFatal().get(code) ?? '';
  const m = /^(yes|no)(?: \((yes|no): .+\))?$/.exec(cell);
  if (!m) throw new Error(`README fatal cell for ${code} is "${cell}", not yes/no`);
  if (exception && !m[2]) throw new Error(`README names no exception for ${code}`);
  return (exception ? m[2] : m[1]) === 'yes';
}

// the expectation comes from the README, not from FATALITY (which the gateway itself uses)
describe('the gateway sends each code with the fatal flag the README gives', () => {
  for (const p of provocations) {
    const fatal = readmeSays(p.code, !!p.exception);
    it(`${p.code}${p.exception ? ` (${FATALITY[p.code].except})` : ''}: fatal ${fatal}`, async () => {
      const c = await p.run();
      await expectError(c, p.code, fatal);
      c.close();
    });
  }

  it('SHUTTING_DOWN: fatal, close code 1001 (last: it stops the gateway)', async () => {
    const c = await ready();
    const closing = g.close();
    await expectError(c, 'SHUTTING_DOWN', true);
    expect(c.closed?.code).toBe(1001);
    await closing;
  });

  it('covers every code the gateway sends', () => {
    const sent = new Set([...provocations.map((p) => p.code), 'SHUTTING_DOWN']);
    for (const code of ERROR_CODES) expect(sent.has(code), `${code} (FATALITY says ${FATALITY[code].fatal === null ? 'never sent' : 'sent'})`).toBe(FATALITY[code].fatal !== null);
  });
});
