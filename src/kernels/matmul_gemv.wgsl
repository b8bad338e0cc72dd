// Decode matmul (GEMV, one token): out[outOffset + r] = sum_k x[xOffset + k] * W[r, k]
// for the rows r of one weight chunk. W is packed (src/engine/quantize.ts); the host
// appends the format's `load_block` from matmul_decode.wgsl.
//
// Thread-to-data: a workgroup of WG threads owns ROWS consecutive rows. Thread t takes the
// 32-column blocks t, t+WG, t+2WG, ... ; for each of its blocks it loads that x slice into
// registers ONCE and runs it down all ROWS rows, adding into partial[r][t] in workgroup
// memory. Consecutive threads read consecutive 16-byte runs of a row (coalesced on a GPU);
// on a CPU (SwiftShader) the x load is amortized over ROWS rows. One barrier, then thread
// r < ROWS adds the WG partials of row r and writes it.
// Dispatch: ceil(rows / ROWS) workgroups as (min(n, 65535), ceil(n / 65535)).
// Host constants: Params mirrors matmulParams() in matmul.ts; WG and ROWS are overrides
// (ROWS ≤ WG).

struct Params {
  rows: u32,        // rows of this chunk
  cols: u32,        // K, unpadded
  rowWords: u32,    // u32 words per packed row (multiple of 4)
  scaleOffset: u32, // word offset of the scales inside a row (q8, q4)
  m: u32,           // tokens
  xOffset: u32,     // f32 index of x[0, 0]
  xStride: u32,     // f32 between tokens of x
  outOffset: u32,   // f32 index of out[0, first row of this chunk]
  outStride: u32,   // f32 between tokens of out
  fullBlocks: u32,  // floor(cols / 32): blocks without padding
  nBlocks: u32,     // ceil(cols / 32)
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
// binding 2, x, and fn x4: matmul_x.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 64;
override ROWS: u32 = 16;
var<workgroup> partial: array<f32, ROWS * WG>; // [row][thread]

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
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>/*#sgargs*/) {
  let row0 = (wid.x + wid.y * nwg.x) * ROWS;
  let last = p.rows - 1u;
  let rw4 = p.rowWords / 4u;
  for (var r = 0u; r < ROWS; r++) {
    partial[r * WG + lid] = 0.0;
  }
  for (var b = lid; b < p.nBlocks; b += WG) {
    let a = prep_x(load_x(p.xOffset, b));
    for (var r = 0u; r < ROWS; r++) {
      // Rows past the end read the last row (always valid memory) and are never written.
      partial[r * WG + lid] += dotb(load_block_raw(min(row0 + r, last) * rw4, b), a);
    }
  }
  workgroupBarrier();
  //#reduce
  if (lid < ROWS && row0 + lid < p.rows) {
    var s = 0.0;
    for (var i = 0u; i < WG; i++) {
      s += partial[lid * WG + i];
    }
    out[p.outOffset + row0 + lid] = s;
  }
  //#end
}
