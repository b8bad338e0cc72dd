// Activation pre-pass of the q4 × q8-activation GEMV (matmul_gemv_q4_q8x.wgsl): quantize
// x[xOffset .. xOffset+cols) to int8 per 32-column block, llama.cpp Q8_1 style.
// Thread b (one per block; columns ≥ cols read as 0): d = absmax/127,
// q = clamp(round(x·(127/absmax)), -127, 127) (all 0 when absmax = 0; WGSL round is half to
// even), and writes xq[5b + j] (j = 0..3), lane n = q[8j+n+4] + q[8j+n]·2^16 as u32 (the
// pair layout the SWAR GEMV multiplies with), xq[5b+4] = (bits(d), 8·Σq, 0, 0).
// quantizeActivationQ8 in matmul.ts is its CPU mirror.
// Dispatch ceil(nBlocks / WG) workgroups.
//#include matmul_params.wgsl
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
  // Block word 4j+n = x_{8j+n+4} + x_{8j+n}·2^16 (as u32; see dotq in matmul_gemv_q4_q8x.wgsl).
  for (var j = 0u; j < 4u; j++) {
    var v: vec4<u32>;
    for (var n = 0u; n < 4u; n++) {
      v[n] = bitcast<u32>(q[8u * j + n + 4u] + q[8u * j + n] * 65536);
    }
    xq[5u * b + j] = v;
  }
  xq[5u * b + 4u] = vec4<u32>(bitcast<u32>(amax / 127.0), bitcast<u32>(8 * s), 0u, 0u);
}
