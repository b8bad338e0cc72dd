// Getting a WebGPU device, in the browser (navigator.gpu) or in Node (npm `webgpu`, Dawn),
// with the adapter's full limits requested and the optional features duet can use.
// Device loss and uncaptured errors are routed to one place (GpuContext.onError).

export class WebGPUUnavailableError extends Error {
  override name = 'WebGPUUnavailableError';
}
export class DeviceLostError extends Error {
  override name = 'DeviceLostError';
}
export class ShaderCompileError extends Error {
  override name = 'ShaderCompileError';
  constructor(readonly label: string, readonly messages: string[]) {
    super(`WGSL shader "${label}" failed to compile:\n${messages.join('\n')}`);
  }
}
export class GpuOutOfMemoryError extends Error {
  override name = 'GpuOutOfMemoryError';
  constructor(readonly neededBytes: number, readonly availableBytes: number, what: string) {
    super(`${what} needs ${(neededBytes / 2 ** 20).toFixed(1)} MiB but the device allows ${(availableBytes / 2 ** 20).toFixed(1)} MiB; use a smaller model, a quantized format (--quant q4), or a shorter context`);
  }
}

export interface GpuContext {
  device: GPUDevice;
  adapterName: string;
  /** Optional features that were found and enabled. */
  hasSubgroups: boolean;
  /** The adapter's subgroup size range (adapter.info), where it reports one. */
  subgroupSizes: { min: number; max: number } | null;
  hasF16: boolean;
  limits: GPUSupportedLimits;
  /** Set by the owner; receives device loss and uncaptured validation/OOM errors. */
  onError: (err: Error) => void;
  /** Resolves when the device is lost (destroy() included). */
  lost: Promise<GPUDeviceLostInfo>;
}

export interface RequestDeviceOptions {
  /** Ignore the optional features even where present (to test the core-WGSL path). */
  disableSubgroups?: boolean;
  disableF16?: boolean;
  powerPreference?: GPUPowerPreference;
}

/** Candidate Vulkan ICD files for SwiftShader, as shipped by Debian's chromium. */
const SWIFTSHADER_ICDS = ['/usr/lib/chromium/vk_swiftshader_icd.json', '/usr/lib64/chromium/vk_swiftshader_icd.json'];

let nodeGpu: GPU | null = null;
let nodeModule: typeof import('webgpu') | null = null;

async function loadDawn(): Promise<typeof import('webgpu')> {
  if (nodeModule) return nodeModule;
  try {
    nodeModule = await import('webgpu');
  } catch (err) {
    throw new WebGPUUnavailableError(`cannot load the npm package "webgpu" (Dawn for Node): ${(err as Error).message}`);
  }
  Object.assign(globalThis, nodeModule.globals);
  return nodeModule;
}

/**
 * Dawn in Node. Tries the system's Vulkan drivers first; when they give no adapter (no GPU)
 * and the user set no ICD, falls back to SwiftShader from Debian's chromium package.
 */
async function getNodeAdapter(powerPreference: GPUPowerPreference): Promise<GPUAdapter | null> {
  const mod = await loadDawn();
  const env = process.env;
  if (nodeGpu) return nodeGpu.requestAdapter({ powerPreference });
  const userChoseIcd = Boolean(env.VK_ICD_FILENAMES || env.VK_DRIVER_FILES);
  if (env.DUET_FORCE_SWIFTSHADER !== '1' || userChoseIcd) {
    const gpu = mod.create([]);
    const adapter = await gpu.requestAdapter({ powerPreference });
    if (adapter || userChoseIcd) {
      nodeGpu = gpu;
      return adapter;
    }
  }
  const fs = await import('node:fs');
  const swiftshader = SWIFTSHADER_ICDS.find((p) => fs.existsSync(p));
  if (!swiftshader) return null;
  env.VK_ICD_FILENAMES = swiftshader;
  nodeGpu = mod.create([]);
  return nodeGpu.requestAdapter({ powerPreference });
}

/** The browser's WebGPU entry point, or null outside a browser. */
function browserGpu(): GPU | null {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  return nav && 'gpu' in nav && nav.gpu ? nav.gpu : null;
}

export async function requestDevice(opts: RequestDeviceOptions = {}): Promise<GpuContext> {
  const powerPreference = opts.powerPreference ?? 'high-performance';
  let adapter: GPUAdapter | null;
  const gpu = browserGpu();
  if (gpu) adapter = await gpu.requestAdapter({ powerPreference });
  else if (typeof process !== 'undefined' && process.versions?.node) adapter = await getNodeAdapter(powerPreference);
  else throw new WebGPUUnavailableError('this browser has no WebGPU (navigator.gpu is missing); use Chrome or Edge 113+, or the CPU fallback');
  if (!adapter) {
    throw new WebGPUUnavailableError(
      'no WebGPU adapter found. In Node, install a Vulkan driver, or Debian\'s chromium + libvulkan1 for SwiftShader ' +
        '(or set VK_ICD_FILENAMES to a vk_swiftshader_icd.json); in a browser, enable WebGPU',
    );
  }
  const features: GPUFeatureName[] = [];
  const hasSubgroups = !opts.disableSubgroups && adapter.features.has('subgroups');
  const hasF16 = !opts.disableF16 && adapter.features.has('shader-f16');
  if (hasSubgroups) features.push('subgroups');
  if (hasF16) features.push('shader-f16');
  if (adapter.features.has('timestamp-query')) features.push('timestamp-query');
  // Ask for the adapter's full limits: the defaults (128 MiB bindings) are too small for LM heads.
  const l = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
  };
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  const info = adapter.info;
  const adapterName = [info?.vendor, info?.architecture, info?.device, info?.description].filter((s) => s).join(' ') || 'unknown adapter';
  const ctx: GpuContext = {
    device,
    adapterName,
    hasSubgroups,
    subgroupSizes: info?.subgroupMinSize && info.subgroupMaxSize ? { min: info.subgroupMinSize, max: info.subgroupMaxSize } : null,
    hasF16,
    limits: device.limits,
    onError: (err) => {
      console.error(`[duet gpu] ${err.name}: ${err.message}`);
    },
    lost: device.lost,
  };
  device.lost.then((info) => {
    if (info.reason !== 'destroyed') ctx.onError(new DeviceLostError(`GPU device lost: ${info.message || info.reason}; reload the model to recover`));
  });
  device.addEventListener('uncapturederror', (ev) => {
    const e = (ev as GPUUncapturedErrorEvent).error;
    ctx.onError(new Error(`uncaptured WebGPU ${e.constructor.name}: ${e.message}`));
  });
  return ctx;
}

/** Compile WGSL and surface compiler errors as a ShaderCompileError (not a silent invalid pipeline). */
export async function createComputePipeline(
  ctx: GpuContext,
  label: string,
  code: string,
  constants: Record<string, number> = {},
): Promise<GPUComputePipeline> {
  const module = ctx.device.createShaderModule({ label, code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) throw new ShaderCompileError(label, errors.map((m) => `${label}:${m.lineNum}:${m.linePos}: ${m.message}`));
  ctx.device.pushErrorScope('validation');
  const pipeline = await ctx.device.createComputePipelineAsync({ label, layout: 'auto', compute: { module, entryPoint: 'main', constants } }).catch((err: Error) => {
    throw new ShaderCompileError(label, [err.message]);
  });
  const err = await ctx.device.popErrorScope();
  if (err) throw new ShaderCompileError(label, [err.message]);
  return pipeline;
}

/** One ceilDiv for every dispatch size. */
export const ceilDiv = (a: number, b: number): number => Math.floor((a + b - 1) / b);

/** Read a GPU buffer range back to the CPU (tests and final small readbacks only). */
export async function readBuffer(ctx: GpuContext, src: GPUBuffer, byteLength = src.size, byteOffset = 0): Promise<ArrayBuffer> {
  const staging = ctx.device.createBuffer({ size: byteLength, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  const enc = ctx.device.createCommandEncoder();
  enc.copyBufferToBuffer(src, byteOffset, staging, 0, byteLength);
  ctx.device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = staging.getMappedRange().slice(0);
  staging.destroy();
  return out;
}

/** Create a storage buffer and fill it from `data` (mappedAtCreation: no extra staging copy). */
export function createBufferFrom(ctx: GpuContext, data: ArrayBufferView, usage: number, label: string): GPUBuffer {
  const size = Math.max(16, Math.ceil(data.byteLength / 4) * 4);
  const buf = ctx.device.createBuffer({ label, size, usage, mappedAtCreation: true });
  new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buf.unmap();
  return buf;
}
