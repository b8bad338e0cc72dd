// Prepared-weights cache (IndexedDB through idb-keyval), so a reload neither refetches nor
// requantizes. One entry = a manifest plus one record per tensor (IndexedDB handles many
// medium values better than one multi-GB value, and a write can fail part-way). The
// manifest is written last and is the commit marker: an entry without it, or with a
// tensor missing (browser eviction), is a miss, and its remnants are removed.
// Keys: SHA-256 of model identity (source id, config.json, weight file sizes/versions) +
// weight format + CACHE_FORMAT_VERSION. Storage errors never break loading: put() reports
// why it could not store (quota) and the caller keeps its uncached weights.

import { createStore, get, set, delMany, keys, type UseStore } from 'idb-keyval';

/** Bump when the packed layout of any weight format changes: old entries stop matching. */
export const CACHE_FORMAT_VERSION = 1;

/** The few operations the cache needs; idbStore() in browsers, memoryStore() in Node/tests. */
export interface CacheStore {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<void>;
  del(keys: string[]): Promise<void>;
  keys(): Promise<string[]>;
}

export function idbStore(dbName = 'duet-weights', storeName = 'prepared'): CacheStore {
  const store: UseStore = createStore(dbName, storeName);
  return {
    get: (k) => get(k, store),
    set: (k, v) => set(k, v, store),
    del: (ks) => delMany(ks, store),
    keys: async () => (await keys(store)).map(String),
  };
}

/** In-memory store with IndexedDB's copy semantics (structured clone on write and read). */
export function memoryStore(): CacheStore & { map: Map<string, unknown> } {
  const map = new Map<string, unknown>();
  return {
    map,
    get: async (k) => (map.has(k) ? structuredClone(map.get(k)) : undefined),
    set: async (k, v) => void map.set(k, structuredClone(v)),
    del: async (ks) => ks.forEach((k) => map.delete(k)),
    keys: async () => [...map.keys()],
  };
}

export type TensorArray = Float32Array | Uint32Array | Uint16Array | Uint8Array | Int8Array;

export interface CachedTensor {
  name: string;
  data: TensorArray;
  /** small per-tensor facts the consumer needs to rebuild it (rows, cols, format, ...) */
  meta?: Record<string, unknown>;
}

export interface CacheEntryInfo {
  key: string;
  /** human name of the model, e.g. "tiny-draft" */
  name: string;
  /** weight format, e.g. "q4" */
  format: string;
  byteLength: number;
  tensorCount: number;
  savedAt: number;
}

interface Manifest extends CacheEntryInfo {
  kind: 'duet-prepared-weights';
  formatVersion: number;
  tensorNames: string[];
  meta: Record<string, unknown>;
}

export type Lookup =
  | { status: 'hit'; tensors: CachedTensor[]; meta: Record<string, unknown>; info: CacheEntryInfo }
  | { status: 'miss' }
  /** was there but is incomplete (browser evicted part of it) or unreadable; remnants removed */
  | { status: 'evicted'; reason: string };

export type PutResult = { stored: true; byteLength: number } | { stored: false; reason: string };

export interface ModelIdentity {
  /** ModelSource.id, e.g. url:https://host/models/tiny-draft/ */
  sourceId: string;
  /** config.json as parsed (hashed canonically) */
  configJson: unknown;
  /** weight files with size and, where known, etag/mtime */
  files: { name: string; byteLength: number; version?: string }[];
}

const PREFIX = 'duet:';
const manifestKey = (key: string) => `${PREFIX}${key}:manifest`;
const tensorKey = (key: string, i: number) => `${PREFIX}${key}:t${i}`;

/** JSON with object keys sorted, so equal configs hash equally whatever their key order. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

async function sha256Hex(text: string): Promise<string> {
  const d = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Cache key for a model prepared in `format`. */
export async function cacheKey(id: ModelIdentity, format: string, formatVersion = CACHE_FORMAT_VERSION): Promise<string> {
  const files = [...id.files].sort((a, b) => (a.name < b.name ? -1 : 1)).map((f) => [f.name, f.byteLength, f.version ?? null]);
  return sha256Hex(canonicalJson({ source: id.sourceId, config: id.configJson, files, format, formatVersion }));
}

function isQuotaError(err: unknown): boolean {
  const e = err as { name?: string; message?: string; inner?: { name?: string } };
  return e?.name === 'QuotaExceededError' || e?.name === 'NS_ERROR_DOM_QUOTA_REACHED' || e?.inner?.name === 'QuotaExceededError' || /quota/i.test(e?.message ?? '');
}

export class WeightsCache {
  constructor(private readonly store: CacheStore) {}

  async lookup(key: string): Promise<Lookup> {
    let m: Manifest | undefined;
    try {
      m = (await this.store.get(manifestKey(key))) as Manifest | undefined;
    } catch (err) {
      return { status: 'evicted', reason: `cache unreadable (${(err as Error).message}); loading without it` };
    }
    if (!m) return { status: 'miss' };
    if (m.kind !== 'duet-prepared-weights' || m.formatVersion !== CACHE_FORMAT_VERSION) {
      await this.delete(key);
      return { status: 'evicted', reason: `cache entry "${m.name}" has an old layout (version ${m.formatVersion}); rebuilding it` };
    }
    const tensors: CachedTensor[] = [];
    for (let i = 0; i < m.tensorNames.length; i++) {
      const t = (await this.store.get(tensorKey(key, i)).catch(() => undefined)) as CachedTensor | undefined;
      if (!t || t.name !== m.tensorNames[i] || !ArrayBuffer.isView(t.data)) {
        await this.delete(key);
        return { status: 'evicted', reason: `cached weights of "${m.name}" (${m.format}) were partly evicted by the browser (tensor ${m.tensorNames[i]} gone); reloading from the source` };
      }
      tensors.push(t);
    }
    return { status: 'hit', tensors, meta: m.meta, info: infoOf(m) };
  }

  /**
   * Store prepared tensors. Never throws for storage trouble: on QuotaExceededError (or any
   * write failure) the partial entry is removed and the reason returned, and the caller runs
   * on the weights it already has.
   */
  async put(key: string, info: { name: string; format: string; meta?: Record<string, unknown> }, tensors: CachedTensor[]): Promise<PutResult> {
    const byteLength = tensors.reduce((a, t) => a + t.data.byteLength, 0);
    try {
      await this.store.del([manifestKey(key)]); // an old manifest must not vouch for half-written tensors
      for (let i = 0; i < tensors.length; i++) await this.store.set(tensorKey(key, i), tensors[i]);
      const manifest: Manifest = {
        kind: 'duet-prepared-weights', formatVersion: CACHE_FORMAT_VERSION, key, name: info.name, format: info.format,
        byteLength, tensorCount: tensors.length, savedAt: Date.now(), tensorNames: tensors.map((t) => t.name), meta: info.meta ?? {},
      };
      await this.store.set(manifestKey(key), manifest);
      return { stored: true, byteLength };
    } catch (err) {
      await this.removeTensors(key).catch(() => undefined);
      const mb = (byteLength / 2 ** 20).toFixed(1);
      const reason = isQuotaError(err)
        ? `browser storage is full: could not cache ${mb} MiB of prepared weights for "${info.name}" (QuotaExceededError). The model runs uncached; delete cached models in the Models view or free site storage to cache it.`
        : `could not cache prepared weights for "${info.name}" (${(err as Error).name}: ${(err as Error).message}); the model runs uncached.`;
      return { stored: false, reason };
    }
  }

  async list(): Promise<CacheEntryInfo[]> {
    const out: CacheEntryInfo[] = [];
    for (const k of await this.store.keys()) {
      if (!k.startsWith(PREFIX) || !k.endsWith(':manifest')) continue;
      const m = (await this.store.get(k)) as Manifest | undefined;
      if (m?.kind === 'duet-prepared-weights') out.push(infoOf(m));
    }
    return out.sort((a, b) => b.savedAt - a.savedAt);
  }

  /** Bytes of all complete entries. */
  async size(): Promise<number> {
    return (await this.list()).reduce((a, e) => a + e.byteLength, 0);
  }

  async delete(key: string): Promise<void> {
    await this.store.del([manifestKey(key)]);
    await this.removeTensors(key);
  }

  /** Remove everything of ours, including remnants of interrupted writes. */
  async clear(): Promise<void> {
    await this.store.del((await this.store.keys()).filter((k) => k.startsWith(PREFIX)));
  }

  private async removeTensors(key: string): Promise<void> {
    const prefix = `${PREFIX}${key}:t`;
    await this.store.del((await this.store.keys()).filter((k) => k.startsWith(prefix)));
  }
}

function infoOf(m: Manifest): CacheEntryInfo {
  return { key: m.key, name: m.name, format: m.format, byteLength: m.byteLength, tensorCount: m.tensorCount, savedAt: m.savedAt };
}

/** Browser storage usage/quota where the platform reports it (null elsewhere). */
export async function storageEstimate(): Promise<{ usage: number; quota: number } | null> {
  const s = (globalThis.navigator as Navigator | undefined)?.storage;
  if (!s?.estimate) return null;
  const e = await s.estimate();
  return { usage: e.usage ?? 0, quota: e.quota ?? 0 };
}

export interface Prepared {
  tensors: CachedTensor[];
  meta: Record<string, unknown>;
  fromCache: boolean;
  /** something the user should know (eviction, quota), or null */
  notice: string | null;
}

/**
 * The load path callers use: a hit returns cached tensors; otherwise `build` prepares them
 * (fetch + quantize) and they are stored if possible. With no cache (IndexedDB missing or
 * blocked) it simply builds. Storage failures turn into a notice, never an error.
 */
export async function cachedPrepare(
  cache: WeightsCache | null, key: string, info: { name: string; format: string },
  build: () => Promise<{ tensors: CachedTensor[]; meta?: Record<string, unknown> }>,
): Promise<Prepared> {
  let notice: string | null = null;
  if (cache) {
    const hit = await cache.lookup(key);
    if (hit.status === 'hit') return { tensors: hit.tensors, meta: hit.meta, fromCache: true, notice: null };
    if (hit.status === 'evicted') notice = hit.reason;
  }
  const built = await build();
  if (cache) {
    const r = await cache.put(key, { ...info, meta: built.meta }, built.tensors);
    if (!r.stored) notice = notice ? `${notice}; ${r.reason}` : r.reason;
  }
  return { tensors: built.tensors, meta: built.meta ?? {}, fromCache: false, notice };
}
