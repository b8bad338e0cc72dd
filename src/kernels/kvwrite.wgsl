// KV-cache write: copy this block's K and V rows into the cache at positions startPos..
//   kCache(startPos + m, :) = k(m, :),  vCache(startPos + m, :) = v(m, :)   for m < M
// The caches are u32 words: with KV_F16 each word packs two f16 (pack2x16float, element 2j in
// the low half), a row is kvDim/2 words; otherwise a word is an f32 bit pattern, kvDim words.
// Thread mapping: one thread per (m, word), flat over M * wordsPerRow on a 2-D grid.
// Host constants: Params mirrors KvWriteParams in kvwrite.ts (16 bytes); overrides WG, KV_F16.

override WG: u32 = 64;
override KV_F16: bool = false;

struct Params {
  kvDim: u32,
  startPos: u32,
  count: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> kCache: array<u32>;
@group(0) @binding(4) var<storage, read_write> vCache: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= params.count) {
    return;
  }
  if (KV_F16) {
    let words = params.kvDim / 2u;
    let dst = params.startPos * words + idx;
    let src = idx * 2u;
    kCache[dst] = pack2x16float(vec2<f32>(k[src], k[src + 1u]));
    vCache[dst] = pack2x16float(vec2<f32>(v[src], v[src + 1u]));
  } else {
    let dst = params.startPos * params.kvDim + idx;
    kCache[dst] = bitcast<u32>(k[idx]);
    vCache[dst] = bitcast<u32>(v[idx]);
  }
}
