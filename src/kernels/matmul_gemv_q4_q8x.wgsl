// Decode matmul (GEMV, one token) for q4 weights with the activation quantized to int8 per
// 32-column block (llama.cpp Q8_1 style) and exact integer block sums; opt-in
// (MatmulArgs.xQuant = 'q8'): it changes numerics. Runs after matmul_q8x.wgsl in the same pass
// (it writes xq: per block 16 u32 X words (pairs of int8 x, see dotq), d_x and 8·Σq).
// out[r] = Σ_b d_w(r,b) · d_x(b) · (Σ_i u4[r,32b+i]·q[i] − 8·Σq), u4 the stored nibble
//   (weight = u4 − 8). Thread g owns rows 16g .. 16g+15 (as matmul_gemv_rows.wgsl: no
//   barrier, x block loaded once for 16 rows). Dispatch ceil(rows / (16·WG)) as
//   (min(n, 65535), ceil(n / 65535)).
// Why SWAR and not dot4I8Packed: on SwiftShader dot4I8Packed (expanded to scalar code) and a
// plain vec4<i32> multiply measured no faster than the exact f32 GEMV; this SWAR form and a
// 4-rows-per-thread variant of it measured 0-20% faster, within the noise of the shared
// 2-core host. A loads-only version ran 3-4x faster: on SwiftShader this GEMV is bound by
// per-weight work (and register pressure: a vec4 per invocation is 4 SIMD registers), not memory.
// Host constants: Params (matmul_params.wgsl); WG is an override.
//#include matmul_params.wgsl
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> xq: array<vec4<u32>>;

override WG: u32 = 16;

// f16 → f32 (see matmul_decode.wgsl: cheaper than unpack2x16float on CPU backends).
fn half_to_f32(h: u32) -> f32 {
  let mag = h & 0x7fffu;
  let normal = bitcast<f32>((mag << 13u) + 0x38000000u);
  let sub = f32(bitcast<i32>(mag)) * 5.9604644775390625e-8;
  let v = select(normal, sub, mag < 0x400u);
  return select(v, -v, (h & 0x8000u) != 0u);
}

const PAIR = vec4<u32>(0x000f000fu);
const NIB = vec4<u32>(0u, 4u, 8u, 12u);

struct XB { v0: vec4<u32>, v1: vec4<u32>, v2: vec4<u32>, v3: vec4<u32>, d: f32, off: i32 }

// Two MACs per integer multiply (SWAR): lane n of (word >> 4n) & 0x000F000F holds nibbles n
// and n+4 (q_n + q_{n+4}·2^16); times X = x_{n+4} + x_n·2^16 (the pre-pass packs it) the
// bits 16..31 of the product hold q_n·x_n + q_{n+4}·x_{n+4}, the low half q_n·x_{n+4}, and
// the q_{n+4}·x_n·2^32 term wraps away. Summing 8 products, |low| ≤ 8·15·127 < 2^15 and
// |middle| ≤ 16·15·127 < 2^15, so (Σ + 2^15) >> 16 (arithmetic) is exactly the middle.
fn dotq(row4: u32, b: u32, xb: XB) -> f32 {
  let q = w[row4 + b];
  let word = 4u * row4 + p.scaleOffset + (b >> 1u);
  let dw = half_to_f32((w[word >> 2u][word & 3u] >> (16u * (b & 1u))) & 0xffffu);
  let t = ((vec4<u32>(q.x) >> NIB) & PAIR) * xb.v0 + ((vec4<u32>(q.y) >> NIB) & PAIR) * xb.v1 +
          ((vec4<u32>(q.z) >> NIB) & PAIR) * xb.v2 + ((vec4<u32>(q.w) >> NIB) & PAIR) * xb.v3;
  let h = bitcast<vec2<i32>>(t.xy + t.zw + vec2<u32>(0x8000u)) >> vec2<u32>(16u);
  return dw * f32(h.x + h.y - xb.off);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row0 = 16u * (gid.x + gid.y * nwg.x * WG);
  if (row0 >= p.rows) {
    return;
  }
  let last = p.rows - 1u;
  let rw4 = p.rowWords / 4u;
  // Rows past the end read the last row (valid memory) and are never written.
  let lane = vec4<u32>(0u, 1u, 2u, 3u);
  let b0 = min(vec4<u32>(row0) + lane, vec4<u32>(last)) * rw4;
  let b1 = min(vec4<u32>(row0 + 4u) + lane, vec4<u32>(last)) * rw4;
  let b2 = min(vec4<u32>(row0 + 8u) + lane, vec4<u32>(last)) * rw4;
  let b3 = min(vec4<u32>(row0 + 12u) + lane, vec4<u32>(last)) * rw4;
  var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
  for (var b = 0u; b < p.nBlocks; b++) {
    let i = 5u * b;
    let m = xq[i + 4u];
    let xb = XB(xq[i], xq[i + 1u], xq[i + 2u], xq[i + 3u], bitcast<f32>(m.x), bitcast<i32>(m.y));
    a0 += xb.d * vec4<f32>(dotq(b0.x, b, xb), dotq(b0.y, b, xb), dotq(b0.z, b, xb), dotq(b0.w, b, xb));
    a1 += xb.d * vec4<f32>(dotq(b1.x, b, xb), dotq(b1.y, b, xb), dotq(b1.z, b, xb), dotq(b1.w, b, xb));
    a2 += xb.d * vec4<f32>(dotq(b2.x, b, xb), dotq(b2.y, b, xb), dotq(b2.z, b, xb), dotq(b2.w, b, xb));
    a3 += xb.d * vec4<f32>(dotq(b3.x, b, xb), dotq(b3.y, b, xb), dotq(b3.z, b, xb), dotq(b3.w, b, xb));
  }
  let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
  for (var r = 0u; r < 16u; r++) {
    if (row0 + r < p.rows) {
      out[p.outOffset + row0 + r] = acc[r / 4u][r % 4u];
    }
  }
}
