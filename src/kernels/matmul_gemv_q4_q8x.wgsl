// Decode matmul (GEMV, one token) for q4 weights with the activation quantized to int8 per
// 32-column block (llama.cpp Q8_1 style), integer dot products via dot4I8Packed; opt-in
// (MatmulArgs.xQuant = 'q8'): it changes numerics. Runs after matmul_q8x.wgsl in the same pass
// (it writes xq: x as packed int8 in nibble order, d_x and 8·Σq per block).
// out[r] = Σ_b d_w(r,b) · d_x(b) · (Σ_i u4[r,32b+i]·q[i] − 8·Σq), where the weights are
//   the stored u4 (value = u4 − 8) taken as int8 lanes: word & 0x0F0F0F0F gives nibbles
//   0,2,4,6 and (word >> 4) & 0x0F0F0F0F nibbles 1,3,5,7, matching the x packing above.
//   Thread g owns rows 16g .. 16g+15 (as matmul_gemv_rows.wgsl: no barrier, x block loaded
//   once for 16 rows). Dispatch ceil(rows / (16·WG)) as (min(n, 65535), ceil(n / 65535)).
// Per 32 weights this costs 4 loads, 4 shifts, 8 ANDs and 8 dot4I8Packed instead of 8 masks,
// 32 int→float converts and 32 FMAs; the int32 block sum is exact (|Σ| ≤ 32·15·127).
// Host constants: Params mirrors matmulParams() in matmul.ts; WG is an override.
// Needs the WGSL language feature packed_4x8_integer_dot_product.

struct Params {
  rows: u32, cols: u32, rowWords: u32, scaleOffset: u32,
  m: u32, xOffset: u32, xStride: u32, outOffset: u32,
  outStride: u32, fullBlocks: u32, nBlocks: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
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

const LO = 0x0f0f0f0fu;

struct XB { a: vec4<u32>, b: vec4<u32>, d: f32, off: i32 }

// One row's block: d_w · (Σ u4·q − 8Σq) (the caller multiplies by d_x once for 16 rows).
fn dotq(row4: u32, b: u32, xb: XB) -> f32 {
  let q = w[row4 + b];
  let word = 4u * row4 + p.scaleOffset + (b >> 1u);
  let dw = half_to_f32((w[word >> 2u][word & 3u] >> (16u * (b & 1u))) & 0xffffu);
  let s = dot4I8Packed(q.x & LO, xb.a.x) + dot4I8Packed((q.x >> 4u) & LO, xb.a.y) +
          dot4I8Packed(q.y & LO, xb.a.z) + dot4I8Packed((q.y >> 4u) & LO, xb.a.w) +
          dot4I8Packed(q.z & LO, xb.b.x) + dot4I8Packed((q.z >> 4u) & LO, xb.b.y) +
          dot4I8Packed(q.w & LO, xb.b.z) + dot4I8Packed((q.w >> 4u) & LO, xb.b.w);
  return dw * f32(s - xb.off);
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
    let m = xq[3u * b + 2u];
    let xb = XB(xq[3u * b], xq[3u * b + 1u], bitcast<f32>(m.x), bitcast<i32>(m.y));
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
