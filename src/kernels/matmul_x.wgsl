// Activation access of the matmul kernels: binding 2 (`x`) and `fn x4(i)` = x[i .. i+3] as a
// vec4<f32>, for an f32 index i that is always a multiple of 4 plus the op's xOffset. The host
// appends one section: `vec4` (x bound as array<vec4<f32>>, one load per quad) when xOffset
// and xStride are multiples of 4 and the binding a multiple of 16 bytes, else `scalar` (four
// loads). On SwiftShader the x loads dominate the GEMV, and the vec4 form quarters them.

//#x scalar
@group(0) @binding(2) var<storage, read> x: array<f32>;
fn x4(i: u32) -> vec4<f32> {
  return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

//#x vec4
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
fn x4(i: u32) -> vec4<f32> {
  return x[i >> 2u];
}
