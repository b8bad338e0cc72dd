// `duet bench verify [--json FILE] [--quick]`: what ONE target pass costs on each verifier
// backend as the batch grows. For each backend (cpu = CpuBatchLlama, cpu-reference = the
// plain CpuLlama path it replaced, webgpu, sidecar torch), each built through
// server/verifiers/load.ts as `duet serve` builds it, and each shape (the bundled tiny target;
// Llama-3.2-1B and -3B layer shapes with 2 layers and vocab 4096, written at bench time), the
// median wall ms of one verifyBatch for B sessions × T tokens each (T = 1: a decode step, a
// k = 0 verify; T = k + 1: a verify block), and its ratio to (B = 1, T = 1).
//
// In-process backends (cpu, cpu-reference, webgpu's host side) also get `cpuMs`: this process's
// CPU time per pass (user + system), which other load on a shared machine inflates far less
// than wall time; the cpu summary uses it where present, and says so.
//
// Every cell's shape is passed once untimed before any cell is timed.
//
// Drafts are random, so almost every block is rejected at its first token and each pass costs
// the same T positions per session; every cell opens fresh sessions with 16-token prompts, so
// contexts are 16 + (reps + 1) positions at most. A backend or shape that fails is recorded with its error; the others still run.

import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { syntheticConfig, type LlamaConfig } from '../../src/engine/config.ts';
import { expectedShapes } from '../../src/engine/weights.ts';
import { mulberry32 } from '../../src/engine/weights.ts';
import { createTargetVerifier, type TargetBackend } from '../../server/verifiers/load.ts';
import type { Verifier, VerifyRequest } from '../../server/verifiers/types.ts';
import { hfConfigJson, writeSafetensors } from '../fixtures/safetensors-writer.ts';
import { fixtureValue } from '../fixtures/llama1b.ts';

/** The verifier backends, and `sidecar-bf16`: the torch sidecar computing in bfloat16 (its
 * `--dtype bfloat16`; float32 is its CPU default), a real Llama checkpoint's own dtype. */
export type BenchBackend = TargetBackend | 'sidecar-bf16';
export const BACKENDS: BenchBackend[] = ['cpu', 'cpu-reference', 'webgpu', 'sidecar', 'sidecar-bf16'];
export const SHAPES = ['tiny', '1b-2l', '3b-2l'] as const;
export type ShapeName = (typeof SHAPES)[number];

const TINY_DIR = 'public/models/tiny-target';

export interface VerifyBenchOptions {
  quick?: boolean;
  backends?: BenchBackend[];
  shapes?: ShapeName[];
  batches?: number[];
  tokens?: number[];
  /** Timed passes per cell (after one warm-up); the median is reported. Cells whose warm-up
   * pass takes over slowPassMs get one timed pass. */
  reps?: number;
  slowPassMs?: number;
  log?: (line: string) => void;
}

export interface Cell {
  B: number;
  T: number;
  ms: number;
  /** Median CPU ms of this process per pass (the verifier's compute, for in-process backends). */
  cpuMs: number;
  /** ms / ms(B = 1, T = 1). */
  ratio: number;
  /** B · T / ms · 1000: positions per second. */
  tokPerS: number;
  reps: number;
}

export interface Run {
  backend: BenchBackend;
  shape: ShapeName;
  status: 'ok' | 'error';
  error?: string;
  device?: string;
  cells: Cell[];
}

export interface VerifyBenchResult {
  suite: 'verify';
  quick: boolean;
  batches: number[];
  tokens: number[];
  runs: Run[];
  /** The done-means numbers for the cpu backend on the tiny target, from this one run. */
  summary: {
    /** What the cpu numbers below are computed from: process CPU time (robust to other load) or wall time. */
    cpuTiming: 'cpu-time' | 'wall';
    cpuDecodeTokPerS: number | null;
    cpuReferenceDecodeTokPerS: number | null;
    /** cpu decode tok/s ÷ cpu-reference decode tok/s. */
    decodeSpeedup: number | null;
    /** cpu: ms(B = 1, T = 5) ÷ ms(B = 1, T = 1). */
    cpuPass5OverDecode: number | null;
    cpuPass9OverDecode: number | null;
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function shapeConfig(s: ShapeName): LlamaConfig | null {
  if (s === 'tiny') return null;
  return syntheticConfig(s === '1b-2l' ? '1b' : '3b', { numLayers: 2, vocabSize: 4096, maxPositionEmbeddings: 4096, bosTokenId: 4091, eosTokenIds: [4092] });
}

/** A model folder for the shape: the bundled tiny target, or one written (f32, deterministic values) into tmp. */
async function shapeDir(s: ShapeName, tmp: string): Promise<string> {
  const c = shapeConfig(s);
  if (!c) return TINY_DIR;
  const dir = join(tmp, s);
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  const { mkdir, writeFile } = await import('node:fs/promises');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(hfConfigJson(c)));
  // the tiny target's tokenizer has exactly 4096 ids, the vocabulary of these shapes
  await copyFile(join(TINY_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const entries = [...expectedShapes(c)].map(([name, shape], k) => ({
    name, shape, dtype: 'F32' as const,
    fill: (out: Float32Array, start: number) => {
      for (let i = 0; i < out.length; i++) out[i] = fixtureValue(k, start + i, shape);
    },
  }));
  await writeSafetensors(join(dir, 'model.safetensors'), entries);
  return dir;
}

async function measure(v: Verifier, batches: number[], tokens: number[], reps: number, slowPassMs: number): Promise<Cell[]> {
  const info = v.info();
  const rand = mulberry32(77);
  const tok = (): number => Math.floor(rand() * Math.min(info.vocabSize, 4000));
  const maxB = Math.max(...batches);
  const ids = Array.from({ length: maxB }, (_, i) => `bench${i}`);
  const greedy = { temperature: 0, topK: 0, topP: 1, seed: 0 };
  const prompts = ids.map(() => Array.from({ length: 16 }, tok));
  const cells: Cell[] = [];
  const pass = async (B: number, T: number): Promise<{ ms: number; cpuMs: number }> => {
    const reqs: VerifyRequest[] = ids.slice(0, B).map((sessionId) => ({ sessionId, draft: Array.from({ length: T - 1 }, tok) }));
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await v.verifyBatch(reqs);
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    return { ms, cpuMs: (c.user + c.system) / 1000 };
  };
  // Warm-up, untimed: decode steps for 2 s (the JIT, and WebAssembly's tier-up from its
  // baseline compiler, which a loaded machine delays), then one pass of every cell's shape.
  await v.open(ids[0], prompts[0], greedy);
  for (let i = 0, t0 = performance.now(); i < 400 && performance.now() - t0 < 2000; i++) await pass(1, 1);
  await v.close(ids[0]);
  const warmMs = new Map<string, number>();
  for (const B of batches) {
    for (const T of tokens) {
      for (const [i, id] of ids.slice(0, B).entries()) await v.open(id, prompts[i], greedy);
      warmMs.set(`${B}x${T}`, (await pass(B, T)).ms);
      for (const id of ids.slice(0, B)) await v.close(id);
    }
  }
  for (const B of batches) {
    for (const T of tokens) {
      // fresh sessions per cell, so every cell attends over the same context lengths
      for (const [i, id] of ids.slice(0, B).entries()) await v.open(id, prompts[i], greedy);
      const n = (warmMs.get(`${B}x${T}`) ?? 0) > slowPassMs ? 1 : reps;
      const times: number[] = [];
      const cpuTimes: number[] = [];
      for (let i = 0; i < n; i++) {
        const p = await pass(B, T);
        times.push(p.ms);
        cpuTimes.push(p.cpuMs);
      }
      const ms = median(times);
      cells.push({ B, T, ms, cpuMs: median(cpuTimes), ratio: 0, tokPerS: (B * T * 1000) / ms, reps: n });
      for (const id of ids.slice(0, B)) await v.close(id);
    }
  }
  const base = cells.find((c) => c.B === 1 && c.T === 1)?.ms ?? cells[0].ms;
  for (const c of cells) c.ratio = c.ms / base;
  return cells;
}

export async function runVerifyBench(o: VerifyBenchOptions = {}): Promise<VerifyBenchResult> {
  const log = o.log ?? (() => {});
  const quick = !!o.quick;
  const batches = o.batches ?? (quick ? [1, 4] : [1, 4, 16]);
  const tokens = o.tokens ?? (quick ? [1, 5] : [1, 2, 5, 9]);
  const shapes = o.shapes ?? (quick ? ['tiny'] : [...SHAPES]);
  const backends = o.backends ?? BACKENDS;
  const reps = o.reps ?? (quick ? 3 : 7);
  const slowPassMs = o.slowPassMs ?? 2000;
  const tmp = await mkdtemp(join(tmpdir(), 'duet-bench-verify-'));
  const runs: Run[] = [];
  try {
    for (const shape of shapes) {
      for (const backend of backends) {
        // the plain reference is only the yardstick for the tiny target; at 1B/3B widths it takes minutes a cell
        if (backend === 'cpu-reference' && shape !== 'tiny' && !o.backends) continue;
        log(`bench verify: ${backend} on ${shape}`);
        let v: Verifier | null = null;
        try {
          const dir = await shapeDir(shape, tmp);
          const bf16 = backend === 'sidecar-bf16';
          v = await createTargetVerifier(bf16 ? 'sidecar' : backend, dir, {
            maxContext: 512, maxBatch: Math.max(...batches), maxSessions: Math.max(...batches) + 1, maxDraft: Math.max(...tokens), log,
            sidecarArgs: bf16 ? ['--dtype', 'bfloat16'] : undefined,
          });
          const cells = await measure(v, batches, tokens, reps, slowPassMs);
          runs.push({ backend, shape, status: 'ok', device: v.info().device, cells });
          const d = cells.find((c) => c.B === 1 && c.T === 1);
          log(`  decode ${d?.ms.toFixed(2)} ms wall, ${d?.cpuMs.toFixed(2)} ms CPU; ${cells.map((c) => `B${c.B}T${c.T} ×${c.ratio.toFixed(2)}`).join(' ')}`);
        } catch (e) {
          const err = e as Error;
          log(`  failed: ${err.name}: ${err.message}`);
          runs.push({ backend, shape, status: 'error', error: `${err.name}: ${err.message}`, cells: [] });
        } finally {
          await v?.dispose();
        }
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const cell = (backend: BenchBackend, B: number, T: number): Cell | undefined => runs.find((r) => r.backend === backend && r.shape === 'tiny' && r.status === 'ok')?.cells.find((c) => c.B === B && c.T === T);
  // the cpu backends compute synchronously in this process, so CPU time is their pass time
  const t = (c: Cell | undefined): number | null => (c ? (c.cpuMs > 0 ? c.cpuMs : c.ms) : null);
  const dec = t(cell('cpu', 1, 1));
  const ref = t(cell('cpu-reference', 1, 1));
  const ratioT = (T: number): number | null => (dec && t(cell('cpu', 1, T)) ? t(cell('cpu', 1, T))! / dec : null);
  return {
    suite: 'verify', quick, batches, tokens, runs,
    summary: {
      cpuTiming: 'cpu-time',
      cpuDecodeTokPerS: dec ? 1000 / dec : null,
      cpuReferenceDecodeTokPerS: ref ? 1000 / ref : null,
      decodeSpeedup: dec && ref ? ref / dec : null,
      cpuPass5OverDecode: ratioT(5),
      cpuPass9OverDecode: ratioT(9),
    },
  };
}
