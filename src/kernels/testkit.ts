// GPU test plumbing for the kernel tests (not shipped code paths): upload inputs, give
// outputs sentinel padding, run encoded ops in one submission, read back, and check that a
// WGSL uniform struct and its TypeScript packer agree on the byte size.

import { type GpuContext, createBufferFrom, readBuffer } from './gpu.ts';
import { SENTINEL_WORDS, brokenSentinels, withSentinels } from './testing.ts';

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

/** Byte size of a WGSL struct made of 4-byte scalars (u32, i32, f32), as WGSL lays it out. */
export function wgslStructBytes(source: string, name: string): number {
  const m = new RegExp(`struct\\s+${name}\\s*\\{([^}]*)\\}`).exec(source);
  if (!m) throw new Error(`struct ${name} not found`);
  const fields = m[1].split(',').map((s) => s.trim()).filter(Boolean);
  for (const f of fields) {
    const type = f.split(':')[1]?.trim();
    if (!['u32', 'i32', 'f32'].includes(type)) throw new Error(`struct ${name}: field "${f}" is not a 4-byte scalar`);
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
