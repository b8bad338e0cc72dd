// Decode matmul (GEMV, one token), barrier-free form for CPU-emulated adapters (SwiftShader):
// out[outOffset + r] = sum_k x[xOffset + k] * W[r, k] for the rows r of one weight chunk.
// The host appends the format's decoder from matmul_decode.wgsl (load_block_raw, XSCALE, QOFF).
//
// Thread-to-data: thread g owns rows 8g .. 8g+7 and walks all 32-column blocks of them,
// loading each x slice once for the eight rows; no workgroup memory and no barrier (on
// SwiftShader a barrier turns every invocation group into a coroutine, which costs more than
// the whole dot product). On a real GPU matmul_gemv.wgsl is the better form (coalesced).
// Dispatch: ceil(rows / (8·WG)) workgroups as (min(n, 65535), ceil(n / 65535)).
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
  let row0 = 8u * (gid.x + gid.y * nwg.x * WG);
  if (row0 >= p.rows) {
    return;
  }
  let last = p.rows - 1u;
  let rw4 = p.rowWords / 4u;
  // Rows past the end read the last row (always valid memory) and are never written.
  let r0 = row0 * rw4;
  let r1 = min(row0 + 1u, last) * rw4;
  let r2 = min(row0 + 2u, last) * rw4;
  let r3 = min(row0 + 3u, last) * rw4;
  let r4 = min(row0 + 4u, last) * rw4;
  let r5 = min(row0 + 5u, last) * rw4;
  let r6 = min(row0 + 6u, last) * rw4;
  let r7 = min(row0 + 7u, last) * rw4;
  var lo = vec4<f32>(0.0); // rows row0 .. row0+3
  var hi = vec4<f32>(0.0); // rows row0+4 .. row0+7
  for (var b = 0u; b < p.nBlocks; b++) {
    let a = prep_x(load_x(p.xOffset, b));
    lo += vec4<f32>(dotb(load_block_raw(r0, b), a), dotb(load_block_raw(r1, b), a),
                    dotb(load_block_raw(r2, b), a), dotb(load_block_raw(r3, b), a));
    hi += vec4<f32>(dotb(load_block_raw(r4, b), a), dotb(load_block_raw(r5, b), a),
                    dotb(load_block_raw(r6, b), a), dotb(load_block_raw(r7, b), a));
  }
  for (var r = 0u; r < 4u; r++) {
    if (row0 + r < p.rows) {
      out[p.outOffset + row0 + r] = lo[r];
    }
    if (row0 + 4u + r < p.rows) {
      out[p.outOffset + row0 + 4u + r] = hi[r];
    }
  }
}
