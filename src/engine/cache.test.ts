// Cache tests on the injectable store interface (no IndexedDB in Node and no fake-indexeddb
// dependency): memoryStore() has IndexedDB's structured-clone semantics; wrappers inject a
// QuotaExceededError after N bytes and browser-style eviction of single records. The real
// IndexedDB path (idbStore) is exercised by the Playwright specs in Chromium.

import { describe, it, expect } from 'vitest';
import { WeightsCache, memoryStore, cacheKey, cachedPrepare, CACHE_FORMAT_VERSION, type CacheStore, type CachedTensor } from './cache.ts';

const tensors = (seed: number): CachedTensor[] => [
  { name: 'model.embed_tokens.weight', data: Uint32Array.from({ length: 997 }, (_, i) => (i * 2654435761 + seed) >>> 0), meta: { rows: 997, cols: 1, format: 'q4' } },
  { name: 'model.norm.weight', data: Float32Array.from({ length: 31 }, (_, i) => i / 7 + seed) },
  { name: 'model.layers.0.x', data: new Uint8Array([1, 2, 3]) },
];
const id = { sourceId: 'url:http://h/models/tiny/', configJson: { hidden_size: 64, vocab_size: 97 }, files: [{ name: 'model.safetensors', byteLength: 1234, version: '"etag1"' }] };

/** A store that throws QuotaExceededError (a DOMException, as browsers do) once `limit` bytes are held. */
function quotaStore(limit: number): CacheStore & { map: Map<string, unknown> } {
  const inner = memoryStore();
  const bytes = () => [...inner.map.values()].reduce((a: number, v) => a + ((v as CachedTensor)?.data?.byteLength ?? 64), 0);
  return {
    ...inner,
    async set(k, v) {
      if (bytes() + ((v as CachedTensor)?.data?.byteLength ?? 64) > limit) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      await inner.set(k, v);
    },
  };
}

describe('cacheKey', () => {
  it('depends on identity, format and format version, not on JSON key order', async () => {
    const k = await cacheKey(id, 'q4');
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(await cacheKey({ ...id, configJson: { vocab_size: 97, hidden_size: 64 } }, 'q4')).toBe(k);
    const others = await Promise.all([
      cacheKey(id, 'q8'),
      cacheKey(id, 'q4', CACHE_FORMAT_VERSION + 1),
      cacheKey({ ...id, sourceId: 'url:http://h/models/other/' }, 'q4'),
      cacheKey({ ...id, configJson: { hidden_size: 64, vocab_size: 98 } }, 'q4'),
      cacheKey({ ...id, files: [{ ...id.files[0], byteLength: 1235 }] }, 'q4'),
      cacheKey({ ...id, files: [{ ...id.files[0], version: '"etag2"' }] }, 'q4'),
    ]);
    expect(new Set([k, ...others]).size).toBe(others.length + 1);
  });
});

describe('WeightsCache', () => {
  it('round-trips tensors bit-exactly with their types; list / size / delete', async () => {
    const cache = new WeightsCache(memoryStore());
    const key = await cacheKey(id, 'q4');
    expect(await cache.lookup(key)).toEqual({ status: 'miss' });
    const put = await cache.put(key, { name: 'tiny', format: 'q4', meta: { vocab: 97 } }, tensors(1));
    expect(put).toEqual({ stored: true, byteLength: 997 * 4 + 31 * 4 + 3 });
    const hit = await cache.lookup(key);
    if (hit.status !== 'hit') throw new Error(`expected a hit, got ${hit.status}`);
    expect(hit.meta).toEqual({ vocab: 97 });
    hit.tensors.forEach((t, i) => {
      const want = tensors(1)[i];
      expect(t.name).toBe(want.name);
      expect(t.data.constructor).toBe(want.data.constructor);
      expect(t.data).toEqual(want.data);
      expect(t.meta).toEqual(want.meta);
    });
    const key2 = await cacheKey(id, 'q8');
    await cache.put(key2, { name: 'tiny', format: 'q8' }, tensors(2).slice(0, 1));
    const list = await cache.list();
    expect(list.map((e) => [e.format, e.byteLength, e.tensorCount])).toEqual(expect.arrayContaining([['q4', 4115, 3], ['q8', 3988, 1]]));
    expect(await cache.size()).toBe(4115 + 3988);
    await cache.delete(key);
    expect(await cache.lookup(key)).toEqual({ status: 'miss' });
    expect((await cache.list()).map((e) => e.key)).toEqual([key2]);
  });

  it('QuotaExceededError: clear message, partial entry removed, other entries intact', async () => {
    const store = quotaStore(5000);
    const cache = new WeightsCache(store);
    const small = await cacheKey(id, 'q8');
    expect((await cache.put(small, { name: 'tiny', format: 'q8' }, tensors(0).slice(1))).stored).toBe(true);
    const before = [...store.map.keys()];
    const big = await cacheKey(id, 'q4');
    const r = await cache.put(big, { name: 'tiny-draft', format: 'q4' }, [...tensors(1), { name: 'more', data: new Uint8Array(2000) }]);
    expect(r.stored).toBe(false);
    if (!r.stored) expect(r.reason).toMatch(/storage is full.*tiny-draft.*QuotaExceededError.*runs uncached/);
    expect([...store.map.keys()].sort()).toEqual(before.sort()); // no remnants
    expect(await cache.lookup(big)).toEqual({ status: 'miss' });
    expect((await cache.lookup(small)).status).toBe('hit');
  });

  it('eviction of one record turns a hit into "evicted" with a reason, and cleans up', async () => {
    const store = memoryStore();
    const cache = new WeightsCache(store);
    const key = await cacheKey(id, 'q4');
    await cache.put(key, { name: 'tiny', format: 'q4' }, tensors(1));
    const victim = [...store.map.keys()].find((k) => k.endsWith(':t1'))!;
    store.map.delete(victim);
    const r = await cache.lookup(key);
    expect(r.status).toBe('evicted');
    if (r.status === 'evicted') expect(r.reason).toMatch(/evicted.*model.norm.weight.*reloading/);
    expect([...store.map.keys()].filter((k) => k.includes(key))).toEqual([]);
  });

  it('an entry from an older layout version is dropped', async () => {
    const store = memoryStore();
    const cache = new WeightsCache(store);
    await cache.put('k', { name: 'tiny', format: 'q4' }, tensors(1));
    const mk = [...store.map.keys()].find((k) => k.endsWith(':manifest'))!;
    store.map.set(mk, { ...(store.map.get(mk) as object), formatVersion: CACHE_FORMAT_VERSION - 1 });
    expect((await cache.lookup('k')).status).toBe('evicted');
    expect(store.map.size).toBe(0);
  });
});

describe('cachedPrepare', () => {
  it('builds once, then hits; quota failure still returns working weights with a notice', async () => {
    let builds = 0;
    const build = async () => {
      builds++;
      return { tensors: tensors(3), meta: { n: 3 } };
    };
    const cache = new WeightsCache(memoryStore());
    const a = await cachedPrepare(cache, 'k', { name: 'tiny', format: 'q4' }, build);
    const b = await cachedPrepare(cache, 'k', { name: 'tiny', format: 'q4' }, build);
    expect([a.fromCache, b.fromCache, builds, a.notice, b.notice]).toEqual([false, true, 1, null, null]);
    expect(b.tensors.map((t) => t.data)).toEqual(a.tensors.map((t) => t.data));
    expect(b.meta).toEqual({ n: 3 });

    const full = await cachedPrepare(new WeightsCache(quotaStore(100)), 'k', { name: 'tiny', format: 'q4' }, build);
    expect(full.fromCache).toBe(false);
    expect(full.tensors).toEqual(tensors(3));
    expect(full.notice).toMatch(/storage is full/);

    const none = await cachedPrepare(null, 'k', { name: 'tiny', format: 'q4' }, build);
    expect([none.fromCache, none.notice, builds]).toEqual([false, null, 3]);
  });
});
