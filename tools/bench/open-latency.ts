// Open latency under load (issue 16, D4): N sessions churn through one in-process gateway on
// the cpu verifier (tiny target): each opens a session (timed: send open → `opened`), then
// either streams a baseline of `tokens` tokens or runs verify rounds with random k = 4 drafts
// for as many passes, closes, and opens again, for `seconds`. Prints JSON: open latency
// p50/p90/p99/max, opens, errors, and the gateway's batching stats.
//
//   npx tsx tools/bench/open-latency.ts [--sessions 64] [--seconds 30] [--tokens 16]

import { basename } from 'node:path';
import { startGateway } from '../../server/gateway.ts';
import { NO_RATE_LIMITS } from '../../server/limits.ts';
import { createCpuVerifier } from '../../server/verifiers/cpu.ts';
import { loadTargetDir } from '../../server/verifiers/load.ts';
import { RemoteTarget } from '../../src/protocol/client.ts';
import { GREEDY } from '../../src/engine/sampling.ts';
import { mulberry32 } from '../../src/engine/weights.ts';

export interface OpenLatencyResult {
  sessions: number;
  seconds: number;
  opens: number;
  errors: number;
  firstError: string | null;
  openMs: { p50: number; p90: number; p99: number; max: number };
  tokens: number;
  stats: unknown;
}

const q = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN;
};

export async function runOpenLatency(o: { sessions?: number; seconds?: number; tokens?: number; target?: string } = {}): Promise<OpenLatencyResult> {
  const sessions = o.sessions ?? 64;
  const seconds = o.seconds ?? 30;
  const tokens = o.tokens ?? 16;
  const dir = o.target ?? 'public/models/tiny-target';
  const m = await loadTargetDir(dir);
  const verifier = createCpuVerifier({ config: m.config, weights: m.weights, model: basename(dir), tokenizerHash: m.tokenizerHash, maxContext: 512, maxBatch: 64 });
  const gw = await startGateway({ verifier, maxSessions: sessions + 8, maxBatch: 64, ...NO_RATE_LIMITS });
  const openMs: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  let generated = 0;
  const end = performance.now() + seconds * 1000;
  const vocab = m.config.vocabSize;
  const worker = async (i: number): Promise<void> => {
    const rand = mulberry32(1000 + i);
    while (performance.now() < end) {
      const link = new RemoteTarget({ url: gw.wsUrl, tokenizerHash: m.tokenizerHash, mode: i % 2 ? 'baseline' : 'speculative', reconnect: false, timeoutMs: 60_000 });
      try {
        const prompt = Array.from({ length: 8 + Math.floor(rand() * 24) }, () => Math.floor(rand() * (vocab - 8)));
        const t0 = performance.now();
        await link.open(prompt, GREEDY);
        openMs.push(performance.now() - t0);
        if (i % 2) generated += (await link.generate(tokens)).length;
        else {
          for (let r = 0; r < tokens / 4 && performance.now() < end; r++) {
            const v = await link.verify(Array.from({ length: 4 }, () => Math.floor(rand() * (vocab - 8))));
            generated += v.accepted + 1;
          }
        }
      } catch (e) {
        errors++;
        firstError ??= `${(e as Error).name}: ${(e as Error).message}`;
      } finally {
        await link.close();
      }
    }
  };
  await Promise.all(Array.from({ length: sessions }, (_, i) => worker(i)));
  const stats = gw.stats();
  await gw.close();
  await verifier.dispose();
  return {
    sessions, seconds, opens: openMs.length, errors, firstError,
    openMs: { p50: q(openMs, 0.5), p90: q(openMs, 0.9), p99: q(openMs, 0.99), max: Math.max(...openMs) },
    tokens: generated, stats,
  };
}

if (process.argv[1]?.endsWith('open-latency.ts')) {
  const arg = (name: string): number | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : undefined;
  };
  runOpenLatency({ sessions: arg('sessions'), seconds: arg('seconds'), tokens: arg('tokens') })
    .then((r) => console.log(JSON.stringify(r, null, 2)))
    .catch((e: Error) => {
      console.error(`open-latency: ${e.name}: ${e.message}`);
      process.exitCode = 1;
    });
}
