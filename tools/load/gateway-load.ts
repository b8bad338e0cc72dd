// A bounded load test of one gateway on loopback: `duet serve` on the bundled tiny target in a
// child process, S sessions for T seconds, each looping open → some verifies (random drafts:
// this measures the gateway, not acceptance) or a baseline generate → close, so opens churn
// all the time. Optionally F never-reading connections flood pings the whole time, while a
// probe client opens and verifies every second (is a normal client locked out?). Reports
// errors, open/verify latency percentiles, the gateway's RSS (sampled from /proc) and its
// send-queue bytes against the memory budget (from /health), and where an open's time goes
// (from /metrics: the gateway's own open time, queue + passes, and its mean verifier pass).
// Connect (TCP + upgrade + hello → welcome) is timed apart from open (open → opened).
//
//   node --import tsx tools/load/gateway-load.ts --sessions 64 --seconds 60 [--flood 24] [--memory-budget-mb 32] [--json] [--out FILE]
//
// Loopback only, and bounded: at most 256 sessions, 256 flooders, 300 s. The flooders connect
// from 127.0.0.2, a different client address (per-address limits apply to them, not to the rest).
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { GREEDY } from '../../src/engine/sampling.ts';
import { RemoteTarget } from '../../src/protocol/client.ts';
import { ProtocolError } from '../../src/protocol/errors.ts';

export interface LoadOptions {
  sessions: number;
  seconds: number;
  flood: number;
  memoryBudgetMb: number;
  log?: (l: string) => void;
}

export interface LoadResult {
  sessions: number;
  seconds: number;
  flood: number;
  memoryBudgetBytes: number;
  requests: number;
  errors: number;
  errorSamples: string[];
  /** connect + hello (TCP, WebSocket upgrade, hello → welcome), per new connection. */
  connectMs: Percentiles;
  /** open → opened on a connection that is already up (the prefill's round trip). */
  openMs: Percentiles;
  /** A new session's start as a client sees it: connect + hello + open, per cycle. */
  startMs: Percentiles;
  verifyMs: Percentiles;
  /**
   * Where the time goes (the gateway's /metrics at the end): its open time from the message to
   * `opened` (queue wait + the passes that ran the prefill), its mean verifier pass, and mean
   * requests per pass. Client open time minus gatewayOpenMeanMs is transit and the gateway's event loop.
   */
  profile: { gatewayOpenMeanMs: number; passMeanMs: number; passes: number; meanBatch: number };
  probeMs: { n: number; max: number; failures: number };
  rssMb: { start: number; peak: number; end: number };
  peakQueuedBytes: number;
  floodersDropped: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Percentiles {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

function pct(xs: number[]): Percentiles {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : 0);
  return { n: s.length, p50: Math.round(at(0.5)), p95: Math.round(at(0.95)), p99: Math.round(at(0.99)), max: Math.round(s[s.length - 1] ?? 0) };
}

/** sum and count of a Prometheus histogram in /metrics text. */
function histogram(text: string, name: string): { sum: number; count: number } {
  const num = (suffix: string) => Number(new RegExp(`^${name}_${suffix}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { sum: num('sum'), count: num('count') };
}

async function profileOf(url: string): Promise<LoadResult['profile']> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const open = histogram(text, 'duet_prefill_seconds');
  const pass = histogram(text, 'duet_verify_batch_seconds');
  const size = histogram(text, 'duet_batch_size');
  return {
    gatewayOpenMeanMs: Math.round((1000 * open.sum) / open.count), passMeanMs: Math.round((1000 * pass.sum) / pass.count),
    passes: pass.count, meanBatch: Math.round((100 * size.sum) / size.count) / 100,
  };
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const log = o.log ?? (() => {});
  const sessions = Math.min(256, Math.max(1, o.sessions));
  const seconds = Math.min(300, Math.max(1, o.seconds));
  const flood = Math.min(256, Math.max(0, o.flood));
  const proc = spawn(process.execPath, ['bin/duet.mjs', 'serve', '--host', '127.0.0.1', '--port', '0', '--json', '--quiet', '--max-context', '512',
    '--max-sessions', String(sessions + 8), '--max-sessions-per-address', String(sessions + 8), '--max-connections-per-address', String(sessions + flood + 16),
    '--memory-budget-mb', String(o.memoryBudgetMb)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: proc.stdout! }).once('line', resolve);
      void exited.then(() => reject(new Error('duet serve exited before listening')));
    });
    const started = JSON.parse(line) as { url: string; ws: string; info: { tokenizerHash: string; vocabSize: number; maxBlock: number } };
    const { url, ws: wsUrl, info } = started;
    const pid = proc.pid!;
    const rss = { start: rssMb(pid), peak: 0, end: 0 };
    let peakQueued = 0;
    const errorSamples: string[] = [];
    let errors = 0;
    let requests = 0;
    const connectMs: number[] = [];
    const openMs: number[] = [];
    const startMs: number[] = [];
    const verifyMs: number[] = [];
    const probeMs: number[] = [];
    let probeFailures = 0;
    const deadline = performance.now() + seconds * 1000;
    const fail = (e: unknown) => {
      errors++;
      if (errorSamples.length < 10) errorSamples.push(e instanceof ProtocolError ? `${e.code}: ${e.message}` : String(e));
    };

    let running = true;
    const sampler = (async () => {
      while (running) {
        rss.peak = Math.max(rss.peak, rssMb(pid));
        const h = await fetch(`${url}/health`).then((r) => r.json() as Promise<{ queuedBytes: number }>, () => null);
        if (h) peakQueued = Math.max(peakQueued, h.queuedBytes);
        await sleep(500);
      }
    })();

    // never-reading flooders in their own process (tools/load/flooder.mjs), so they cannot slow this one's clients
    let floodersDropped = 0;
    const flooder = flood > 0 ? spawn(process.execPath, ['tools/load/flooder.mjs', wsUrl, String(flood), '127.0.0.2'], { stdio: ['ignore', 'pipe', 'pipe'] }) : null;
    if (flooder) {
      await new Promise((r) => flooder.stdout!.once('data', r));
      flooder.stderr!.on('data', (d: Buffer) => {
        const m = /(\d+) connection/.exec(d.toString());
        if (m) floodersDropped = Number(m[1]);
      });
    }
    const flooderDone = flooder ? new Promise<void>((r) => flooder.once('exit', () => r())) : Promise.resolve();

    const rand = (n: number) => Math.floor(Math.random() * n);
    const worker = async (w: number) => {
      while (performance.now() < deadline) {
        const link = new RemoteTarget({ url: wsUrl, tokenizerHash: info.tokenizerHash, mode: w % 4 === 3 ? 'baseline' : 'speculative', reconnect: { attempts: 4, baseDelayMs: 100, maxDelayMs: 1000 }, timeoutMs: 30_000 });
        try {
          const prompt = Array.from({ length: 4 + rand(12) }, () => rand(info.vocabSize));
          let t0 = performance.now();
          await link.connect();
          const connected = performance.now();
          await link.open(prompt, GREEDY);
          const opened = performance.now();
          connectMs.push(connected - t0);
          openMs.push(opened - connected);
          startMs.push(opened - t0);
          requests++;
          if (w % 4 === 3) {
            await link.generate(8);
            requests++;
          } else {
            for (let i = 0; i < 6 && performance.now() < deadline; i++) {
              const k = 1 + rand(Math.min(4, info.maxBlock));
              t0 = performance.now();
              await link.verify(Array.from({ length: k }, () => rand(info.vocabSize)));
              verifyMs.push(performance.now() - t0);
              requests++;
            }
          }
        } catch (e) {
          fail(e);
        } finally {
          await link.close();
        }
      }
    };

    // a normal client arriving every second: open + one verify, timed
    const probe = (async () => {
      while (performance.now() < deadline) {
        const link = new RemoteTarget({ url: wsUrl, tokenizerHash: info.tokenizerHash, reconnect: false, timeoutMs: 20_000 });
        const t0 = performance.now();
        try {
          await link.open([1, 2, 3], GREEDY);
          await link.verify([4, 5]);
          probeMs.push(performance.now() - t0);
        } catch (e) {
          probeFailures++;
          log(`probe failed: ${(e as Error).message}`);
        } finally {
          await link.close();
        }
        await sleep(1000);
      }
    })();

    const progress = setInterval(() => log(`t=${Math.round(seconds - (deadline - performance.now()) / 1000)} s: ${requests} requests, ${errors} errors, rss ${rssMb(pid)} MB, peak queued ${peakQueued} B`), 10_000);
    await Promise.all([...Array.from({ length: sessions }, (_, w) => worker(w)), probe]);
    clearInterval(progress);
    running = false;
    flooder?.kill('SIGTERM');
    await Promise.all([sampler, flooderDone]);
    rss.end = rssMb(pid);
    const profile = await profileOf(url);
    return {
      sessions, seconds, flood, memoryBudgetBytes: o.memoryBudgetMb << 20, requests, errors, errorSamples,
      connectMs: pct(connectMs), openMs: pct(openMs), startMs: pct(startMs), verifyMs: pct(verifyMs), profile, probeMs: { n: probeMs.length, max: Math.round(Math.max(0, ...probeMs)), failures: probeFailures },
      rssMb: rss, peakQueuedBytes: peakQueued, floodersDropped,
    };
  } finally {
    proc.kill('SIGKILL');
    await exited;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { sessions: { type: 'string' }, seconds: { type: 'string' }, flood: { type: 'string' }, 'memory-budget-mb': { type: 'string' }, json: { type: 'boolean' }, out: { type: 'string' } } });
  const r = await runLoad({
    sessions: Number(values.sessions ?? 64), seconds: Number(values.seconds ?? 60), flood: Number(values.flood ?? 0),
    memoryBudgetMb: Number(values['memory-budget-mb'] ?? 64), log: (l) => console.error(`[load] ${l}`),
  });
  console.log(values.json ? JSON.stringify(r) : JSON.stringify(r, null, 2));
  if (values.out) writeFileSync(values.out, `${JSON.stringify(r, null, 2)}\n`);
  process.exitCode = r.errors === 0 && r.probeMs.failures === 0 ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
