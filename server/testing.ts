// Test fixtures for the gateway: an in-process gateway over a cpu verifier on a small
// random-weight target (src/engine/spec-fixtures.ts), a raw WebSocket for tests that
// must send frames the real client never would, `duet serve` as a child process, and the
// target-only greedy oracle the end-to-end tests compare against.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import type { LlamaConfig } from '../src/engine/config.ts';
import { CpuLlama } from '../src/engine/reference.ts';
import { argmax } from '../src/engine/sampling.ts';
import type { LlamaWeights } from '../src/engine/weights.ts';
import { tinyPair, type ModelPair, type PairOptions } from '../src/engine/spec-fixtures.ts';
import { decodeServerFrame } from '../src/protocol/codec.ts';
import type { GatewayInfo, ServerMessage } from '../src/protocol/messages.ts';
import { RemoteTarget, type RemoteTargetOptions } from '../src/protocol/client.ts';
import { startGateway, type Gateway, type GatewayOptions } from './gateway.ts';
import { createCpuVerifier, type CpuBackend } from './verifiers/cpu.ts';

export const TEST_TOKENIZER_HASH = 'test-tokenizer-hash';

export interface TestGateway {
  gateway: Gateway;
  verifier: CpuBackend;
  pair: ModelPair;
  close(): Promise<void>;
}

export async function startTestGateway(opts: Partial<GatewayOptions> & { pair?: ModelPair; pairOptions?: PairOptions; maxContext?: number } = {}): Promise<TestGateway> {
  const pair = opts.pair ?? tinyPair(opts.pairOptions ?? { seed: 1, noise: 0.3 });
  const verifier = createCpuVerifier({ config: pair.config, weights: pair.target, model: 'tiny-random', tokenizerHash: TEST_TOKENIZER_HASH, maxContext: opts.maxContext ?? 256, maxBatch: 16 });
  const gateway = await startGateway({ verifier, ...opts });
  return {
    gateway, verifier, pair,
    async close() {
      await gateway.close();
      await verifier.dispose();
    },
  };
}

export function remote(gw: Gateway | string | (() => string), extra: Partial<RemoteTargetOptions> = {}): RemoteTarget {
  return new RemoteTarget({ url: typeof gw === 'object' ? gw.wsUrl : gw, tokenizerHash: TEST_TOKENIZER_HASH, ...extra });
}

/** A raw socket that collects the gateway's decoded messages and lets a test wait for one. */
export class RawClient {
  readonly messages: ServerMessage[] = [];
  closed: { code: number; reason: string } | null = null;
  private waiters: { pred: (m: ServerMessage) => boolean; resolve: (m: ServerMessage) => void }[] = [];
  private closeWaiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) throw new Error('gateway sent a binary frame');
      const m = decodeServerFrame(data.toString());
      this.messages.push(m);
      this.waiters = this.waiters.filter((w) => (w.pred(m) ? (w.resolve(m), false) : true));
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      for (const w of this.closeWaiters.splice(0)) w();
    });
    ws.on('error', () => {});
  }

  static async connect(url: string, headers: Record<string, string> = {}, options: WebSocket.ClientOptions = {}): Promise<RawClient> {
    const ws = new WebSocket(url, { ...options, headers });
    const c = new RawClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return c;
  }

  send(data: string | Uint8Array): void {
    this.ws.send(data);
  }

  next(pred: (m: ServerMessage) => boolean, timeoutMs = 10_000): Promise<ServerMessage> {
    const hit = this.messages.find(pred);
    if (hit) {
      this.messages.splice(this.messages.indexOf(hit), 1);
      return Promise.resolve(hit);
    }
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no matching message within ${timeoutMs} ms; got ${JSON.stringify(this.messages.slice(-5))}`)), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(t);
          this.messages.splice(this.messages.indexOf(m), 1);
          resolve(m);
        },
      });
    });
  }

  /** The next `error` message (optionally with this code). */
  error(code?: string): Promise<ServerMessage & { type: 'error' }> {
    return this.next((m) => m.type === 'error' && (!code || m.code === code)) as Promise<ServerMessage & { type: 'error' }>;
  }

  waitClosed(timeoutMs = 5_000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('socket did not close')), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  close(): void {
    this.ws.close();
  }
}

/** Poll until cond() holds (for state that settles asynchronously on the gateway). */
export async function until(cond: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** What `duet serve --json` prints once it listens. */
export interface ServeStarted {
  url: string;
  ws: string;
  info: GatewayInfo;
}

export interface ServeChild {
  proc: ChildProcess;
  started: ServeStarted;
  /** The HTTP (and WebSocket) port it listens on. */
  port: number;
  /** Its exit code; null when a signal ended it. */
  exited: Promise<number | null>;
}

/**
 * Start `duet serve --json --quiet ...args` as a child process (stderr shown, stdout read) and
 * wait for its JSON line: it listens then. Rejects if it exits first.
 */
export async function spawnServe(args: string[]): Promise<ServeChild> {
  const proc = spawn(process.execPath, ['bin/duet.mjs', 'serve', '--json', '--quiet', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', resolve);
    void exited.then((code) => reject(new Error(`duet serve exited with ${code} before listening`)));
  });
  const started = JSON.parse(line) as ServeStarted;
  return { proc, started, port: Number(new URL(started.url).port), exited };
}

/** Target-only greedy continuation (n tokens) of a loaded model: the incremental CpuLlama oracle. */
export function targetGreedy(m: { config: LlamaConfig; weights: LlamaWeights }, prompt: number[], n: number): number[] {
  const lm = new CpuLlama(m.config, m.weights, prompt.length + n + 1);
  const V = m.config.vocabSize;
  let logits = lm.forwardSync(prompt, 0);
  const out = [argmax(logits, (prompt.length - 1) * V, V)];
  while (out.length < n) {
    logits = lm.forwardSync([out[out.length - 1]], prompt.length + out.length - 1);
    out.push(argmax(logits, 0, V));
  }
  return out;
}
