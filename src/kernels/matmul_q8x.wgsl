// Activation pre-pass of the q4 × q8-activation GEMV (matmul_gemv_q4_q8x.wgsl): quantize
// x[xOffset .. xOffset+cols) to int8 per 32-column block, llama.cpp Q8_1 style.
// Thread b (one per block; columns ≥ cols read as 0): d = absmax/127,
// q = clamp(round(x·(127/absmax)), -127, 127) (all 0 when absmax = 0; WGSL round is half to
// even), and writes xq[3b], xq[3b+1] = the q as packed int8 in NIBBLE order of the q4 layout
// (word 2j: columns 8j+0,2,4,6; word 2j+1: columns 8j+1,3,5,7; byte k = the k-th of them),
// xq[3b+2] = (bits(d), 8·Σq, 0, 0). quantizeActivationQ8 in matmul.ts is its CPU mirror.
// Dispatch ceil(nBlocks / WG) workgroups. Params mirrors matmulParams() in matmul.ts.

struct Params {
  rows: u32, cols: u32, rowWords: u32, scaleOffset: u32,
  m: u32, xOffset: u32, xStride: u32, outOffset: u32,
  outStride: u32, fullBlocks: u32, nBlocks: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> xq: array<vec4<u32>>;

override WG: u32 = 64;

fn xat(c: u32) -> f32 {
  return select(0.0, x[p.xOffset + c], c < p.cols);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.x;
  if (b >= p.nBlocks) {
    return;
  }
  var v: array<f32, 32>;
  var amax = 0.0;
  for (var i = 0u; i < 32u; i++) {
    v[i] = xat(32u * b + i);
    amax = max(amax, abs(v[i]));
  }
  let id = select(0.0, 127.0 / amax, amax > 0.0);
  var q: array<i32, 32>;
  var s = 0;
  for (var i = 0u; i < 32u; i++) {
    q[i] = clamp(i32(round(v[i] * id)), -127, 127);
    s += q[i];
  }
  var words: array<u32, 8>;
  for (var j = 0u; j < 4u; j++) {
    let c = 8u * j;
    words[2u * j] = pack4xI8(vec4<i32>(q[c], q[c + 2u], q[c + 4u], q[c + 6u]));
    words[2u * j + 1u] = pack4xI8(vec4<i32>(q[c + 1u], q[c + 3u], q[c + 5u], q[c + 7u]));
  }
  xq[3u * b] = vec4<u32>(words[0], words[1], words[2], words[3]);
  xq[3u * b + 1u] = vec4<u32>(words[4], words[5], words[6], words[7]);
  xq[3u * b + 2u] = vec4<u32>(bitcast<u32>(amax / 127.0), bitcast<u32>(8 * s), 0u, 0u);
}

