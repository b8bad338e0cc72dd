// Matmul for CPU-emulated adapters (SwiftShader), barrier-free; for m tokens one after another:
// out[outOffset + t·outStride + r] = sum_k x[xOffset + t·xStride + k] * W[r, k] for the rows r
// of one weight chunk. Used for every m on such adapters (decode, prefill, verify).
// It includes matmul_gemv_block.wgsl, matmul_x.wgsl and the format's decoder from
// matmul_decode.wgsl (load_pair, load_scales2, XSCALE_LO/HI, QOFF_LO/HI).
//
// Thread-to-data: thread g owns rows 16g .. 16g+15 and walks the 32-column blocks two at a
// time (one scale word holds the scales of both), loading each x slice once for the 16 rows;
// inside a block it goes word pair by word pair over all 16 rows (fewer live values).
// No workgroup memory and no barrier (on SwiftShader a barrier turns every invocation group
// into a coroutine, which costs more than the whole dot product). On a real GPU
// matmul_gemv.wgsl is the better form (coalesced).
// Cost model on SwiftShader (Subzero JIT, 4 invocations per SIMD group; measured): every
// storage load is four scalar loads with a branch each, and every vector shift is scalarized,
// so the kernel avoids shifts in the inner loop and, with `subgroups`, has the four lanes of
// a group load four different x quads and broadcast them (instead of four copies of each).
// Dispatch: ceil(rows / (16·WG)) workgroups as (min(n, 65535), ceil(n / 65535)). Every thread
// runs to the end (subgroupBroadcast wants all lanes): rows past the end read the last row
// (valid memory) and are never written.
// Host constants: Params (matmul_params.wgsl); WG is an override. The include lines are
// expanded by matmul-wgsl.ts ({x}, {format}, {sg}: the variant).
//#include matmul_gemv_subgroups.wgsl:enable.{sg}
//#include matmul_params.wgsl
//#include matmul_x.wgsl:{x}
//#include matmul_decode.wgsl:{format}
//#include matmul_gemv_block.wgsl
//#include matmul_out.wgsl
//#include matmul_gemv_subgroups.wgsl:rows.{sg}

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
// binding 2, x, and fn x4 / xbase / xquad: matmul_x.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 16;

// XBlock, XPrep, load_x, xquadm, prep_x: matmul_gemv_block.wgsl. RowsIn (the entry point's
// builtins), sg_lane and xslice(xo, b, sg) (the pre-scaled x slice of block b of the token
// whose x starts at f32 index xo): matmul_gemv_subgroups.wgsl, core or subgroups.

// Raw dot of word pair j (columns 8j..8j+7) of block b with x, for the four rows of r.
fn pdot4(r: vec4<u32>, b: u32, j: u32, lo: vec4<f32>, hi: vec4<f32>) -> vec4<f32> {
  let k0 = load_pair(r.x, b, j); let k1 = load_pair(r.y, b, j);
  let k2 = load_pair(r.z, b, j); let k3 = load_pair(r.w, b, j);
  return vec4<f32>(dot(k0.lo, lo) + dot(k0.hi, hi), dot(k1.lo, lo) + dot(k1.hi, hi),
                   dot(k2.lo, lo) + dot(k2.hi, hi), dot(k3.lo, lo) + dot(k3.hi, hi));
}

struct Rows16 { g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>, g3: vec4<f32> }

// Raw dots of block b for the sixteen rows (before the block scales): word pair by word pair,
// all rows per pair (this order keeps fewer values live than row by row: measured faster).
fn bdot16(r0: vec4<u32>, r1: vec4<u32>, r2: vec4<u32>, r3: vec4<u32>, b: u32, a: XPrep) -> Rows16 {
  var d = Rows16(vec4<f32>(-a.off), vec4<f32>(-a.off), vec4<f32>(-a.off), vec4<f32>(-a.off));
  let x = a.a;
  d.g0 += pdot4(r0, b, 0u, x.v0, x.v1); d.g1 += pdot4(r1, b, 0u, x.v0, x.v1);
  d.g2 += pdot4(r2, b, 0u, x.v0, x.v1); d.g3 += pdot4(r3, b, 0u, x.v0, x.v1);
  d.g0 += pdot4(r0, b, 1u, x.v2, x.v3); d.g1 += pdot4(r1, b, 1u, x.v2, x.v3);
  d.g2 += pdot4(r2, b, 1u, x.v2, x.v3); d.g3 += pdot4(r3, b, 1u, x.v2, x.v3);
  d.g0 += pdot4(r0, b, 2u, x.v4, x.v5); d.g1 += pdot4(r1, b, 2u, x.v4, x.v5);
  d.g2 += pdot4(r2, b, 2u, x.v4, x.v5); d.g3 += pdot4(r3, b, 2u, x.v4, x.v5);
  d.g0 += pdot4(r0, b, 3u, x.v6, x.v7); d.g1 += pdot4(r1, b, 3u, x.v6, x.v7);
  d.g2 += pdot4(r2, b, 3u, x.v6, x.v7); d.g3 += pdot4(r3, b, 3u, x.v6, x.v7);
  return d;
}

struct Scales4 { even: vec4<f32>, odd: vec4<f32> }

// Scales of the block pair (2i, 2i+1) for the four rows of r (s4, c: see load_scales2).
fn scales4(r: vec4<u32>, s4: u32, c: u32) -> Scales4 {
  let a = load_scales2(r.x, s4, c); let b = load_scales2(r.y, s4, c);
  let d = load_scales2(r.z, s4, c); let e = load_scales2(r.w, s4, c);
  return Scales4(vec4<f32>(a.x, b.x, d.x, e.x), vec4<f32>(a.y, b.y, d.y, e.y));
}

@compute @workgroup_size(WG)
fn main(inv: RowsIn) {
  let sg = sg_lane(inv);
  let row0 = 16u * (inv.gid.x + inv.gid.y * inv.nwg.x * WG);
  let last = p.rows - 1u;
  let rw4 = p.rowWords / 4u;
  let lane = vec4<u32>(0u, 1u, 2u, 3u);
  let r0 = min(vec4<u32>(row0) + lane, vec4<u32>(last)) * rw4;
  let r1 = min(vec4<u32>(row0 + 4u) + lane, vec4<u32>(last)) * rw4;
  let r2 = min(vec4<u32>(row0 + 8u) + lane, vec4<u32>(last)) * rw4;
  let r3 = min(vec4<u32>(row0 + 12u) + lane, vec4<u32>(last)) * rw4;
  let sBase = p.scaleOffset / 4u;
  // Tokens one after another (m > 1: prefill and verify on CPU adapters, where this beats the
  // tiled kernel's barriers by far); the weights of a row group stay in cache between tokens.
  for (var t = 0u; t < p.m; t++) {
    let xo = p.xOffset + t * p.xStride;
    var acc = Rows16(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    // Blocks in pairs (2i, 2i+1): one scale word per row holds both scales; an odd last
    // block runs alone (its pair's second scale is never used).
    for (var i = 0u; 2u * i < p.nBlocks; i++) {
      let s4 = sBase + (i >> 2u);
      let c = i & 3u;
      let s0 = scales4(r0, s4, c); let s1 = scales4(r1, s4, c);
      let s2 = scales4(r2, s4, c); let s3 = scales4(r3, s4, c);
      let b = 2u * i;
      let d = bdot16(r0, r1, r2, r3, b, xslice(xo, b, sg));
      acc.g0 += s0.even * d.g0; acc.g1 += s1.even * d.g1; acc.g2 += s2.even * d.g2; acc.g3 += s3.even * d.g3;
      if (b + 1u < p.nBlocks) {
        let e = bdot16(r0, r1, r2, r3, b + 1u, xslice(xo, b + 1u, sg));
        acc.g0 += s0.odd * e.g0; acc.g1 += s1.odd * e.g1; acc.g2 += s2.odd * e.g2; acc.g3 += s3.odd * e.g3;
      }
    }
    write16(p.outOffset + t * p.outStride + row0, row0, acc);
  }
}

// Rows row0 .. row0+15 of one token to out[o ..], those below p.rows only.
fn write16(o: u32, row0: u32, acc: Rows16) {
  if (row0 >= p.rows) {
    return;
  }
  let n = p.rows - row0;
  emit(o, acc.g0.x);
  if (n > 1u) { emit(o + 1u, acc.g0.y); }
  if (n > 2u) { emit(o + 2u, acc.g0.z); }
  if (n > 3u) { emit(o + 3u, acc.g0.w); }
  if (n > 4u) { emit(o + 4u, acc.g1.x); }
  if (n > 5u) { emit(o + 5u, acc.g1.y); }
  if (n > 6u) { emit(o + 6u, acc.g1.z); }
  if (n > 7u) { emit(o + 7u, acc.g1.w); }
  if (n > 8u) { emit(o + 8u, acc.g2.x); }
  if (n > 9u) { emit(o + 9u, acc.g2.y); }
  if (n > 10u) { emit(o + 10u, acc.g2.z); }
  if (n > 11u) { emit(o + 11u, acc.g2.w); }
  if (n > 12u) { emit(o + 12u, acc.g3.x); }
  if (n > 13u) { emit(o + 13u, acc.g3.y); }
  if (n > 14u) { emit(o + 14u, acc.g3.z); }
  if (n > 15u) { emit(o + 15u, acc.g3.w); }
}
