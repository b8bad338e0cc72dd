// Decode matmul (GEMV, one token), barrier-free form for CPU-emulated adapters (SwiftShader):
// out[outOffset + r] = sum_k x[xOffset + k] * W[r, k] for the rows r of one weight chunk.
// The host appends matmul_gemv_block.wgsl, matmul_x.wgsl and the format's decoder from
// matmul_decode.wgsl (load_quads, load_scales2, XSCALE_LO/HI, QOFF_LO/HI).
//
// Thread-to-data: thread g owns rows 8g .. 8g+7 and walks the 32-column blocks two at a time
// (one scale word holds the scales of both), loading each x slice once for the eight rows.
// No workgroup memory and no barrier (on SwiftShader a barrier turns every invocation group
// into a coroutine, which costs more than the whole dot product). On a real GPU
// matmul_gemv.wgsl is the better form (coalesced).
// Cost model on SwiftShader (Subzero JIT, 4 invocations per SIMD group; measured): every
// storage load is four scalar loads with a branch each, and every vector shift is scalarized,
// so the kernel avoids shifts in the inner loop and, with `subgroups`, has the four lanes of
// a group load four different x quads and broadcast them (instead of four copies of each).
// Dispatch: ceil(rows / (8·WG)) workgroups as (min(n, 65535), ceil(n / 65535)). Every thread
// runs to the end (subgroupBroadcast wants all lanes): rows past the end read the last row
// (valid memory) and are never written.
// Host constants: Params mirrors matmulParams() in matmul.ts; WG is an override. With
// subgroups the host splices in the builtins (/*#sg...*/ markers) and the x part.

struct Params {
  rows: u32, cols: u32, rowWords: u32, scaleOffset: u32,
  m: u32, xOffset: u32, xStride: u32, outOffset: u32,
  outStride: u32, fullBlocks: u32, nBlocks: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
// binding 2, x, and fn x4: matmul_x.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 16;

// XBlock, load_x, xquadm, prep_x, dotq: matmul_gemv_block.wgsl (appended by the host)

// x slice of block b, pre-scaled. The subgroup variant (matmul_gemv_subgroups.wgsl, part
// rows) replaces the lines from //#x to //#end: there lane `sg` of a 4-lane subgroup loads two
// of the eight quads and the group broadcasts them.
fn xslice(b: u32, sg: u32) -> XPrep {
//#x
  return prep_x(load_x(p.xOffset, b));
//#end
}

// One row's dot with block b (before the block scale).
fn rdot(row4: u32, b: u32, a: XPrep) -> f32 {
  return dotq(load_quads(row4, b), a);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>/*#sgargs*/) {
  let sg = 0u/*#sglane*/;
  let row0 = 8u * (gid.x + gid.y * nwg.x * WG);
  let last = p.rows - 1u;
  let rw4 = p.rowWords / 4u;
  let lane = vec4<u32>(0u, 1u, 2u, 3u);
  let r0 = min(vec4<u32>(row0) + lane, vec4<u32>(last)) * rw4;
  let r1 = min(vec4<u32>(row0 + 4u) + lane, vec4<u32>(last)) * rw4;
  let sBase = p.scaleOffset / 4u;
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  // Blocks in pairs (2i, 2i+1): one scale word per row holds both scales; an odd last block
  // runs alone (its pair's second scale is never used).
  for (var i = 0u; 2u * i < p.nBlocks; i++) {
    let s4 = sBase + (i >> 2u);
    let c = i & 3u;
    let t0 = load_scales2(r0.x, s4, c); let t1 = load_scales2(r0.y, s4, c);
    let t2 = load_scales2(r0.z, s4, c); let t3 = load_scales2(r0.w, s4, c);
    let t4 = load_scales2(r1.x, s4, c); let t5 = load_scales2(r1.y, s4, c);
    let t6 = load_scales2(r1.z, s4, c); let t7 = load_scales2(r1.w, s4, c);
    let b = 2u * i;
    let xa = xslice(b, sg);
    a0 += vec4<f32>(t0.x, t1.x, t2.x, t3.x) * vec4<f32>(rdot(r0.x, b, xa), rdot(r0.y, b, xa), rdot(r0.z, b, xa), rdot(r0.w, b, xa));
    a1 += vec4<f32>(t4.x, t5.x, t6.x, t7.x) * vec4<f32>(rdot(r1.x, b, xa), rdot(r1.y, b, xa), rdot(r1.z, b, xa), rdot(r1.w, b, xa));
    if (b + 1u < p.nBlocks) {
      let xb = xslice(b + 1u, sg);
      a0 += vec4<f32>(t0.y, t1.y, t2.y, t3.y) * vec4<f32>(rdot(r0.x, b + 1u, xb), rdot(r0.y, b + 1u, xb), rdot(r0.z, b + 1u, xb), rdot(r0.w, b + 1u, xb));
      a1 += vec4<f32>(t4.y, t5.y, t6.y, t7.y) * vec4<f32>(rdot(r1.x, b + 1u, xb), rdot(r1.y, b + 1u, xb), rdot(r1.z, b + 1u, xb), rdot(r1.w, b + 1u, xb));
    }
  }
  let o = p.outOffset + row0;
  if (row0 < p.rows) { out[o] = a0.x; }
  if (row0 + 1u < p.rows) { out[o + 1u] = a0.y; }
  if (row0 + 2u < p.rows) { out[o + 2u] = a0.z; }
  if (row0 + 3u < p.rows) { out[o + 3u] = a0.w; }
  if (row0 + 4u < p.rows) { out[o + 4u] = a1.x; }
  if (row0 + 5u < p.rows) { out[o + 5u] = a1.y; }
  if (row0 + 6u < p.rows) { out[o + 6u] = a1.z; }
  if (row0 + 7u < p.rows) { out[o + 7u] = a1.w; }
}
