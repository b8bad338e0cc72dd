// Where model files come from. A ModelSource hands out random-access files; the safetensors
// and GGUF readers ask for one tensor's bytes at a time, so no source ever holds a second
// full copy of a multi-GB file. Three sources: a URL base (HTTP Range, else a streamed
// body read forward), a folder the user picked in the browser (File objects), and a Node
// directory (node-source.ts, kept apart so browser bundles never import node:fs).

import { ModelSourceError } from './errors.ts';

export interface SourceFile {
  readonly name: string;
  /** Total size in bytes; NaN when a server streams a body without Content-Length. */
  readonly byteLength: number;
  /** Exactly `length` bytes starting at `offset`; ShortReadError if the file ends first. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export interface FileStat {
  byteLength: number;
  /** etag / last-modified / mtime where the source knows one: part of the cache key. */
  version?: string;
}

export interface ModelSource {
  /** Stable identity of the model location, e.g. "dir:/models/x", "url:https://h/m/". */
  readonly id: string;
  /** Text of a small file (config.json, ...); null when the source has no such file. */
  readText(name: string): Promise<string | null>;
  stat(name: string): Promise<FileStat | null>;
  /** Open for ranged reads; ModelSourceError when absent. */
  open(name: string): Promise<SourceFile>;
  /** Bytes per read the source prefers (larger for HTTP to amortise request latency). */
  readonly chunkBytes: number;
}

/** The file ended before the requested range: a truncated download or a corrupt header. */
export class ShortReadError extends ModelSourceError {
  override name = 'ShortReadError';
  constructor(file: string, readonly offset: number, readonly wanted: number, readonly endedAt: number) {
    super(file, `file ends at byte ${endedAt}, but bytes [${offset}, ${offset + wanted}) were needed (truncated download?)`);
  }
}

// ---------------------------------------------------------------- URL base

export interface UrlSourceOptions {
  fetch?: typeof fetch;
  /** Extra request headers (e.g. an auth token for a private gateway). */
  headers?: Record<string, string>;
  /** Give up when the server sends nothing (headers or body bytes) for this long. Default 60 s. */
  stallTimeoutMs?: number;
}

/** A response whose body is read with a stall timer: no bytes for stallMs → abort. */
interface Fetched {
  res: Response;
  abort: () => void;
}

/** Next chunk of a body, or a ModelSourceError when the server stalls or the connection drops. */
async function nextChunk(reader: ReadableStreamDefaultReader<Uint8Array>, f: Fetched, file: string, stallMs: number, at: number): Promise<ReadableStreamReadResult<Uint8Array>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stall = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      // reject before aborting: the abort also rejects the pending read, and the stall is the cause
      reject(new ModelSourceError(file, `server sent no data for ${stallMs / 1000} s at byte ${at}; check the connection and retry`));
      f.abort();
    }, stallMs);
  });
  try {
    return await Promise.race([reader.read(), stall]);
  } catch (err) {
    if (err instanceof ModelSourceError) throw err;
    throw new ModelSourceError(file, `connection lost at byte ${at} (${(err as Error).message}); retry the load`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Files under a URL base: `${base}/${name}`. Uses HTTP Range requests when the server
 * answers 206; when it ignores Range (200), the body is consumed forward as a stream, which
 * suits the loaders since they read tensors in file order.
 */
export class UrlSource implements ModelSource {
  readonly id: string;
  readonly chunkBytes = 64 << 20;
  private readonly base: string;
  private readonly fetchFn: typeof fetch;
  private readonly headers: Record<string, string>;
  private readonly stallMs: number;

  constructor(base: string, opts: UrlSourceOptions = {}) {
    this.base = base.endsWith('/') ? base : base + '/';
    this.id = 'url:' + this.base;
    this.fetchFn = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.headers = opts.headers ?? {};
    this.stallMs = opts.stallTimeoutMs ?? 60_000;
  }

  url(name: string): string {
    return new URL(name, this.base).toString();
  }

  private async get(name: string, init: RequestInit = {}): Promise<Response> {
    return (await this.fetchWithStall(name, init)).res;
  }

  private async fetchWithStall(name: string, init: RequestInit = {}): Promise<Fetched> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.stallMs);
    try {
      const res = await this.fetchFn(this.url(name), { ...init, signal: ctl.signal, headers: { ...this.headers, ...(init.headers as Record<string, string>) } });
      return { res, abort: () => ctl.abort() };
    } catch (err) {
      const why = ctl.signal.aborted ? `no response within ${this.stallMs / 1000} s` : (err as Error).message;
      throw new ModelSourceError(name, `fetch ${this.url(name)} failed: ${why}; is the server reachable?`);
    } finally {
      clearTimeout(timer);
    }
  }

  async readText(name: string): Promise<string | null> {
    const res = await this.get(name);
    if (res.status === 404) return null;
    if (!res.ok) throw new ModelSourceError(name, `HTTP ${res.status} from ${this.url(name)}`);
    return res.text();
  }

  async stat(name: string): Promise<FileStat | null> {
    const res = await this.get(name, { method: 'HEAD' });
    if (res.status === 404) return null;
    if (!res.ok) throw new ModelSourceError(name, `HTTP ${res.status} from ${this.url(name)}`);
    const len = Number(res.headers.get('content-length') ?? NaN);
    const version = res.headers.get('etag') ?? res.headers.get('last-modified') ?? undefined;
    return { byteLength: len, version };
  }

  async open(name: string): Promise<SourceFile> {
    // Probe with a one-byte range: 206 tells us Range works and (Content-Range) the size.
    const res = await this.get(name, { headers: { Range: 'bytes=0-0' } });
    if (res.status === 404) throw new ModelSourceError(name, `not found at ${this.url(name)}`);
    const ranged = (range: string) => this.fetchWithStall(name, { headers: { Range: range } });
    if (res.status === 206) {
      await res.body?.cancel();
      const total = Number(/\/(\d+)\s*$/.exec(res.headers.get('content-range') ?? '')?.[1] ?? NaN);
      return new RangeFile(name, total, ranged, this.stallMs);
    }
    if (res.status === 416) {
      await res.body?.cancel();
      return new RangeFile(name, 0, ranged, this.stallMs);
    }
    if (!res.ok) throw new ModelSourceError(name, `HTTP ${res.status} from ${this.url(name)}`);
    await res.body?.cancel();
    // Range ignored: read the whole body forward (a fresh request, so the stall timer covers it).
    return new StreamFile(name, await this.fetchWithStall(name), () => this.fetchWithStall(name), this.stallMs);
  }
}

class RangeFile implements SourceFile {
  constructor(
    readonly name: string,
    readonly byteLength: number,
    private readonly fetchRange: (range: string) => Promise<Fetched>,
    private readonly stallMs: number,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    if (Number.isFinite(this.byteLength) && offset + length > this.byteLength) {
      throw new ShortReadError(this.name, offset, length, this.byteLength);
    }
    const f = await this.fetchRange(`bytes=${offset}-${offset + length - 1}`);
    const { res } = f;
    if (res.status !== 206 && res.status !== 200) {
      await res.body?.cancel();
      throw new ModelSourceError(this.name, `HTTP ${res.status} for bytes ${offset}+${length}`);
    }
    // A 200 means the server now ignores Range: skip to our slice of the full body.
    const skip = res.status === 200 ? offset : 0;
    if (!res.body) throw new ModelSourceError(this.name, 'response has no body');
    const reader = res.body.getReader();
    const out = new Uint8Array(length);
    let pos = 0; // bytes of the body seen
    while (pos < skip + length) {
      const { done, value } = await nextChunk(reader, f, this.name, this.stallMs, offset - skip + pos);
      if (done) throw new ShortReadError(this.name, offset, length, offset - skip + pos);
      const from = Math.max(0, skip - pos);
      const take = Math.min(value.length - from, skip + length - pos - from);
      if (take > 0) out.set(value.subarray(from, from + take), pos + from - skip);
      pos += value.length;
    }
    await reader.cancel().catch(() => undefined);
    return out;
  }

  async close(): Promise<void> {}
}

/** A body read strictly forward; a backward read re-requests the file from the start. */
class StreamFile implements SourceFile {
  readonly byteLength: number;
  private reader: ReadableStreamDefaultReader<Uint8Array>;
  private pos = 0; // file offset of pending[0]
  private pending: Uint8Array = new Uint8Array(0);

  constructor(readonly name: string, private current: Fetched, private readonly refetch: () => Promise<Fetched>, private readonly stallMs: number) {
    this.byteLength = Number(current.res.headers.get('content-length') ?? NaN);
    this.reader = this.readerOf(current.res);
  }

  private readerOf(res: Response): ReadableStreamDefaultReader<Uint8Array> {
    if (!res.body) throw new ModelSourceError(this.name, 'response has no body');
    return res.body.getReader();
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < this.pos) {
      await this.reader.cancel().catch(() => undefined);
      this.current = await this.refetch();
      if (!this.current.res.ok) throw new ModelSourceError(this.name, `HTTP ${this.current.res.status} on re-request`);
      this.reader = this.readerOf(this.current.res);
      this.pos = 0;
      this.pending = new Uint8Array(0);
    }
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      if (this.pending.length === 0) {
        const { done, value } = await nextChunk(this.reader, this.current, this.name, this.stallMs, this.pos);
        if (done) throw new ShortReadError(this.name, offset, length, this.pos);
        this.pending = value;
      }
      const skip = Math.max(0, offset - this.pos);
      if (skip >= this.pending.length) {
        this.pos += this.pending.length;
        this.pending = new Uint8Array(0);
        continue;
      }
      const take = Math.min(this.pending.length - skip, length - filled);
      out.set(this.pending.subarray(skip, skip + take), filled);
      filled += take;
      this.pos += skip + take;
      this.pending = this.pending.subarray(skip + take);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.reader.cancel().catch(() => undefined);
  }
}

// ---------------------------------------------------------------- browser folder

/**
 * A folder picked in the browser (`<input webkitdirectory>` or showDirectoryPicker's
 * files). Names are paths relative to the picked folder: the first path segment of
 * webkitRelativePath is the folder itself and is dropped.
 */
export class FolderSource implements ModelSource {
  readonly id: string;
  readonly chunkBytes = 32 << 20;
  private readonly files = new Map<string, File>();

  constructor(files: Iterable<File>, folderName?: string) {
    let first = '';
    for (const f of files) {
      const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
      const parts = rel.split('/');
      if (parts.length > 1) first ||= parts[0];
      this.files.set(parts.length > 1 ? parts.slice(1).join('/') : rel, f);
    }
    this.id = 'folder:' + (folderName ?? (first || 'picked'));
  }

  names(): string[] {
    return [...this.files.keys()];
  }

  async readText(name: string): Promise<string | null> {
    const f = this.files.get(name);
    return f ? f.text() : null;
  }

  async stat(name: string): Promise<FileStat | null> {
    const f = this.files.get(name);
    return f ? { byteLength: f.size, version: String(f.lastModified) } : null;
  }

  async open(name: string): Promise<SourceFile> {
    const f = this.files.get(name);
    if (!f) throw new ModelSourceError(name, `not in the picked folder (has: ${this.names().join(', ')})`);
    return {
      name,
      byteLength: f.size,
      async read(offset: number, length: number): Promise<Uint8Array> {
        if (offset + length > f.size) throw new ShortReadError(name, offset, length, f.size);
        return new Uint8Array(await f.slice(offset, offset + length).arrayBuffer());
      },
      async close(): Promise<void> {},
    };
  }
}

// ---------------------------------------------------------------- progress

export interface LoadProgress {
  /** File being read now. */
  file: string;
  /** Bytes read so far across all weight files of the model. */
  loadedBytes: number;
  /** Sum of the weight files' sizes (NaN if a server did not say). */
  totalBytes: number;
  bytesPerSec: number;
  /** Seconds left at the current rate; NaN when unknown. */
  etaSec: number;
}

export type ProgressFn = (p: LoadProgress) => void;

/** Counts bytes as reads complete and reports rate and ETA, at most every `minIntervalMs`. */
export class ProgressTracker {
  private loaded = 0;
  private readonly t0 = performance.now();
  private lastEmit = -Infinity;

  constructor(private readonly totalBytes: number, private readonly onProgress?: ProgressFn, private readonly minIntervalMs = 100) {}

  add(file: string, bytes: number, force = false): void {
    this.loaded += bytes;
    if (!this.onProgress) return;
    const now = performance.now();
    if (!force && now - this.lastEmit < this.minIntervalMs && this.loaded < this.totalBytes) return;
    this.lastEmit = now;
    const sec = Math.max(1e-3, (now - this.t0) / 1000);
    const bytesPerSec = this.loaded / sec;
    const etaSec = Number.isFinite(this.totalBytes) && bytesPerSec > 0 ? Math.max(0, this.totalBytes - this.loaded) / bytesPerSec : NaN;
    this.onProgress({ file, loadedBytes: this.loaded, totalBytes: this.totalBytes, bytesPerSec, etaSec });
  }

  get loadedBytes(): number {
    return this.loaded;
  }
}
