// Test helpers shared by kernel and engine tests (not shipped code paths): the NMSE metric of
// llama.cpp's test-backend-ops, a failure report that says how many, how much and where,
// sentinel padding around GPU outputs that catches out-of-bounds writes, and the GPU plumbing:
// upload inputs, give outputs sentinel padding, run encoded ops in one submission, read back,
// and check that a WGSL uniform struct and its TypeScript packer agree on the byte size.

import { type GpuContext, createBufferFrom, readBuffer } from './gpu.ts';
import { mulberry32 } from './random.ts';

/** Normalized mean squared error: sum((a-b)^2) / sum(b^2), b the reference. */
export function nmse(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let err = 0;
  let ref = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    err += d * d;
    ref += expected[i] * expected[i];
  }
  return ref === 0 ? (err === 0 ? 0 : Infinity) : err / ref;
}

export interface Comparison {
  ok: boolean;
  nmse: number;
  maxAbsErr: number;
  worstIndex: number;
  nonFinite: number;
  summary: string;
}

/** Compare by NMSE; NaN/Inf in the actual output fail first. */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, maxNmse: number, what = 'output'): Comparison {
  if (actual.length !== expected.length) {
    return { ok: false, nmse: Infinity, maxAbsErr: Infinity, worstIndex: -1, nonFinite: 0, summary: `${what}: length ${actual.length} != expected ${expected.length}` };
  }
  let nonFinite = 0;
  let maxAbsErr = 0;
  let worstIndex = -1;
  for (let i = 0; i < expected.length; i++) {
    if (!Number.isFinite(actual[i])) nonFinite++;
    const d = Math.abs(actual[i] - expected[i]);
    if (d > maxAbsErr || Number.isNaN(d)) {
      maxAbsErr = d;
      worstIndex = i;
    }
  }
  const e = nonFinite ? Infinity : nmse(actual, expected);
  const ok = nonFinite === 0 && e <= maxNmse;
  const summary =
    `${what}: n=${expected.length} nmse=${e.toExponential(3)} (bound ${maxNmse.toExponential(1)}) ` +
    `maxAbsErr=${maxAbsErr.toExponential(3)} at [${worstIndex}] (got ${actual[worstIndex]}, want ${expected[worstIndex]}) nonFinite=${nonFinite}`;
  return { ok, nmse: e, maxAbsErr, worstIndex, nonFinite, summary };
}

/** A bit pattern no kernel produces by accident (a quiet NaN with a payload). */
export const SENTINEL_U32 = 0x7fc0dead;
export const SENTINEL_WORDS = 64;

/** Float32 data with SENTINEL_WORDS sentinel words before and after; the kernel writes at offset SENTINEL_WORDS. */
export function withSentinels(n: number): Uint32Array {
  const a = new Uint32Array(n + 2 * SENTINEL_WORDS);
  a.fill(SENTINEL_U32);
  return a;
}

/** Count sentinel words that were overwritten (out-of-bounds writes). */
export function brokenSentinels(words: Uint32Array, n: number): number {
  let broken = 0;
  for (let i = 0; i < SENTINEL_WORDS; i++) {
    if (words[i] !== SENTINEL_U32) broken++;
    if (words[SENTINEL_WORDS + n + i] !== SENTINEL_U32) broken++;
  }
  return broken;
}

/** Deterministic uniform(-scale, scale) test data. */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const rand = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * scale;
  return out;
}

// ---- GPU plumbing ----

export const STORAGE_USAGE = (): number => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

export function upload(ctx: GpuContext, data: Float32Array | Uint32Array, label = 'input'): GPUBuffer {
  return createBufferFrom(ctx, data, STORAGE_USAGE(), label);
}

/**
 * An output region of n words inside a buffer padded with SENTINEL_WORDS sentinels before and
 * after. `binding` starts at the payload (offset SENTINEL_WORDS*4 = 256 bytes, the storage
 * offset alignment) and extends over the trailing sentinels, so a kernel that writes past
 * word n hits them; the leading ones lie outside the binding and show a binding mix-up.
 */
export interface SentinelBuffer {
  buffer: GPUBuffer;
  binding: GPUBufferBinding;
  n: number;
  /** The n payload words and the count of overwritten sentinels. */
  read(): Promise<{ words: Uint32Array; broken: number }>;
}

export function sentinelBuffer(ctx: GpuContext, n: number, init?: Uint32Array | Float32Array, label = 'output'): SentinelBuffer {
  const words = withSentinels(n);
  if (init) words.set(new Uint32Array(init.buffer, init.byteOffset, n), SENTINEL_WORDS);
  const buffer = createBufferFrom(ctx, words, STORAGE_USAGE(), label);
  return {
    buffer,
    binding: { buffer, offset: SENTINEL_WORDS * 4, size: (n + SENTINEL_WORDS) * 4 },
    n,
    async read() {
      const all = new Uint32Array(await readBuffer(ctx, buffer, words.byteLength));
      return { words: all.slice(SENTINEL_WORDS, SENTINEL_WORDS + n), broken: brokenSentinels(all, n) };
    },
  };
}

/** Record into one compute pass, submit, and wait; validation errors throw. */
export async function runPass(ctx: GpuContext, record: (pass: GPUComputePassEncoder) => void): Promise<void> {
  const enc = ctx.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  record(pass);
  pass.end();
  ctx.device.pushErrorScope('validation');
  ctx.device.queue.submit([enc.finish()]);
  const err = await ctx.device.popErrorScope();
  if (err) throw new Error(`validation: ${err.message}`);
  await ctx.device.queue.onSubmittedWorkDone();
}

/** The `name: type` fields of a WGSL struct, in declaration order (line comments ignored). */
function wgslStructDecls(source: string, name: string): { name: string; type: string }[] {
  const m = new RegExp(`struct\\s+${name}\\s*\\{([^}]*)\\}`).exec(source.replace(/\/\/.*$/gm, ''));
  if (!m) throw new Error(`struct ${name} not found`);
  return m[1].split(',').map((s) => s.trim()).filter(Boolean).map((f) => ({ name: f.split(':')[0].trim(), type: f.split(':')[1]?.trim() ?? '' }));
}

/** Field names of a WGSL struct, in declaration order. */
export function wgslStructFields(source: string, name: string): string[] {
  return wgslStructDecls(source, name).map((f) => f.name);
}

/** Byte size of a WGSL struct made of 4-byte scalars (u32, i32, f32), as WGSL lays it out. */
export function wgslStructBytes(source: string, name: string): number {
  const fields = wgslStructDecls(source, name);
  for (const f of fields) {
    if (!['u32', 'i32', 'f32'].includes(f.type)) throw new Error(`struct ${name}: field "${f.name}: ${f.type}" is not a 4-byte scalar`);
  }
  return fields.length * 4;
}

/** x rounded to the nearest f16 (ties to even), as a number; the oracle for f16 storage. */
export function f16Round(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  const e = Math.max(-14, Math.floor(Math.log2(a)));
  const q = 2 ** (e - 10);
  const r = a / q;
  const fl = Math.floor(r);
  const diff = r - fl;
  const m = diff > 0.5 ? fl + 1 : diff < 0.5 ? fl : fl % 2 === 0 ? fl : fl + 1;
  return Math.sign(x) * m * q;
}
