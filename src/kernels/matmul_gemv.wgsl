// Decode matmul (GEMV, one token): out[outOffset + r] = sum_k x[xOffset + k] * W[r, k]
// for the rows r of one weight chunk. W is packed (src/engine/quantize.ts); the host
// appends the format's `load_block` from matmul_decode.wgsl.
//
// Thread-to-data: one workgroup of WG threads owns ROWS = 4 consecutive rows; thread t walks
// the 32-column blocks t, t+WG, t+2WG, ... of all four rows (consecutive threads read
// consecutive 16-byte runs of a row: coalesced), keeping each x block in registers for the
// four rows. Partial sums meet in workgroup memory; one thread adds them (one barrier).
// Dispatch: ceil(rows / 4) workgroups, laid out as (min(n, 65535), ceil(n / 65535)).
// Host constants: Params mirrors matmulParams() in matmul.ts; WG is an override.

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
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 64;
var<workgroup> partial: array<vec4<f32>, WG>;

struct XBlock {
  v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
  v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
}

fn x4(i: u32) -> vec4<f32> {
  return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
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

fn dotb(k: Block, a: XBlock) -> f32 {
  return k.s * (dot(k.v0, a.v0) + dot(k.v1, a.v1) + dot(k.v2, a.v2) + dot(k.v3, a.v3) +
                dot(k.v4, a.v4) + dot(k.v5, a.v5) + dot(k.v6, a.v6) + dot(k.v7, a.v7));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>/*#sgargs*/) {
  let row0 = (wid.x + wid.y * nwg.x) * 4u;
  let last = p.rows - 1u;
  let rw4 = p.rowWords / 4u;
  // Rows past the end read the last row (always valid memory) and are never written.
  let r0 = min(row0, last) * rw4;
  let r1 = min(row0 + 1u, last) * rw4;
  let r2 = min(row0 + 2u, last) * rw4;
  let r3 = min(row0 + 3u, last) * rw4;
  var acc = vec4<f32>(0.0);
  for (var b = lid; b < p.nBlocks; b += WG) {
    let a = load_x(p.xOffset, b);
    acc += vec4<f32>(dotb(load_block(r0, b), a), dotb(load_block(r1, b), a),
                     dotb(load_block(r2, b), a), dotb(load_block(r3, b), a));
  }
  //#reduce
  partial[lid] = acc;
  workgroupBarrier();
  if (lid == 0u) {
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < WG; i++) {
      s += partial[i];
    }
    for (var r = 0u; r < 4u; r++) {
      if (row0 + r < p.rows) {
        out[p.outOffset + row0 + r] = s[r];
      }
    }
  }
  //#end
}
