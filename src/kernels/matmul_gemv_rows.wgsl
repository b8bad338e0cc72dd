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

// XBlock, load_x, prep_x, dotb: matmul_gemv_block.wgsl (appended by the host)

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
