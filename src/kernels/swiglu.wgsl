// SwiGLU gate, in place on the gate projection:
//   gate(m, j) = silu(gate(m, j)) * up(m, j),  silu(g) = g / (1 + exp(-g))
// Thread mapping: one thread per element, flat over count = M * hidden on a 2-D grid.
// Host constants: Params mirrors SwigluParams in swiglu.ts (16 bytes); override WG.

override WG: u32 = 256;

struct Params {
  count: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= params.count) {
    return;
  }
  let g = gate[idx];
  // min() keeps exp finite for very negative g (WGSL leaves overflow to inf unspecified).
  gate[idx] = g / (1.0 + exp(min(-g, 80.0))) * up[idx];
}
