// Test fixtures for the gateway: an in-process gateway over a cpu verifier on a small
// random-weight target (src/engine/spec-fixtures.ts), and a raw WebSocket for tests that
// must send frames the real client never would.

import WebSocket from 'ws';
import { tinyPair, type ModelPair, type PairOptions } from '../src/engine/spec-fixtures.ts';
import { decodeServerFrame } from '../src/protocol/codec.ts';
import type { ServerMessage } from '../src/protocol/messages.ts';
import { RemoteTarget, type RemoteTargetOptions } from '../src/protocol/client.ts';
import { startGateway, type Gateway, type GatewayOptions } from './gateway.ts';
import { createCpuVerifier } from './verifiers/cpu.ts';
import type { LocalVerifier } from './verifiers/local.ts';

export const TEST_TOKENIZER_HASH = 'test-tokenizer-hash';

export interface TestGateway {
  gateway: Gateway;
  verifier: LocalVerifier;
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

  static async connect(url: string, headers: Record<string, string> = {}): Promise<RawClient> {
    const ws = new WebSocket(url, { headers });
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
