// Activation access of the matmul kernels: binding 2 (`x`) and `fn x4(i)` = x[i .. i+3] as a
// vec4<f32>, for an f32 index i that is always a multiple of 4 plus the op's xOffset. The host
// appends one section: `vec4` (x bound as array<vec4<f32>>, one load per quad) when xOffset
// and xStride are multiples of 4 and the binding a multiple of 16 bytes, else `scalar` (four
// loads). On SwiftShader the x loads dominate the GEMV, and the vec4 form quarters them.
// xbase/xquad walk a run of quads with one index conversion (a shift costs ~10 ANDs on SwiftShader).

//#x scalar
@group(0) @binding(2) var<storage, read> x: array<f32>;
fn x4(i: u32) -> vec4<f32> {
  return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}
// Quad k after f32 index i, as xquad(xbase(i), k): one index conversion for a run of quads.
fn xbase(i: u32) -> u32 {
  return i;
}
fn xquad(q: u32, k: u32) -> vec4<f32> {
  return x4(q + 4u * k);
}

//#x vec4
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
fn x4(i: u32) -> vec4<f32> {
  return x[i >> 2u];
}
fn xbase(i: u32) -> u32 {
  return i >> 2u;
}
fn xquad(q: u32, k: u32) -> vec4<f32> {
  return x[q + k];
}
