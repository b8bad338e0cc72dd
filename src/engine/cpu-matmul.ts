// Host side of cpu-matmul.wat: the multi-row f32 matmul on WebAssembly SIMD. Weight matrices
// are copied into the module's memory once (upload); each call copies the m input rows in,
// runs matmul_rows, and copies the m output rows out: m·(n + d) floats moved against m·n·d
// multiply-adds. The kernel's summation order (see the .wat header) makes every output element
// independent of the other rows of the pass.

import { CPU_MATMUL_WASM_BASE64 } from './cpu-matmul.wasm.ts';

const PAGE = 65536;

function wasmBytes(): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(CPU_MATMUL_WASM_BASE64), (c) => c.charCodeAt(0));
}

let module: WebAssembly.Module | null | undefined;

/** The compiled module, or null where this runtime has no WebAssembly SIMD. */
function compiled(): WebAssembly.Module | null {
  if (module !== undefined) return module;
  const bytes = wasmBytes();
  module = typeof WebAssembly === 'object' && WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  return module;
}

export function wasmSimdAvailable(): boolean {
  return compiled() !== null;
}

/** A weight matrix (d, n) living in the module's memory. */
export interface WasmMatrix {
  readonly byteOffset: number;
  readonly n: number;
  readonly d: number;
}

export class WasmMatmul {
  private readonly memory: WebAssembly.Memory;
  private readonly kernel: (o: number, x: number, w: number, n: number, d: number, m: number) => void;
  /** First free byte after the uploaded weights; the per-call scratch starts here. */
  private top = 0;

  constructor() {
    const mod = compiled();
    if (!mod) throw new Error('WebAssembly SIMD is not available in this runtime; use the JavaScript matmulRows path');
    const inst = new WebAssembly.Instance(mod, {});
    this.memory = inst.exports.memory as WebAssembly.Memory;
    this.kernel = inst.exports.matmul_rows as WasmMatmul['kernel'];
  }

  /** Bytes of memory in use by weights. */
  get weightBytes(): number {
    return this.top;
  }

  private reserve(bytes: number): void {
    const have = this.memory.buffer.byteLength;
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / PAGE));
  }

  upload(w: Float32Array, n: number, d: number): WasmMatrix {
    if (w.length !== n * d) throw new RangeError(`upload: ${w.length} values for a (${d}, ${n}) matrix`);
    const byteOffset = this.top;
    this.reserve(byteOffset + w.byteLength);
    new Float32Array(this.memory.buffer, byteOffset, w.length).set(w);
    this.top = byteOffset + w.byteLength;
    return { byteOffset, n, d };
  }

  /** o(m, d) = x(m, n) @ W^T (o and x are JS arrays; their first m rows are used). */
  run(o: Float32Array, x: Float32Array, w: WasmMatrix, m: number): void {
    const { n, d } = w;
    const xOff = this.top;
    const oOff = xOff + m * n * 4;
    this.reserve(oOff + m * d * 4);
    const buf = this.memory.buffer;
    new Float32Array(buf, xOff, m * n).set(x.subarray(0, m * n));
    this.kernel(oOff, xOff, w.byteOffset, n, d, m);
    o.set(new Float32Array(buf, oOff, m * d));
  }
}
