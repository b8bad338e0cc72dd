// Activation access of the matmul kernels: binding 2 (`x`) and `fn x4(i)` = x[i .. i+3] as a
// vec4<f32>, for an f32 index i that is always a multiple of 4 plus the op's xOffset. A kernel
// includes one section (matmul_x.wgsl:{x}): `vec4` (x bound as array<vec4<f32>>, one load per quad) when xOffset
// and xStride are multiples of 4 and the binding a multiple of 16 bytes, else `scalar` (four
// loads). On SwiftShader the x loads dominate the GEMV, and the vec4 form quarters them.
// xbase/xquad walk a run of quads with one index conversion (a shift costs ~10 ANDs on SwiftShader).
// `glu` / `gluvec4`: x holds gate | up per token (the fused gate/up projection; up starts XUP
// floats after gate) and the matmul reads silu(gate) * up, the SwiGLU of the FFN, as it loads x:
// the down projection needs no separate swiglu pass. Same expression as swiglu.wgsl.

//#section scalar
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

//#section vec4
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

//#section glu
@group(0) @binding(2) var<storage, read> x: array<f32>;
override XUP: u32 = 0u;
fn glu4(g: vec4<f32>, u: vec4<f32>) -> vec4<f32> {
  // min() keeps exp finite for very negative g (WGSL leaves overflow to inf unspecified).
  return g / (vec4<f32>(1.0) + exp(min(-g, vec4<f32>(80.0)))) * u;
}
fn x4(i: u32) -> vec4<f32> {
  let j = i + XUP;
  return glu4(vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]), vec4<f32>(x[j], x[j + 1u], x[j + 2u], x[j + 3u]));
}
fn xbase(i: u32) -> u32 {
  return i;
}
fn xquad(q: u32, k: u32) -> vec4<f32> {
  return x4(q + 4u * k);
}

//#section gluvec4
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
override XUP: u32 = 0u;
fn glu4(g: vec4<f32>, u: vec4<f32>) -> vec4<f32> {
  return g / (vec4<f32>(1.0) + exp(min(-g, vec4<f32>(80.0)))) * u;
}
fn x4(i: u32) -> vec4<f32> {
  return glu4(x[i >> 2u], x[(i + XUP) >> 2u]);
}
fn xbase(i: u32) -> u32 {
  return i >> 2u;
}
fn xquad(q: u32, k: u32) -> vec4<f32> {
  return glu4(x[q + k], x[q + k + XUP / 4u]);
}
