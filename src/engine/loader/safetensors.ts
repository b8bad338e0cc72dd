// safetensors reader: parse the header (u64 LE length + JSON), validate every entry against
// the file size before any data is read, then read one tensor at a time in chunks,
// converting F32/F16/BF16 to f32 as the bytes arrive (peak extra memory: one chunk).
// Format: https://github.com/huggingface/safetensors (offsets relative to the end of header).

import { WeightsFormatError } from './errors.ts';
import { type SourceFile, ShortReadError } from './source.ts';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';
const BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };
const KNOWN_OTHER = new Set(['F64', 'I64', 'I32', 'I16', 'I8', 'U8', 'U16', 'U32', 'U64', 'BOOL', 'F8_E4M3', 'F8_E5M2']);
/** Header sizes above this are corrupt (real 3B checkpoints have headers of ~30 kB). */
const MAX_HEADER_BYTES = 100 << 20;

export interface TensorInfo {
  name: string;
  /** file within the model source */
  file: string;
  dtype: string;
  shape: number[];
  /** absolute byte offset of the data in the file */
  offset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  metadata: Record<string, string>;
  /** tensors in ascending file offset order */
  tensors: TensorInfo[];
  /** first data byte */
  dataStart: number;
}

const isNat = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/** Read and validate the header of a safetensors file. Errors name the file and the offending entry. */
export async function readSafetensorsHeader(f: SourceFile): Promise<SafetensorsHeader> {
  const file = f.name;
  if (Number.isFinite(f.byteLength) && f.byteLength < 8) {
    throw new WeightsFormatError(file, '(header)', `only ${f.byteLength} bytes; a safetensors file starts with an 8-byte header length (truncated or not safetensors)`);
  }
  const lenBytes = await readOrExplain(f, 0, 8, '(header length)');
  const n = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES) || (Number.isFinite(f.byteLength) && Number(n) + 8 > f.byteLength)) {
    throw new WeightsFormatError(file, '(header)', `header length ${n} at offset 0 exceeds the file (${f.byteLength} bytes): corrupt or not a safetensors file`);
  }
  const headerBytes = await readOrExplain(f, 8, Number(n), '(header)');
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new WeightsFormatError(file, '(header)', `header JSON at bytes [8, ${8 + Number(n)}) does not parse: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new WeightsFormatError(file, '(header)', 'header is not a JSON object');
  }
  const dataStart = 8 + Number(n);
  const dataBytes = Number.isFinite(f.byteLength) ? f.byteLength - dataStart : Infinity;
  const tensors: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = (raw ?? {}) as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null || typeof e.dtype !== 'string' || !Array.isArray(e.shape) || !e.shape.every(isNat)
      || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2 || !e.data_offsets.every(isNat)) {
      throw new WeightsFormatError(file, name, `malformed header entry ${JSON.stringify(raw)}; expected {dtype, shape, data_offsets}`);
    }
    const [begin, end] = e.data_offsets as number[];
    const shape = e.shape as number[];
    const numel = shape.reduce((a, b) => a * b, 1);
    const bytesPer = BYTES[e.dtype as SafetensorsDtype];
    if (bytesPer !== undefined && end - begin !== numel * bytesPer) {
      throw new WeightsFormatError(file, name, `data_offsets [${begin}, ${end}) hold ${end - begin} bytes, but ${e.dtype}[${shape}] needs ${numel * bytesPer}`);
    }
    if (end < begin || end > dataBytes) {
      throw new WeightsFormatError(file, name, `data_offsets [${begin}, ${end}) (file offset ${dataStart + end}) run past the end of the file (${f.byteLength} bytes): truncated download?`);
    }
    tensors.push({ name, file, dtype: e.dtype, shape, offset: dataStart + begin, byteLength: end - begin });
  }
  tensors.sort((a, b) => a.offset - b.offset);
  return { file, metadata, tensors, dataStart };
}

async function readOrExplain(f: SourceFile, offset: number, length: number, what: string): Promise<Uint8Array> {
  try {
    return await f.read(offset, length);
  } catch (err) {
    if (err instanceof ShortReadError) throw new WeightsFormatError(f.name, what, err.message.slice(f.name.length + 2));
    throw err;
  }
}

/** Throw unless `dtype` is one we convert. */
export function checkDtype(t: TensorInfo): asserts t is TensorInfo & { dtype: SafetensorsDtype } {
  if (!(t.dtype in BYTES)) {
    const what = KNOWN_OTHER.has(t.dtype) ? `dtype ${t.dtype} is not supported` : `unknown dtype ${JSON.stringify(t.dtype)}`;
    throw new WeightsFormatError(t.file, t.name, `${what}; duet loads F32, F16 or BF16 safetensors (convert the checkpoint, e.g. model.to(torch.bfloat16).save_pretrained)`);
  }
}

/**
 * Read one tensor (or elements [elemStart, elemStart + elemCount) of it) as f32. Reads
 * `chunkBytes` at a time and converts in place into the output, so the peak is the f32
 * result plus one chunk of raw bytes.
 */
export async function readTensorF32(
  f: SourceFile, t: TensorInfo, chunkBytes: number, onBytes?: (n: number) => void, elemStart = 0, elemCount?: number,
): Promise<Float32Array> {
  checkDtype(t);
  const bytesPer = BYTES[t.dtype];
  const numel = t.byteLength / bytesPer;
  const count = elemCount ?? numel - elemStart;
  if (elemStart < 0 || count < 0 || elemStart + count > numel) {
    throw new RangeError(`${t.name}: elements [${elemStart}, ${elemStart + count}) outside [0, ${numel})`);
  }
  const out = new Float32Array(count);
  const byteStart = t.offset + elemStart * bytesPer;
  const byteLength = count * bytesPer;
  const step = Math.max(4, chunkBytes - (chunkBytes % 4));
  for (let done = 0; done < byteLength; ) {
    const len = Math.min(step, byteLength - done);
    const bytes = await readOrExplain(f, byteStart + done, len, t.name);
    convertInto(out, done / bytesPer, bytes, t.dtype);
    done += len;
    onBytes?.(len);
  }
  return out;
}

let f16Table: Float32Array | null = null;

/** All 65536 half-precision values as f32 (256 kB, built once): exact, and faster than bit math per element. */
export function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (f16Table = t);
}

/** Convert raw little-endian bytes of `dtype` into out[at...]. */
export function convertInto(out: Float32Array, at: number, bytes: Uint8Array, dtype: SafetensorsDtype): void {
  if (dtype === 'F32') {
    // Copy first: the bytes may sit at an offset that is not 4-aligned.
    const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
    out.set(new Float32Array(aligned.buffer, aligned.byteOffset, bytes.length / 4), at);
    return;
  }
  const n = bytes.length >> 1;
  const u16 = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice().buffer, 0, n);
  if (dtype === 'BF16') {
    const u32 = new Uint32Array(out.buffer, out.byteOffset + at * 4, n);
    for (let i = 0; i < n; i++) u32[i] = u16[i] << 16;
  } else {
    const t = halfTable();
    for (let i = 0; i < n; i++) out[at + i] = t[u16[i]];
  }
}
