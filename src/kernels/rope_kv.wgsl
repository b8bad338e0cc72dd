// RoPE on q and k fused with the KV-cache write, for the rows of ONE session inside a batch:
//   rows r = rowOffset .. rowOffset + M - 1 of the fused projection qkv (rowStride floats per
//   row: q at column 0, k at column qDim, v at qDim + kvDim), row m at position p = startPos + m:
//     q(r, h, :) = rope_p(q(r, h, :))                          in place, h < nHeads
//     kCache(p, :) = rope_p(k(r, :)),  vCache(p, :) = v(r, :)   k itself is left unrotated
//   rope_p, HF rotate_half: for i < headDim/2, a = x(i), b = x(i + headDim/2),
//     x(i) = a cos(p f_i) - b sin(p f_i),  x(i + headDim/2) = b cos(p f_i) + a sin(p f_i)
//   with cos/sin from the host table (maxPositions, headDim/2, 2) (see rope.wgsl for why).
// One dispatch replaces rope(q), rope(k) and kvwrite; the arithmetic per element is the same.
// Thread mapping: flat over M * (nHeads * headDim/2 + wordsPerRow) on a 2-D grid: per row,
// the first nHeads*headDim/2 threads rotate one q pair each, the next wordsPerRow threads
// write one cache word each (two elements with KV_F16, each rotated from its own partner).
// Host constants: Params mirrors RopeKvParams in rope_kv.ts (32 bytes); overrides WG, KV_F16.

override WG: u32 = 64;
override KV_F16: bool = false;

struct Params {
  nHeads: u32,
  nKvHeads: u32,
  headDim: u32,
  startPos: u32,
  rowOffset: u32,
  rowStride: u32,
  count: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> kCache: array<u32>;
@group(0) @binding(4) var<storage, read_write> vCache: array<u32>;

// Element e of this row's rotated k (k starts at f32 index kBase), at table row t0.
fn kRot(kBase: u32, e: u32, t0: u32) -> f32 {
  let hd = params.headDim;
  let half = hd / 2u;
  let i = e % hd;
  let head = e - i;
  if (i < half) {
    let c = table[t0 + 2u * i];
    let s = table[t0 + 2u * i + 1u];
    return qkv[kBase + e] * c - qkv[kBase + head + i + half] * s;
  }
  let j = i - half;
  let c = table[t0 + 2u * j];
  let s = table[t0 + 2u * j + 1u];
  return qkv[kBase + e] * c + qkv[kBase + head + j] * s;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= params.count) {
    return;
  }
  let hd = params.headDim;
  let half = hd / 2u;
  let qDim = params.nHeads * hd;
  let kvDim = params.nKvHeads * hd;
  let qPairs = params.nHeads * half;
  let words = select(kvDim, kvDim / 2u, KV_F16);
  let perRow = qPairs + words;
  let m = idx / perRow;
  let j = idx % perRow;
  let pos = params.startPos + m;
  let t0 = pos * half * 2u;
  let rowBase = (params.rowOffset + m) * params.rowStride;
  if (j < qPairs) {
    let i = j % half;
    let base = rowBase + (j / half) * hd;
    let c = table[t0 + 2u * i];
    let s = table[t0 + 2u * i + 1u];
    let a = qkv[base + i];
    let b = qkv[base + i + half];
    qkv[base + i] = a * c - b * s;
    qkv[base + i + half] = b * c + a * s;
    return;
  }
  let w = j - qPairs;
  let kBase = rowBase + qDim;
  let vBase = kBase + kvDim;
  let dst = pos * words + w;
  if (KV_F16) {
    let e = 2u * w;
    kCache[dst] = pack2x16float(vec2<f32>(kRot(kBase, e, t0), kRot(kBase, e + 1u, t0)));
    vCache[dst] = pack2x16float(vec2<f32>(qkv[vBase + e], qkv[vBase + e + 1u]));
  } else {
    kCache[dst] = bitcast<u32>(kRot(kBase, w, t0));
    vCache[dst] = bitcast<u32>(qkv[vBase + w]);
  }
}
