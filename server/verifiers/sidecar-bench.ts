// Benchmark: a verify batch of N sessions (default 16) sent to one sidecar as ONE
// verify_batch (one batched forward) vs the same N verifies one session at a time. JSON out;
// `duet bench spec` includes it under "sidecar". Also runnable alone:
//   npx tsx server/verifiers/sidecar-bench.ts [--model DIR] [--sessions 16] [--k 4] [--rounds 6] [--json FILE]
//     [--python PATH] [--sidecar-args '--backend ttnn ...']   (PATH: e.g. tt-metal's python_env python)

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syntheticConfig } from '../../src/engine/config.ts';
import { mulberry32, randomWeights } from '../../src/engine/weights.ts';
import { createSidecarVerifier } from './sidecar.ts';
import { writeLlamaDir } from './sidecar-fixtures.ts';
import type { VerifyRequest } from './types.ts';

export interface SidecarBenchOptions {
  /** HF model folder; default public/models/tiny-target, else a random tiny model. */
  model?: string;
  /** Sidecar command (argv) without --model; default Debian python3 + server/sidecar/main.py. */
  cmd?: string[];
  sessions?: number;
  /** Draft tokens per verify (k + 1 positions per session). */
  k?: number;
  /** Measured rounds of each mode (after one warm-up round each). */
  rounds?: number;
  promptLen?: number;
  /** Fewer measured rounds (2), same 16-session shape (`duet bench spec --quick`). */
  quick?: boolean;
  /** Extra sidecar flags, e.g. ['--device', 'cuda']. */
  sidecarArgs?: string[];
  log?: (line: string) => void;
}

export interface SidecarBenchResult {
  model: string;
  device: string;
  sessions: number;
  k: number;
  rounds: number;
  /** Median wall ms of one round: all sessions in one verify_batch. */
  batchedMs: number;
  /** Median wall ms of one round: one verify_batch per session, sequentially. */
  sequentialMs: number;
  /** sequentialMs / batchedMs. */
  speedup: number;
  /** Median sidecar-side forward ms per round, batched vs summed over the sequential calls. */
  batchedForwardMs: number;
  sequentialForwardMs: number;
  forwardSpeedup: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function benchSidecarBatch(opts: SidecarBenchOptions = {}): Promise<SidecarBenchResult> {
  const sessions = opts.sessions ?? 16;
  const k = opts.k ?? 4;
  const rounds = opts.rounds ?? (opts.quick ? 2 : 6);
  const promptLen = opts.promptLen ?? 16;
  let model = opts.model ?? 'public/models/tiny-target';
  let tmp: string | null = null;
  if (!existsSync(join(model, 'config.json'))) {
    if (opts.model) throw new Error(`benchSidecarBatch: ${model} has no config.json`);
    tmp = mkdtempSync(join(tmpdir(), 'duet-sidecar-bench-'));
    model = join(tmp, 'tiny-random');
    const c = syntheticConfig('tiny');
    await writeLlamaDir(model, c, randomWeights(c, 1));
  }
  const argv = [...(opts.cmd ?? ['/usr/bin/python3', 'server/sidecar/main.py']), '--model', model,
    '--max-batch', String(Math.max(sessions, 1)), '--max-sessions', String(sessions + 1), ...(opts.sidecarArgs ?? [])];
  const v = await createSidecarVerifier({ cmds: [argv], log: opts.log ?? (() => undefined) });
  try {
    const info = v.info();
    const rand = mulberry32(1234);
    const tok = (): number => Math.floor(rand() * info.vocabSize);
    const ids = Array.from({ length: sessions }, (_, i) => `bench${i}`);
    const greedy = { temperature: 0, topK: 0, topP: 1, seed: 0 };
    for (const id of ids) await v.open(id, Array.from({ length: promptLen }, tok), greedy);
    // random drafts: mostly rejected, so every round costs the same k + 1 positions per session
    const round = (): VerifyRequest[] => ids.map((sessionId) => ({ sessionId, draft: Array.from({ length: k }, tok) }));
    const batched: number[] = [];
    const sequential: number[] = [];
    const batchedFwd: number[] = [];
    const sequentialFwd: number[] = [];
    for (let r = 0; r <= rounds; r++) {
      let t0 = performance.now();
      const res = await v.verifyBatch(round());
      const b = performance.now() - t0;
      t0 = performance.now();
      let fwd = 0;
      for (const req of round()) fwd += (await v.verifyBatch([req]))[0].forwardMs;
      const s = performance.now() - t0;
      if (r === 0) continue; // warm-up
      batched.push(b);
      sequential.push(s);
      batchedFwd.push(res[0].forwardMs);
      sequentialFwd.push(fwd);
    }
    const out: SidecarBenchResult = {
      model: info.model, device: info.device, sessions, k, rounds,
      batchedMs: median(batched), sequentialMs: median(sequential), speedup: median(sequential) / median(batched),
      batchedForwardMs: median(batchedFwd), sequentialForwardMs: median(sequentialFwd),
      forwardSpeedup: median(sequentialFwd) / median(batchedFwd),
    };
    for (const id of ids) await v.close(id);
    return out;
  } finally {
    await v.dispose();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('sidecar-bench.ts')) {
  const args = process.argv.slice(2);
  const get = (name: string): string | undefined => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const num = (name: string): number | undefined => (get(name) === undefined ? undefined : Number(get(name)));
  const extra = get('sidecar-args')?.split(' ').filter(Boolean);
  const cmd = get('python') === undefined ? undefined : [get('python')!, 'server/sidecar/main.py'];
  benchSidecarBatch({ model: get('model'), cmd, sessions: num('sessions'), k: num('k'), rounds: num('rounds'), sidecarArgs: extra, log: (l) => console.error(l) })
    .then((r) => {
      const json = JSON.stringify(r, null, 2);
      console.log(json);
      const file = get('json');
      if (file) writeFileSync(file, json + '\n');
    })
    .catch((e: Error) => {
      console.error(`sidecar bench: ${e.name}: ${e.message}`);
      process.exitCode = 1;
    });
}
