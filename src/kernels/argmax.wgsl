// Greedy token per row:  ids(m) = argmax_j logits(m, j), j < vocab; ties go to the lowest j,
// NaN never wins (a row of only NaN gives 0xffffffff).
// Thread mapping: one workgroup per row (dispatch (M, 1, 1)); each thread scans a stride of
// the row keeping (value, index), then a tree reduction in workgroup memory.
// Host constants: Params mirrors ArgmaxParams in argmax.ts (16 bytes); override WG (power of 2).

override WG: u32 = 256;
const NONE: u32 = 0xffffffffu;

struct Params {
  vocab: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;

var<workgroup> bestV: array<f32, WG>;
var<workgroup> bestI: array<u32, WG>;

fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  if (i == NONE) {
    return false;
  }
  return bi == NONE || v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * params.vocab;
  var bv = 0.0;
  var bi = NONE;
  for (var j = lid; j < params.vocab; j += WG) {
    let v = logits[base + j];
    // v != v: NaN is skipped.
    if (v == v && better(v, j, bv, bi)) {
      bv = v;
      bi = j;
    }
  }
  bestV[lid] = bv;
  bestI[lid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s && better(bestV[lid + s], bestI[lid + s], bestV[lid], bestI[lid])) {
      bestV[lid] = bestV[lid + s];
      bestI[lid] = bestI[lid + s];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    ids[wid.x] = bestI[0];
  }
}
