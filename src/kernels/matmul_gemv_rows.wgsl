// Decode matmul (GEMV, one token), barrier-free form for CPU-emulated adapters (SwiftShader):
// out[outOffset + r] = sum_k x[xOffset + k] * W[r, k] for the rows r of one weight chunk.
// The host appends the format's decoder from matmul_decode.wgsl (load_block_raw, XSCALE, QOFF).
//
// Thread-to-data: thread g owns rows 16g .. 16g+15 and walks all 32-column blocks of them,
// loading each x slice once for the sixteen rows (x loads dominate on SwiftShader: 16 rows
// per thread measured 1.5x faster than 8, 2x faster than 4); no workgroup memory and no barrier (on
// SwiftShader a barrier turns every invocation group into a coroutine, which costs more than
// the whole dot product). On a real GPU matmul_gemv.wgsl is the better form (coalesced).
// Dispatch: ceil(rows / (16·WG)) workgroups as (min(n, 65535), ceil(n / 65535)).
// Host constants: Params mirrors matmulParams() in matmul.ts; WG is an override.

struct Params {
  rows: u32, cols: u32, rowWords: u32, scaleOffset: u32,
  m: u32, xOffset: u32, xStride: u32, outOffset: u32,
  outStride: u32, fullBlocks: u32, nBlocks: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
// binding 2, x, and fn x4: matmul_x.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 64;

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

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row0 = 16u * (gid.x + gid.y * nwg.x * WG);
  if (row0 >= p.rows) {
    return;
  }
  let last = p.rows - 1u;
  let rw4 = p.rowWords / 4u;
  // First vec4 of each of the 16 rows; rows past the end read the last row (valid memory)
  // and are never written.
  let lane = vec4<u32>(0u, 1u, 2u, 3u);
  let b0 = min(vec4<u32>(row0) + lane, vec4<u32>(last)) * rw4;
  let b1 = min(vec4<u32>(row0 + 4u) + lane, vec4<u32>(last)) * rw4;
  let b2 = min(vec4<u32>(row0 + 8u) + lane, vec4<u32>(last)) * rw4;
  let b3 = min(vec4<u32>(row0 + 12u) + lane, vec4<u32>(last)) * rw4;
  var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
  for (var b = 0u; b < p.nBlocks; b++) {
    let a = prep_x(load_x(p.xOffset, b));
    a0 += vec4<f32>(dotb(load_block_raw(b0.x, b), a), dotb(load_block_raw(b0.y, b), a), dotb(load_block_raw(b0.z, b), a), dotb(load_block_raw(b0.w, b), a));
    a1 += vec4<f32>(dotb(load_block_raw(b1.x, b), a), dotb(load_block_raw(b1.y, b), a), dotb(load_block_raw(b1.z, b), a), dotb(load_block_raw(b1.w, b), a));
    a2 += vec4<f32>(dotb(load_block_raw(b2.x, b), a), dotb(load_block_raw(b2.y, b), a), dotb(load_block_raw(b2.z, b), a), dotb(load_block_raw(b2.w, b), a));
    a3 += vec4<f32>(dotb(load_block_raw(b3.x, b), a), dotb(load_block_raw(b3.y, b), a), dotb(load_block_raw(b3.z, b), a), dotb(load_block_raw(b3.w, b), a));
  }
  let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
  for (var r = 0u; r < 16u; r++) {
    if (row0 + r < p.rows) {
      out[p.outOffset + row0 + r] = acc[r / 4u][r % 4u];
    }
  }
}
