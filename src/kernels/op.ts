// Plumbing shared by the host wrappers of the kernels: a pipeline cache keyed by device +
// kernel variant, buffer bindings, per-call-site uniform buffers, and 1-D dispatch sizing that
// stays under maxComputeWorkgroupsPerDimension by folding into y.

import { type GpuContext, ceilDiv, createComputePipeline } from './gpu.ts';

/** What every host wrapper returns: records into the caller's pass, never reads back. */
export interface Op<D> {
  encode(pass: GPUComputePassEncoder, dims: D): void;
}

const pipelines = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

/** One compiled pipeline per (device, label, overrides); compiled on first use. */
export function cachedPipeline(ctx: GpuContext, label: string, code: string, constants: Record<string, number> = {}): Promise<GPUComputePipeline> {
  let byDevice = pipelines.get(ctx.device);
  if (!byDevice) pipelines.set(ctx.device, (byDevice = new Map()));
  const key = `${label}|${JSON.stringify(constants)}`;
  let p = byDevice.get(key);
  if (!p) {
    p = createComputePipeline(ctx, label, code, constants);
    byDevice.set(key, p);
    // A failed compile must not poison the cache for a later retry.
    p.catch(() => byDevice.delete(key));
  }
  return p;
}

/** A call site's own uniform buffer (one per op instance, so one submission can hold many). */
export function uniformBuffer(ctx: GpuContext, byteLength: number, label: string): GPUBuffer {
  return ctx.device.createBuffer({ label, size: byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
}

/**
 * A whole buffer, or a range of one (offset 256-byte aligned; element offsets in the uniforms
 * need no alignment; tests bind sentinel-padded ranges).
 */
export type Buf = GPUBuffer | GPUBufferBinding;

/** A Buf as a binding resource. */
export const asBinding = (b: Buf): GPUBufferBinding => ('buffer' in b ? b : { buffer: b });

/** Byte length a Buf binds. */
export function bindingBytes(b: Buf): number {
  const r = asBinding(b);
  return r.size ?? r.buffer.size - (r.offset ?? 0);
}

/** Bind buffers 0..n-1 of group 0 in order. */
export function bindAll(ctx: GpuContext, pipeline: GPUComputePipeline, buffers: Buf[], label: string): GPUBindGroup {
  return ctx.device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((b, binding) => ({ binding, resource: asBinding(b) })),
  });
}

/**
 * Workgroup grid for `count` threads of `wg` each: (x, y) with x ≤ 65535. Kernels recover
 * the flat index as gid.x + gid.y * num_workgroups.x * WG and drop idx >= count.
 */
export function grid1d(count: number, wg: number): [number, number] {
  const groups = Math.max(1, ceilDiv(count, wg));
  const x = Math.min(groups, 65535);
  return [x, ceilDiv(groups, x)];
}

/** Throw before dispatch when a binding would exceed the device's limit. */
export function checkBinding(ctx: GpuContext, byteLength: number, what: string): void {
  const max = ctx.limits.maxStorageBufferBindingSize;
  if (byteLength > max) {
    throw new RangeError(`${what} needs a ${byteLength}-byte binding but maxStorageBufferBindingSize is ${max}; use a shorter context or smaller batch`);
  }
}
