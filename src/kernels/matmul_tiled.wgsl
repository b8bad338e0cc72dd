// Matmul for m > 1 tokens (prefill, k+1 verify): out[t * outStride + outOffset + r] =
// sum_k x[xOffset + t * xStride + k] * W[r, k] for tokens t < m and rows r of one chunk.
// W is packed (src/engine/quantize.ts); load_block is the format's decoder (matmul_decode.wgsl).
//
// Thread-to-data: a workgroup of 64 threads owns a tile of 64 rows × 8 tokens; thread i owns
// row (64 * wid.x + i) and keeps 8 token accumulators. Per 32-column block, the workgroup
// stages the 8 tokens' x slices in workgroup memory (one vec4 per thread), then each thread
// dequantizes its row's block once into registers and uses it for all 8 tokens, so weights
// are read ceil(m / 8) times in all. Dispatch: (ceil(rows / 64), ceil(m / 8)).
// Host constants: Params (matmul_params.wgsl, the GEMVs' struct). The include lines are
// expanded by matmul-wgsl.ts ({x}, {format}: the variant).
//#include matmul_params.wgsl
//#include matmul_x.wgsl:{x}
//#include matmul_decode.wgsl:{format}
//#include matmul_out.wgsl

@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
// binding 2, x, and fn x4: matmul_x.wgsl
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const TN = 64u; // rows per tile = threads per workgroup
const TM = 8u;  // tokens per tile

var<workgroup> xs: array<vec4<f32>, 64>; // [token (TM)][column quad (8)] of the current block

fn tdot(k: Block, t: u32) -> f32 {
  let o = 8u * t;
  return k.s * (dot(k.v0, xs[o]) + dot(k.v1, xs[o + 1u]) + dot(k.v2, xs[o + 2u]) + dot(k.v3, xs[o + 3u]) +
                dot(k.v4, xs[o + 4u]) + dot(k.v5, xs[o + 5u]) + dot(k.v6, xs[o + 6u]) + dot(k.v7, xs[o + 7u]));
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.x * TN + lid;
  let rbase = min(row, p.rows - 1u) * (p.rowWords / 4u);
  let t0 = wid.y * TM;
  // This thread's staging slot: token t0 + lid / 8, columns 4 * (lid % 8) .. +3 of the block.
  let st = t0 + lid / 8u;
  let sq = 4u * (lid % 8u);
  var lo = vec4<f32>(0.0); // tokens t0 .. t0+3
  var hi = vec4<f32>(0.0); // tokens t0+4 .. t0+7
  for (var b = 0u; b < p.nBlocks; b++) {
    let col = 32u * b + sq;
    let i = p.xOffset + st * p.xStride + col;
    var v = vec4<f32>(0.0);
    if (st < p.m) {
      // Past `cols` the weights are 0 but x may hold anything (NaN·0 = NaN): zero it.
      let live = vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols);
      v = select(vec4<f32>(0.0), x4(i), live);
    }
    xs[lid] = v;
    workgroupBarrier();
    let k = load_block(rbase, b);
    lo += vec4<f32>(tdot(k, 0u), tdot(k, 1u), tdot(k, 2u), tdot(k, 3u));
    hi += vec4<f32>(tdot(k, 4u), tdot(k, 5u), tdot(k, 6u), tdot(k, 7u));
    workgroupBarrier();
  }
  if (row < p.rows) {
    for (var t = 0u; t < TM; t++) {
      if (t0 + t < p.m) {
        emit(p.outOffset + (t0 + t) * p.outStride + row, select(hi[t & 3u], lo[t & 3u], t < 4u));
      }
    }
  }
}
