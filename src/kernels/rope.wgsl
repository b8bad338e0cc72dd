// Rotary position embedding, HF convention (rotate_half), in place on M rows:
//   for row m at position p = startPos + m, head h, i < headDim/2, with a = x(m, h, i) and
//   b = x(m, h, i + headDim/2):
//     x(m, h, i)             = a * cos(p * invFreq(i)) - b * sin(p * invFreq(i))
//     x(m, h, i + headDim/2) = b * cos(p * invFreq(i)) + a * sin(p * invFreq(i))
// cos/sin come from a host table (maxPositions, headDim/2, 2) computed in f64 from the llama3-
// scaled invFreq (config.ts ropeInvFreq): WGSL's sin/cos are only specified on [-pi, pi],
// and p * invFreq reaches 1e5 rad at long contexts.
// Thread mapping: one thread per (m, h, i), flat index over M * nHeads * headDim/2 on a 2-D
// grid (gid.x + gid.y * num_workgroups.x * WG).
// Host constants: Params mirrors RopeParams in rope.ts (16 bytes); override WG.

override WG: u32 = 64;

struct Params {
  nHeads: u32,
  headDim: u32,
  startPos: u32,
  count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= params.count) {
    return;
  }
  let half = params.headDim / 2u;
  let i = idx % half;
  let rowHead = idx / half;
  let row = rowHead / params.nHeads;
  let base = rowHead * params.headDim;
  let t = ((params.startPos + row) * half + i) * 2u;
  let c = table[t];
  let s = table[t + 1u];
  let a = x[base + i];
  let b = x[base + i + half];
  x[base + i] = a * c - b * s;
  x[base + i + half] = b * c + a * s;
}
