// `duet bench all --out DIR [--quick] [--skip a,b]`: every benchmark in one process tree on one
// machine (kernels, speculative k sweep + RTT sweep, gateway capacity vs sessions, sidecar
// batch, one verifier pass per backend × batch shape, browser load time), written to DIR/results.json and rendered to DIR/report.md with
// SVG figures. `duet bench readme --from DIR [--readme README.md]` writes the README's
// results table from DIR/results.json. A section that fails is recorded with its error and
// the others still run: one broken piece must not cost the whole report.

import { execSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { CapacityPair } from './capacity.ts';
import type { Verifier } from '../../server/verifiers/types.ts';
import { SECTIONS, type AllResults, type Machine, type Section, type SectionName } from './schema.ts';

export interface AllOptions {
  out: string;
  quick?: boolean;
  skip?: SectionName[];
  /** Target verifier behind the capacity gateway (default cpu; webgpu on a GPU host). */
  verifier?: 'cpu' | 'webgpu';
  /** Let Chromium use the real GPU instead of SwiftShader (GPU hosts). */
  browserGpu?: boolean;
  log?: (line: string) => void;
}

export class BenchAllUsageError extends Error {
  override name = 'BenchAllUsageError';
}

const RTT_FULL = [0, 10, 20, 50, 100];
const RTT_QUICK = [0, 50];
const SESSIONS_FULL = [1, 4, 16, 64, 128];
const SESSIONS_QUICK = [1, 4];

const MODEL_FILES = ['public/models/tiny-target/model.safetensors', 'public/models/tiny-draft/model.safetensors'];

function modelHashes(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of MODEL_FILES) out[f] = existsSync(f) ? createHash('sha256').update(readFileSync(f)).digest('hex').slice(0, 12) : 'missing';
  return out;
}

export function gitCommit(): string | null {
  try {
    return execSync('git rev-parse --short HEAD', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || null;
  } catch {
    return null; // not a git checkout (a tarball): the report just lacks the commit
  }
}

async function timed<T>(name: string, skip: SectionName[], log: (l: string) => void, f: () => Promise<T>): Promise<Section<T>> {
  if (skip.includes(name as SectionName)) return { status: 'skipped', reason: '--skip' };
  const t0 = performance.now();
  log(`bench all: ${name}`);
  try {
    const data = await f();
    return { status: 'ok', wallMs: Math.round(performance.now() - t0), data };
  } catch (e) {
    const err = e as Error;
    log(`bench all: ${name} failed: ${err.name}: ${err.message}`);
    return { status: 'error', wallMs: Math.round(performance.now() - t0), error: `${err.name}: ${err.message}` };
  }
}

export async function runAll(o: AllOptions): Promise<AllResults> {
  const log = o.log ?? (() => {});
  const quick = !!o.quick;
  const skip = o.skip ?? [];
  const t0 = performance.now();
  const rttMs = quick ? RTT_QUICK : RTT_FULL;
  const sessions = quick ? SESSIONS_QUICK : SESSIONS_FULL;
  const capacitySeconds = quick ? 1 : 15;
  const capacityMaxTokens = quick ? 8 : 32;
  const unhandled: string[] = [];
  // A stray rejection inside the gateway/client stack would end the process and lose every
  // section measured so far; keep it in the report instead.
  const onUnhandled = (e: unknown): void => void unhandled.push(`${(e as Error)?.name}: ${(e as Error)?.message}`);
  process.on('unhandledRejection', onUnhandled);
  const machine: Machine = {
    cpu: cpus()[0]?.model.trim() ?? 'unknown CPU', cores: cpus().length, memBytes: totalmem(), node: process.version,
    platform: `${process.platform}-${process.arch}`, loadavgStart: loadavg()[0], loadavgEnd: 0, commit: gitCommit(),
    models: { start: modelHashes(), end: {} },
  };
  const sections = {} as Record<SectionName, Section>;
  // Kernels take 3 timed repeats here (5 in `duet bench kernels`) to keep the whole suite inside 15 minutes.
  try {
    sections.kernels = await timed('kernels', skip, log, async () => (await import('./kernels.ts')).runKernelBench({ quick, log, ...(quick ? {} : { reps: 3 }) }));
    sections.spec = await timed('spec', skip, log, async () => (await import('./spec.ts')).runSpecBench({ quick, rttMs, ...(quick ? { prompts: 1, maxTokens: 8 } : { prompts: 4, maxTokens: 48 }), skipCapacity: true, skipSidecar: true, log }));
    sections.capacity = await timed('capacity', skip, log, async () => {
      const { loadTinyPair, runCapacity } = await import('./capacity.ts');
      const pair = await loadTinyPair();
      const runs = [];
      for (const n of sessions) {
        const verifier = o.verifier === 'webgpu' ? await webgpuVerifier(pair, n) : undefined;
        try {
          runs.push(await runCapacity({ pair, sessions: n, seconds: capacitySeconds, maxTokens: capacityMaxTokens, verifier, log }));
        } finally {
          await verifier?.dispose();
        }
      }
      return runs;
    });
    sections.sidecar = await timed('sidecar', skip, log, async () => (await import('../../server/verifiers/sidecar-bench.ts')).benchSidecarBatch({ quick, log }));
    sections.verify = await timed('verify', skip, log, async () => (await import('./verify.ts')).runVerifyBench({ quick, log }));
    sections.loadtime = await timed('loadtime', skip, log, async () => (await import('./loadtime.ts')).runLoadTime({ maxTokens: quick ? 8 : 32, swiftshader: !o.browserGpu, log }));
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  machine.loadavgEnd = loadavg()[0];
  machine.models.end = modelHashes();
  const data = <T>(s: Section): T | null => (s.status === 'ok' ? (s.data as T) : null);
  const results: AllResults = {
    schema: 'duet-bench-all/1', date: new Date().toISOString(), quick, machine,
    adapters: {
      webgpu: data<{ adapter: string }>(sections.kernels)?.adapter ?? null,
      spec: `${data<{ engine?: string }>(sections.spec)?.engine === 'batch' ? 'batched CPU engine (CpuBatchLlama, WASM SIMD)' : 'CPU reference (TypeScript)'}, draft and target in one process`,
      capacity: `${o.verifier ?? 'cpu'} verifier behind the gateway, ${data<{ draft?: string }[]>(sections.capacity)?.[0]?.draft === 'memo' ? 'drafts from one shared memo of tiny-draft\'s logits' : 'one draft per session'}`,
      browser: data<{ adapter: string | null }>(sections.loadtime)?.adapter ?? null,
    },
    config: { rttMs, sessions, capacitySeconds, capacityMaxTokens },
    sections, unhandledRejections: unhandled, wallMs: Math.round(performance.now() - t0),
  };
  await writeReport(o.out, results);
  return results;
}

/** The target on the WGSL engine (Dawn: a real GPU where Vulkan has one, else SwiftShader). */
async function webgpuVerifier(pair: CapacityPair, sessions: number): Promise<Verifier> {
  const { createWebGpuVerifier } = await import('../../server/verifiers/webgpu.ts');
  return createWebGpuVerifier({
    config: pair.config, weights: pair.target, model: pair.name, tokenizerHash: pair.tokenizerHash,
    maxContext: Math.min(pair.config.maxPositionEmbeddings, 256), maxBatch: 16, maxSessions: sessions * 2,
  });
}

/** results.json, the SVG figures and report.md into `out`. */
export async function writeReport(out: string, results: AllResults): Promise<string[]> {
  const { renderReport } = await import('./report.ts');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  const r = renderReport(results);
  for (const f of r.figures) writeFileSync(join(out, f.file), f.svg);
  writeFileSync(join(out, 'report.md'), r.markdown);
  return r.figures.map((f) => f.file);
}

const USAGE = `usage: duet bench all --out DIR [--quick] [--skip kernels,spec,capacity,sidecar,verify,loadtime]
                      [--verifier cpu|webgpu] [--browser-gpu]
       duet bench all --from DIR [--out DIR2]   (re-render report.md + SVGs from DIR/results.json)
       duet bench readme --from DIR [--readme README.md]
  all     runs every benchmark; writes DIR/results.json, DIR/report.md and DIR/*.svg
  readme  writes the headline table from DIR/results.json between the README's
          <!-- results:start --> / <!-- results:end --> markers`;

function parseFlags(argv: string[], allowed: string[]): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (!k.startsWith('--') || !allowed.includes(k.slice(2))) throw new BenchAllUsageError(`unknown option "${k}"\n${USAGE}`);
    if (k === '--quick' || k === '--browser-gpu') out[k.slice(2)] = true;
    else {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new BenchAllUsageError(`${k} needs a value\n${USAGE}`);
      out[k.slice(2)] = v;
    }
  }
  return out;
}

/** `duet bench all|readme ...` (called from src/cli/bench.ts). */
export async function runCli(suite: 'all' | 'readme', argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  if (suite === 'readme') {
    const f = parseFlags(argv, ['from', 'readme']);
    if (typeof f.from !== 'string') throw new BenchAllUsageError(`--from DIR is required\n${USAGE}`);
    const readmePath = typeof f.readme === 'string' ? f.readme : 'README.md';
    const { updateReadme } = await import('./report.ts');
    const results = JSON.parse(readFileSync(join(f.from, 'results.json'), 'utf8')) as AllResults;
    const reportRel = relative(resolve(readmePath, '..'), resolve(f.from, 'report.md'));
    writeFileSync(readmePath, updateReadme(readFileSync(readmePath, 'utf8'), results, reportRel));
    console.error(`wrote the results table into ${readmePath} from ${join(f.from, 'results.json')}`);
    return 0;
  }
  const f = parseFlags(argv, ['out', 'quick', 'skip', 'verifier', 'browser-gpu', 'from']);
  if (typeof f.from === 'string') {
    // re-render report.md and the figures from an earlier run's results.json (no measuring)
    const results = JSON.parse(readFileSync(join(f.from, 'results.json'), 'utf8')) as AllResults;
    const out = typeof f.out === 'string' ? f.out : f.from;
    await writeReport(out, results);
    console.error(`rendered ${join(out, 'report.md')} from ${join(f.from, 'results.json')}`);
    return 0;
  }
  if (f.verifier !== undefined && f.verifier !== 'cpu' && f.verifier !== 'webgpu') throw new BenchAllUsageError(`--verifier expects cpu or webgpu, got "${f.verifier}"`);
  if (typeof f.out !== 'string') throw new BenchAllUsageError(`--out DIR is required\n${USAGE}`);
  const skip = typeof f.skip === 'string' ? f.skip.split(',').filter(Boolean) : [];
  for (const s of skip) if (!(SECTIONS as readonly string[]).includes(s)) throw new BenchAllUsageError(`unknown section "${s}" in --skip; use ${SECTIONS.join(',')}`);
  const r = await runAll({ out: f.out, quick: f.quick === true, skip: skip as SectionName[], verifier: f.verifier as 'cpu' | 'webgpu' | undefined, browserGpu: f['browser-gpu'] === true, log: (l) => console.error(l) });
  const failed = SECTIONS.filter((s) => r.sections[s].status === 'error');
  console.error(`wrote ${join(f.out, 'results.json')} and ${join(f.out, 'report.md')} in ${(r.wallMs / 1000).toFixed(0)} s${failed.length ? `; failed sections: ${failed.join(', ')}` : ''}`);
  return failed.length ? 1 : 0;
}
