// Per-block helpers shared by the two decode GEMVs (matmul_gemv.wgsl, matmul_gemv_rows.wgsl):
// one 32-column x slice as eight vec4s (XBlock), masked past `cols`, pre-scaled by the format's
// XSCALE with QOFF·sum(x) (XPrep), and the dot of a decoded weight Block with it (dotb).
// The host appends this file after the kernel; it uses the kernel's `p` (Params: cols,
// fullBlocks), matmul_x.wgsl's x4, and matmul_decode.wgsl's Block / XSCALE / QOFF.
struct XBlock {
  v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
  v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
}

// Columns past `cols` are zeroed: their weights are 0, but x there may hold anything (NaN·0 = NaN).
fn x4m(i: u32, col: u32) -> vec4<f32> {
  let live = vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols);
  return select(vec4<f32>(0.0), x4(i), live);
}

fn load_x(base: u32, b: u32) -> XBlock {
  let i = base + 32u * b;
  if (b < p.fullBlocks) {
    return XBlock(x4(i), x4(i + 4u), x4(i + 8u), x4(i + 12u), x4(i + 16u), x4(i + 20u), x4(i + 24u), x4(i + 28u));
  }
  let c = 32u * b;
  return XBlock(x4m(i, c), x4m(i + 4u, c + 4u), x4m(i + 8u, c + 8u), x4m(i + 12u, c + 12u),
                x4m(i + 16u, c + 16u), x4m(i + 20u, c + 20u), x4m(i + 24u, c + 24u), x4m(i + 28u, c + 28u));
}

// x slice pre-multiplied by the format's XSCALE, and QOFF·sum(x) (see matmul_decode.wgsl).
struct XPrep {
  a: XBlock,
  off: f32,
}

fn prep_x(a: XBlock) -> XPrep {
  let s = a.v0 + a.v1 + a.v2 + a.v3 + a.v4 + a.v5 + a.v6 + a.v7;
  return XPrep(XBlock(a.v0 * XSCALE, a.v1 * XSCALE, a.v2 * XSCALE, a.v3 * XSCALE,
                      a.v4 * XSCALE, a.v5 * XSCALE, a.v6 * XSCALE, a.v7 * XSCALE),
               QOFF * dot(s, vec4<f32>(1.0)));
}

fn dotb(k: Block, x: XPrep) -> f32 {
  let a = x.a;
  return k.s * (dot(k.v0, a.v0) + dot(k.v1, a.v1) + dot(k.v2, a.v2) + dot(k.v3, a.v3) +
                dot(k.v4, a.v4) + dot(k.v5, a.v5) + dot(k.v6, a.v6) + dot(k.v7, a.v7) - x.off);
}
