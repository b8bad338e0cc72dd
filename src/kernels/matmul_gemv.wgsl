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

// XBlock, load_x, prep_x, dotb: matmul_gemv_block.wgsl (appended by the host)

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
