// Decode matmul (GEMV, one token): out[outOffset + r] = sum_k x[xOffset + k] * W[r, k]
// for the rows r of one weight chunk. W is packed (src/engine/quantize.ts); the format's
// decoder comes from matmul_decode.wgsl. The include lines are expanded by matmul-wgsl.ts
// ({x}, {format}, {sg}: the variant); `duet kernels --dump-wgsl DIR` writes the results.
//
// Thread-to-data: a workgroup of WG threads owns ROWS consecutive rows. Thread t takes the
// 32-column blocks t, t+WG, t+2WG, ... ; for each of its blocks it loads that x slice into
// registers ONCE and runs it down all ROWS rows, adding into partial[r][t] in workgroup
// memory. Consecutive threads read consecutive 16-byte runs of a row (coalesced on a GPU);
// on a CPU (SwiftShader) the x load is amortized over ROWS rows. One barrier, then thread
// r < ROWS adds the WG partials of row r and writes it.
// Dispatch: ceil(rows / ROWS) workgroups as (min(n, 65535), ceil(n / 65535)).
// Host constants: Params (matmul_params.wgsl); WG and ROWS are overrides (ROWS ≤ WG).

//#include matmul_gemv_subgroups.wgsl:enable.{sg}
//#include matmul_params.wgsl
//#include matmul_x.wgsl:{x}
//#include matmul_decode.wgsl:{format}
//#include matmul_gemv_block.wgsl
//#include matmul_out.wgsl
//#include matmul_gemv_subgroups.wgsl:coop.{sg}

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
// binding 2, x, and fn x4 / xbase / xquad: matmul_x.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 64;
override ROWS: u32 = 16;
var<workgroup> partial: array<f32, ROWS * WG>; // [row][thread]

// XBlock, load_x, prep_x, dotb: matmul_gemv_block.wgsl. CoopIn (the entry point's builtins)
// and reduce_rows (the tail after the barrier): matmul_gemv_subgroups.wgsl, core or subgroups.

@compute @workgroup_size(WG)
fn main(inv: CoopIn) {
  let lid = inv.lid;
  let row0 = (inv.wid.x + inv.wid.y * inv.nwg.x) * ROWS;
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
  reduce_rows(inv, row0);
}
