// Browser load-time benchmark for `duet bench all`: builds the web app into a temporary folder,
// serves it with `duet serve` (cpu verifier, bundled tiny pair) as a child process, and drives
// headless Chromium (Debian's, SwiftShader WebGPU, the flags of playwright.config.ts) through
// the app's typed test API (window.__duet, ?test mode):
//  - cold init: a fresh browser profile (empty IndexedDB) loads the draft;
//  - cached init: a reload of the same page loads the prepared weights from IndexedDB;
//  - one side-by-side run (speculative vs target-only, greedy, both at once as the compare view
//    runs them) for the text and the live view;
//  - solo runs: each mode alone, SOLO_REPS times in alternating order (window.__duet.runOnce,
//    the library's chat.completions API), for TTFT and tok/s as the browser sees them (medians);
//  - peak memory: the RSS of Chromium's whole process tree (sampled every 100 ms, GPU process
//    included, where SwiftShader's buffers live) and the page's JS heap (performance.memory).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { median } from './median.ts';

export interface LoadTimeOptions {
  /** Draft backend in the page: webgpu (SwiftShader here) or cpu. */
  draft?: 'webgpu' | 'cpu';
  maxTokens?: number;
  chromium?: string;
  /** Force SwiftShader (default, as in playwright.config.ts); false lets Chromium pick the real GPU. */
  swiftshader?: boolean;
  log?: (line: string) => void;
}

export interface LoadTimeResult {
  browser: string;
  adapter: string | null;
  draftBackend: string | null;
  /** Navigation → draft ready, harness side; and the worker's own loadMs. */
  coldMs: number;
  coldWorkerMs: number | null;
  cachedMs: number;
  cachedWorkerMs: number | null;
  cachedFromCache: boolean | null;
  peakRssBytes: number;
  peakJsHeapBytes: number | null;
  compare: {
    maxTokens: number;
    spec: { tokPerSec: number; ttftMs: number | null; tokensPerTargetPass: number; acceptanceRate: number | null; tokens: number } | null;
    base: { tokPerSec: number; ttftMs: number | null; tokens: number } | null;
    identical: boolean | null;
  };
  /** Each mode alone, `reps` times in alternating order (speculative first on even repeats): per-run figures and medians. */
  solo?: {
    reps: number;
    maxTokens: number;
    spec: { ttftMs: number[]; tokPerSec: number[]; medianTtftMs: number; medianTokPerSec: number };
    base: { ttftMs: number[]; tokPerSec: number[]; medianTtftMs: number; medianTokPerSec: number };
    /** Median speculative TTFT / median baseline TTFT. */
    ttftRatio: number;
    /** Every solo run's greedy text equal to the first baseline run's. */
    identical: boolean;
  };
  buildMs: number;
}

/** Solo runs per mode in the load-time bench. */
export const SOLO_REPS = 9;

const CHROMIUM_ARGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--enable-precise-memory-info'];

/** RSS of a process and all its descendants, from /proc (Linux); 0 elsewhere. */
export function treeRssBytes(rootPid: number): number {
  if (!existsSync('/proc/self/stat')) return 0;
  const children = new Map<number, number[]>();
  const rss = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(f[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
      rss.set(Number(d), Number(f[21]) * 4096);
    } catch {
      // the process exited while we looked: it holds no memory now
    }
  }
  let total = 0;
  const stack = [rootPid];
  while (stack.length) {
    const p = stack.pop()!;
    total += rss.get(p) ?? 0;
    stack.push(...(children.get(p) ?? []));
  }
  return total;
}

function buildApp(outDir: string): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['node_modules/vite/bin/vite.js', 'build', '--outDir', outDir, '--emptyOutDir', '--logLevel', 'error'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`vite build failed (${r.status}): ${(r.stderr || r.stdout).slice(-2000)}`);
  return performance.now() - t0;
}

async function startServe(staticDir: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['bin/duet.mjs', 'serve', '--port', '0', '--host', '127.0.0.1', '--verifier', 'cpu', '--static', staticDir, '--json', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  return new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`duet serve did not start in 120 s: ${err.slice(-1000)}`)), 120_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) {
        clearTimeout(timer);
        resolveUrl({ child, url: (JSON.parse(line) as { url: string }).url });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`duet serve exited with ${code}: ${err.slice(-1000)}`));
    });
  });
}

export async function runLoadTime(o: LoadTimeOptions = {}): Promise<LoadTimeResult> {
  const log = o.log ?? (() => {});
  const draft = o.draft ?? 'webgpu';
  const maxTokens = o.maxTokens ?? 32;
  const executablePath = o.chromium ?? process.env.DUET_CHROMIUM ?? '/usr/bin/chromium';
  if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath}: install Debian's chromium or set DUET_CHROMIUM`);
  const { chromium } = await import('@playwright/test');
  const tmp = mkdtempSync(join(tmpdir(), 'duet-bench-app-'));
  let serve: ChildProcess | null = null;
  let server: Awaited<ReturnType<typeof chromium.launchServer>> | null = null;
  try {
    log('loadtime: building the app');
    const buildMs = buildApp(resolve(tmp, 'dist'));
    const s = await startServe(resolve(tmp, 'dist'));
    serve = s.child;
    server = await chromium.launchServer({ executablePath, args: [...CHROMIUM_ARGS, ...(o.swiftshader === false ? [] : ['--use-webgpu-adapter=swiftshader'])] });
    const rootPid = server.process().pid!;
    let peakRss = 0;
    const sampler = setInterval(() => { peakRss = Math.max(peakRss, treeRssBytes(rootPid)); }, 100);
    try {
      const browser = await chromium.connect(server.wsEndpoint());
      const version = browser.version();
      const page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
      const ready = `(() => { const s = window.__duet && window.__duet.snapshot(); return !!s && (s.draft.status === 'ready' || s.draft.status === 'error') && (s.gateway.status === 'connected' || s.gateway.status === 'error'); })()`;
      const snap = () => page.evaluate(() => window.__duet!.snapshot());
      const url = `${s.url}/?test${draft === 'cpu' ? '&draft=cpu' : ''}#compare`;
      log(`loadtime: cold load (${draft} draft)`);
      let t0 = performance.now();
      await page.goto(url);
      await page.waitForFunction(ready, undefined, { timeout: 300_000, polling: 100 });
      const coldMs = performance.now() - t0;
      const cold = await snap();
      if (cold.draft.status !== 'ready' || cold.gateway.status !== 'connected') throw new Error(`cold load failed: draft ${cold.draft.status}, gateway ${cold.gateway.status} (${cold.gateway.detail}); errors ${JSON.stringify(cold.errors)}`);
      log('loadtime: cached load (reload)');
      t0 = performance.now();
      await page.reload();
      await page.waitForFunction(ready, undefined, { timeout: 300_000, polling: 100 });
      const cachedMs = performance.now() - t0;
      const cached = await snap();
      const adapter = await page.evaluate(async () => {
        const a = await (navigator as Navigator & { gpu?: GPU }).gpu?.requestAdapter();
        return a ? [a.info.vendor, a.info.architecture, a.info.description].filter(Boolean).join(' ') || 'unnamed adapter' : null;
      });
      log('loadtime: one side-by-side run');
      await page.getByText('Latency and sampling settings').click();
      for (const [key, value] of [['temperature', '0'], ['maxTokens', String(maxTokens)]]) {
        const input = page.locator(`#compare-${key}`);
        await input.fill(value);
        await input.dispatchEvent('change');
      }
      await page.getByLabel('Prompt for both runs').fill('In the beginning God created');
      await page.getByTestId('compare-run').click();
      await page.waitForFunction(`(() => { const s = window.__duet.snapshot(); return s.compare.spec && s.compare.base && !s.compare.spec.running && !s.compare.base.running; })()`, undefined, { timeout: 300_000, polling: 200 });
      const run = await snap();
      log(`loadtime: solo runs, ${SOLO_REPS} per mode, alternating`);
      const prompt = 'In the beginning God created';
      const runs: Record<'speculative' | 'baseline', { ttft: number[]; tps: number[]; texts: number[][] }> = { speculative: { ttft: [], tps: [], texts: [] }, baseline: { ttft: [], tps: [], texts: [] } };
      for (let i = 0; i < SOLO_REPS; i++) {
        for (const mode of i % 2 === 0 ? (['speculative', 'baseline'] as const) : (['baseline', 'speculative'] as const)) {
          const r = await page.evaluate(([m, p, n]) => window.__duet!.runOnce(m, p, { maxTokens: n }), [mode, prompt, maxTokens] as const);
          if (!r.stats || r.stats.ttftMs === null) throw new Error(`solo ${mode} run ${i} ended without stats (finish ${r.finish})`);
          runs[mode].ttft.push(r.stats.ttftMs);
          runs[mode].tps.push(r.stats.tokPerSec);
          runs[mode].texts.push(r.tokens);
        }
      }
      const side = (m: 'speculative' | 'baseline') => ({ ttftMs: runs[m].ttft, tokPerSec: runs[m].tps, medianTtftMs: median(runs[m].ttft), medianTokPerSec: median(runs[m].tps) });
      const want = JSON.stringify(runs.baseline.texts[0]);
      const solo = {
        reps: SOLO_REPS, maxTokens, spec: side('speculative'), base: side('baseline'),
        ttftRatio: median(runs.speculative.ttft) / median(runs.baseline.ttft),
        identical: [...runs.speculative.texts, ...runs.baseline.texts].every((t) => JSON.stringify(t) === want),
      };
      log(`loadtime: solo medians: TTFT ${solo.spec.medianTtftMs.toFixed(0)} / ${solo.base.medianTtftMs.toFixed(0)} ms (×${solo.ttftRatio.toFixed(2)}), ${solo.spec.medianTokPerSec.toFixed(1)} / ${solo.base.medianTokPerSec.toFixed(1)} tok/s`);
      const heap = await page.evaluate(() => (performance as Performance & { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? null);
      const sp = run.compare.spec;
      const bp = run.compare.base;
      await browser.close();
      return {
        browser: `Chromium ${version}`,
        adapter, draftBackend: cold.draft.backend,
        coldMs, coldWorkerMs: cold.draft.loadMs, cachedMs, cachedWorkerMs: cached.draft.loadMs, cachedFromCache: cached.draft.fromCache,
        peakRssBytes: Math.max(peakRss, treeRssBytes(rootPid)), peakJsHeapBytes: heap,
        compare: {
          maxTokens,
          spec: sp?.stats ? { tokPerSec: sp.stats.tokPerSec, ttftMs: sp.stats.ttftMs, tokensPerTargetPass: sp.stats.tokensPerTargetPass, acceptanceRate: sp.stats.acceptanceRate, tokens: sp.stats.tokens } : null,
          base: bp?.stats ? { tokPerSec: bp.stats.tokPerSec, ttftMs: bp.stats.ttftMs, tokens: bp.stats.tokens } : null,
          identical: sp && bp ? JSON.stringify(sp.tokens) === JSON.stringify(bp.tokens) : null,
        },
        solo,
        buildMs,
      };
    } finally {
      clearInterval(sampler);
    }
  } finally {
    await server?.close();
    if (serve && serve.exitCode === null) {
      const exited = new Promise((r) => serve!.once('exit', r));
      serve.kill('SIGTERM');
      await exited;
    }
    rmSync(tmp, { recursive: true, force: true });
  }
}
