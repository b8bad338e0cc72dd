// Causal GQA attention of M query rows over one layer's KV cache:
//   for row m (position p = startPos + m), query head h, kv head g = h / (nHeads / nKvHeads):
//     s(t)       = scale * sum_i q(m, h, i) * K(t, g, i)          for t in [0, p]
//     out(m,h,:) = sum_t softmax(s)(t) * V(t, g, :)
// The cache already holds this block's K/V (kvwrite runs first), so causality inside the
// block is just t <= p. Softmax is online (flash style): keys are taken in tiles of WG; a
// running max mx, normalizer l and accumulator are rescaled by exp(mx_old - mx_new) per
// tile, so any context length works with O(WG + headDim) workgroup memory.
// Rows: query row m is q row rowOffset + m (qStride floats per q row: the fused q|k|v
// projection of a batch of sessions) and out row rowOffset + m (nHeads*headDim per row).
// Thread mapping: one workgroup per (h, m): dispatch (nHeads, M). In a tile, thread j scores
// key t0 + j; then every thread owns output dims d = lid + c*WG (c < DPT) and sums the tile's
// probabilities times V(t, g, d) (adjacent threads read adjacent V words).
// The caches are u32 words: f16 pairs (KV_F16, element 2j in the low half) or f32 bits.
// Host constants: Params mirrors AttentionParams in attention.ts (32 bytes); overrides WG
// (key tile, also the workgroup size) and KV_F16; headDim <= min(MAX_HEAD_DIM, DPT*WG).

override WG: u32 = 64;
override KV_F16: bool = false;
const MAX_HEAD_DIM: u32 = 256u;
const DPT: u32 = 4u;
// Finite stand-in for -inf: WGSL leaves exp(-inf) and inf arithmetic unspecified.
const NEG_BIG: f32 = -1e30;

struct Params {
  nHeads: u32,
  nKvHeads: u32,
  headDim: u32,
  startPos: u32,
  scale: f32,
  rowOffset: u32,
  qStride: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kCache: array<u32>;
@group(0) @binding(3) var<storage, read> vCache: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> scores: array<f32, WG>;
var<workgroup> probs: array<f32, WG>;

fn loadV(e: u32) -> f32 {
  if (KV_F16) {
    let p = unpack2x16float(vCache[e >> 1u]);
    return select(p.x, p.y, (e & 1u) == 1u);
  }
  return bitcast<f32>(vCache[e]);
}

/** q(m, h, :) . K(t, g, :), with K's row starting at element kBase (even). */
fn dotK(kBase: u32, headDim: u32) -> f32 {
  var s = 0.0;
  if (KV_F16) {
    let w0 = kBase >> 1u;
    for (var j = 0u; j < headDim / 2u; j++) {
      let p = unpack2x16float(kCache[w0 + j]);
      s += qs[2u * j] * p.x + qs[2u * j + 1u] * p.y;
    }
  } else {
    for (var i = 0u; i < headDim; i++) {
      s += qs[i] * bitcast<f32>(kCache[kBase + i]);
    }
  }
  return s;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let row = wid.y;
  let hd = params.headDim;
  let kvDim = params.nKvHeads * hd;
  let g = h / (params.nHeads / params.nKvHeads);
  let last = params.startPos + row;
  let qBase = (params.rowOffset + row) * params.qStride + h * hd;
  let outBase = ((params.rowOffset + row) * params.nHeads + h) * hd;
  for (var i = lid; i < hd; i += WG) {
    qs[i] = q[qBase + i];
  }
  workgroupBarrier();

  var mx = NEG_BIG;
  var l = 0.0;
  var acc = array<f32, DPT>(0.0, 0.0, 0.0, 0.0);
  let nTiles = last / WG + 1u;
  for (var tile = 0u; tile < nTiles; tile++) {
    let t0 = tile * WG;
    let t = t0 + lid;
    var s = NEG_BIG;
    if (t <= last) {
      s = dotK(t * kvDim + g * hd, hd) * params.scale;
    }
    scores[lid] = s;
    workgroupBarrier();
    var tmax = mx;
    for (var j = 0u; j < WG; j++) {
      tmax = max(tmax, scores[j]);
    }
    probs[lid] = exp(s - tmax);
    workgroupBarrier();
    let corr = exp(mx - tmax);
    let valid = min(WG, last + 1u - t0);
    var psum = 0.0;
    for (var j = 0u; j < valid; j++) {
      psum += probs[j];
    }
    l = l * corr + psum;
    for (var c = 0u; c < DPT; c++) {
      let d = lid + c * WG;
      if (d < hd) {
        var a = acc[c] * corr;
        for (var j = 0u; j < valid; j++) {
          a += probs[j] * loadV((t0 + j) * kvDim + g * hd + d);
        }
        acc[c] = a;
      }
    }
    mx = tmax;
  }
  for (var c = 0u; c < DPT; c++) {
    let d = lid + c * WG;
    if (d < hd) {
      out[outBase + d] = acc[c] / l;
    }
  }
}
