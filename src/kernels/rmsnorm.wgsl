// RMSNorm over M rows:
//   out(m, n) = x(m, n) * w(n) / sqrt(sum_j x(m, j)^2 / n + eps)
// Thread mapping: one workgroup per row (dispatch (M, 1, 1)); the WG threads stride over the
// row, the sum of squares is reduced in workgroup memory, then each thread scales its stride.
// Host constants: Params mirrors RmsnormParams in rmsnorm.ts (16 bytes); override WG is the
// workgroup size (a power of two), set by the host.

override WG: u32 = 256;

struct Params {
  n: u32,
  eps: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = params.n;
  let base = wid.x * n;
  var ss = 0.0;
  for (var i = lid; i < n; i += WG) {
    let v = x[base + i];
    ss += v * v;
  }
  partial[lid] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      partial[lid] += partial[lid + s];
    }
    workgroupBarrier();
  }
  let scale = inverseSqrt(partial[0] / f32(n) + params.eps);
  for (var i = lid; i < n; i += WG) {
    out[base + i] = x[base + i] * scale * w[i];
  }
}
