// Per-block helpers shared by the two decode GEMVs (matmul_gemv.wgsl, matmul_gemv_rows.wgsl):
// one 32-column x slice as eight vec4s (XBlock), masked past `cols`, pre-scaled by the format's
// XSCALE_LO/HI with dot(QOFF, x) (XPrep), and the dot of a raw weight Block with it (dotq,
// unscaled; dotb, times the block scale). Both GEMVs include this file; it uses `p` (Params:
// cols, fullBlocks), matmul_x.wgsl's xbase / xquad, and matmul_decode.wgsl's
// Block / XSCALE_LO / XSCALE_HI / QOFF_LO / QOFF_HI.
struct XBlock {
  v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
  v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
}

// Quad k of the block whose first column is c and first quad xbase(..) is q; columns past
// `cols` are zeroed: their weights are 0, but x there may hold anything (NaN·0 = NaN).
fn xquadm(q: u32, k: u32, c: u32) -> vec4<f32> {
  let live = vec4<u32>(c + 4u * k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols);
  return select(vec4<f32>(0.0), xquad(q, k), live);
}

fn load_x(base: u32, b: u32) -> XBlock {
  let q = xbase(base + 32u * b);
  if (b < p.fullBlocks) {
    return XBlock(xquad(q, 0u), xquad(q, 1u), xquad(q, 2u), xquad(q, 3u), xquad(q, 4u), xquad(q, 5u), xquad(q, 6u), xquad(q, 7u));
  }
  let c = 32u * b;
  return XBlock(xquadm(q, 0u, c), xquadm(q, 1u, c), xquadm(q, 2u, c), xquadm(q, 3u, c),
                xquadm(q, 4u, c), xquadm(q, 5u, c), xquadm(q, 6u, c), xquadm(q, 7u, c));
}

// x slice pre-multiplied by the format's XSCALE_LO (even quads) / XSCALE_HI (odd quads), and
// the offset term dot(QOFF, x) (see matmul_decode.wgsl).
struct XPrep {
  a: XBlock,
  off: f32,
}

fn prep_x(a: XBlock) -> XPrep {
  let e = a.v0 + a.v2 + a.v4 + a.v6;
  let o = a.v1 + a.v3 + a.v5 + a.v7;
  return XPrep(XBlock(a.v0 * XSCALE_LO, a.v1 * XSCALE_HI, a.v2 * XSCALE_LO, a.v3 * XSCALE_HI,
                      a.v4 * XSCALE_LO, a.v5 * XSCALE_HI, a.v6 * XSCALE_LO, a.v7 * XSCALE_HI),
               dot(e, QOFF_LO) + dot(o, QOFF_HI));
}

// Unscaled block dot: sum of raw weight·x over the block, before the block scale.
fn dotq(k: Block, x: XPrep) -> f32 {
  let a = x.a;
  return dot(k.v0, a.v0) + dot(k.v1, a.v1) + dot(k.v2, a.v2) + dot(k.v3, a.v3) +
         dot(k.v4, a.v4) + dot(k.v5, a.v5) + dot(k.v6, a.v6) + dot(k.v7, a.v7) - x.off;
}

fn dotb(k: Block, x: XPrep) -> f32 {
  return k.s * dotq(k, x);
}
