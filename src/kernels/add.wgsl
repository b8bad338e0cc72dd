// Residual add, in place:  x(i) += y(i)  for i < count (count = M * dim).
// Thread mapping: one thread per element, flat over count on a 2-D grid.
// Host constants: Params mirrors AddParams in add.ts (16 bytes); override WG.

override WG: u32 = 256;

struct Params {
  count: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= params.count) {
    return;
  }
  x[idx] += y[idx];
}
