// Helpers of tools/bench/device.sh (the prepared GPU run):
//   npx tsx tools/bench/device-report.ts adapter        JSON line: the WebGPU adapter Dawn gives this process
//   npx tsx tools/bench/device-report.ts report OUT     merge OUT/steps/* into OUT/device.json + OUT/report.md
// The padded target is the tiny target's function at a real model's cost per pass: every
// end-to-end figure is the tiny pair's acceptance at 1B/3B cost, and the report says so.

import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

interface StepStatus {
  name: string;
  rc: number | null;
  seconds: number;
  skipped?: string;
}

interface E2eRun {
  name: string;
  target: string;
  verifier: string;
  rttMs: number;
  pipeline: boolean;
  temperature: number;
  mode: string;
  draftDelayMs: number;
  report: Record<string, unknown> | null;
  error?: string;
}

/** A step's JSON, or null when it is missing or not JSON (a failed step leaves an empty or partial file). */
function readJson(p: string): unknown {
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    return { unreadable: `${p}: ${(e as Error).message}` };
  }
}
const r2 = (x: number): number => Math.round(x * 100) / 100;

/** Speed of light of a run (ARCHITECTURE.md): τ ÷ (one pass + k draft steps + RTT), from its own measurements; null when stretches mix in. */
export function speedOfLight(r: Record<string, number>, rttMs: number): number | null {
  if (!(r.rounds > 0) || r.streamedTokens > 0) return null;
  const tau = r.meanAcceptedPerRound + 1;
  const ms = r.verifyMsPerPass + r.meanK * r.draftMsPerToken + rttMs;
  return ms > 0 ? (1000 * tau) / ms : null;
}

/**
 * Tokens per second after the first token: (n − 1) ÷ (wall − TTFT). The speed of light is a
 * decode-phase rate (a round's tokens over a round's time), so it is compared with this, not with
 * the wall rate, whose time includes the prompt's prefill (a tenth of a 48-token run at 1B cost).
 */
export function decodeTokPerSec(r: { tokens?: unknown; wallMs?: number; ttftMs?: number }): number | null {
  const n = Array.isArray(r.tokens) ? r.tokens.length : 0;
  const ms = (r.wallMs ?? NaN) - (r.ttftMs ?? NaN);
  return n >= 2 && ms > 0 ? ((n - 1) * 1000) / ms : null;
}

function summarizeRun(run: E2eRun): Record<string, unknown> {
  const r = run.report as Record<string, number & unknown> | null;
  if (!r) return { ...run, report: undefined };
  const b = (r as unknown as { baseline?: Record<string, number> }).baseline;
  const sol = speedOfLight(r as unknown as Record<string, number>, run.rttMs);
  const decode = decodeTokPerSec(r as { tokens?: unknown; wallMs?: number; ttftMs?: number });
  return {
    name: run.name, target: run.target, verifier: run.verifier, rttMs: run.rttMs, pipeline: run.pipeline, temperature: run.temperature, mode: run.mode,
    draftDelayMs: run.draftDelayMs, tokPerSec: r.tokPerSec, baselineTokPerSec: b?.tokPerSec ?? null, speedup: r.speedup ?? null,
    ttftMs: r.ttftMs, baselineTtftMs: b?.ttftMs ?? null, acceptanceRate: r.acceptanceRate, tokensPerTargetPass: r.tokensPerTargetPass,
    meanK: r.meanK, verifyMsPerPass: r.verifyMsPerPass, draftMsPerToken: r.draftMsPerToken, streamedTokens: r.streamedTokens,
    decodeTokPerSec: decode === null ? null : r2(decode),
    speedOfLightTokPerSec: sol === null ? null : r2(sol),
    // decode-phase tok/s over the speed of light; the wall rate's ratio beside it (its time includes the prefill)
    ofSpeedOfLight: sol === null || decode === null ? null : r2(decode / sol),
    ofSpeedOfLightWall: sol === null ? null : r2((r.tokPerSec as number) / sol),
    identical: (r as unknown as { identical?: boolean }).identical ?? null,
    // duet speculate --repeats N: medians over N alternating runs of each mode (after a warm-up)
    repeats: (r as unknown as { repeats?: unknown }).repeats ?? null,
  };
}

export function buildReport(out: string): { json: Record<string, unknown>; md: string } {
  const steps = join(out, 'steps');
  const names = existsSync(steps) ? readdirSync(steps) : [];
  const status = names.filter((n) => n.endsWith('.status.json')).map((n) => readJson(join(steps, n)) as StepStatus).sort((a, b) => a.name.localeCompare(b.name));
  const meta = readJson(join(steps, 'meta.json')) as Record<string, unknown> | null;
  const kernelTests = readJson(join(steps, 'kernel-tests.json')) as { numTotalTests?: number; numPassedTests?: number; numFailedTests?: number } | null;
  const runs = names.filter((n) => n.startsWith('e2e-') && n.endsWith('.run.json')).sort().map((n) => summarizeRun(readJson(join(steps, n)) as E2eRun));
  const checks = names.filter((n) => n.startsWith('check-') && n.endsWith('.json') && !n.endsWith('.status.json')).sort().map((n) => ({ name: n.replace(/\.json$/, ''), ...(readJson(join(steps, n)) as object) }));
  const padded = names.filter((n) => n.startsWith('padded-') && n.endsWith('.json') && !n.endsWith('.status.json')).sort().map((n) => readJson(join(steps, n)));
  const json: Record<string, unknown> = {
    what: 'duet device run (tools/bench/device.sh). The padded targets are the tiny target widened/deepened to Llama-3.2-1B/3B cost with its logits unchanged: end-to-end figures are the tiny pair\'s acceptance at a real model\'s cost per pass.',
    meta,
    wallS: (readJson(join(steps, 'wall.json')) as { wallS?: number } | null)?.wallS ?? null,
    steps: status,
    kernelTests: kernelTests && { total: kernelTests.numTotalTests, passed: kernelTests.numPassedTests, failed: kernelTests.numFailedTests },
    benchKernels: readJson(join(steps, 'bench-kernels.json')),
    benchVerify: readJson(join(steps, 'bench-verify.json')),
    padded,
    paddedChecks: checks,
    e2e: runs,
  };
  const lines: string[] = [];
  lines.push(`# duet device run${meta?.dry ? ' (dry run: SwiftShader/CPU, reduced sizes)' : ''}`, '');
  lines.push(`${meta?.date ?? ''}, commit ${meta?.commit ?? '?'}, GPU: ${meta?.gpu ?? 'none'}, WebGPU adapter: ${(meta?.adapter as { adapterName?: string } | null)?.adapterName ?? '?'}, torch: ${meta?.torch ?? '?'}, sidecar on ${meta?.sidecarDevice ?? '?'} in ${meta?.sidecarDtype ?? 'auto'} (auto: float32 on a CPU, bfloat16 on CUDA).`, '');
  lines.push(`Wall time: ${json.wallS ?? '?'} s.`, '');
  lines.push('Padded targets = the tiny target at a real model\'s cost per pass (logits unchanged); the acceptance is the tiny pair\'s, not a 1B/3B pair\'s.', '');
  lines.push('| step | rc | seconds |', '|---|---|---|');
  for (const s of status) lines.push(`| ${s.name} | ${s.skipped ? `skipped: ${s.skipped}` : s.rc} | ${s.seconds} |`);
  lines.push('');
  if (kernelTests) lines.push(`Kernel tests on the adapter: ${kernelTests.numPassedTests}/${kernelTests.numTotalTests} passed.`, '');
  if (checks.length) {
    lines.push('| padded logits check | NMSE | argmax agree |', '|---|---|---|');
    for (const c of checks as Record<string, unknown>[]) lines.push(`| ${c.name} | ${typeof c.nmse === 'number' ? (c.nmse as number).toExponential(2) : '?'} | ${c.argmaxAgree}/${c.positions} |`);
    lines.push('');
  }
  if (runs.length) {
    lines.push('| run | target | verifier | RTT | pipe | T | mode | tok/s | baseline | speedup | TTFT spec/base ms | accept | tok/pass | of SoL | identical |');
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of runs as Record<string, unknown>[]) {
      lines.push(`| ${r.name} | ${r.target} | ${r.verifier} | ${r.rttMs} | ${r.pipeline ? 'y' : 'n'} | ${r.temperature} | ${r.mode}${r.draftDelayMs ? ` +${r.draftDelayMs}ms draft` : ''} | ${r.tokPerSec ?? 'error'} | ${r.baselineTokPerSec ?? ''} | ${r.speedup ?? ''} | ${r.ttftMs ?? ''}/${r.baselineTtftMs ?? ''} | ${r.acceptanceRate ?? ''} | ${r.tokensPerTargetPass ?? ''} | ${r.ofSpeedOfLight === null || r.ofSpeedOfLight === undefined ? '–' : `${r.ofSpeedOfLight} (${r.ofSpeedOfLightWall})`} | ${r.identical ?? '–'} |`);
    }
    lines.push('', 'of SoL = decode tok/s ((tokens − 1) ÷ (wall − TTFT)) ÷ (τ ÷ (verify pass + mean k × draft step + RTT)), from the run\'s own measurements; in brackets the wall tok/s ÷ the same, whose time includes the prompt\'s prefill. "–" where k = 0 stretches mix in. A pipelined run drafts while the pass runs, so it can exceed 1.');
    type Rep = { n: number; median: { specTokPerSec: number; baseTokPerSec: number; specTtftMs: number; baseTtftMs: number }; speedup: number; ttftRatio: number };
    const rep = (runs as Record<string, unknown>[]).filter((r) => r.repeats);
    if (rep.length) {
      lines.push('', 'Medians over repeats (both modes warmed up, then alternating order; the table above shows the first run of each):', '');
      lines.push('| run | n | spec tok/s | baseline tok/s | speedup | TTFT spec / base ms | TTFT ratio |', '|---|---|---|---|---|---|---|');
      for (const r of rep) {
        const x = r.repeats as Rep;
        lines.push(`| ${r.name} | ${x.n} | ${x.median.specTokPerSec} | ${x.median.baseTokPerSec} | ×${x.speedup} | ${x.median.specTtftMs} / ${x.median.baseTtftMs} | ${x.ttftRatio} |`);
      }
    }
  }
  return { json, md: lines.join('\n') + '\n' };
}

async function main(argv: string[]): Promise<number> {
  const [cmd, out] = argv;
  if (cmd === 'adapter') {
    const { requestDevice } = await import('../../src/kernels/gpu.ts');
    try {
      const ctx = await requestDevice();
      console.log(JSON.stringify({ adapterName: ctx.adapterName, hasF16: ctx.hasF16, hasSubgroups: ctx.hasSubgroups, maxBufferSize: ctx.limits.maxBufferSize }));
      ctx.device.destroy();
    } catch (e) {
      console.log(JSON.stringify({ adapterName: null, error: `${(e as Error).name}: ${(e as Error).message}` }));
    }
    return 0;
  }
  if (cmd === 'report' && out) {
    const { json, md } = buildReport(out);
    writeFileSync(join(out, 'device.json'), JSON.stringify(json, null, 2) + '\n');
    writeFileSync(join(out, 'report.md'), md);
    console.log(md);
    return 0;
  }
  console.error('usage: device-report.ts adapter | report OUT');
  return 2;
}

if (process.argv[1]?.endsWith('device-report.ts')) process.exitCode = await main(process.argv.slice(2));
