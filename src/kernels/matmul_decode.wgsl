// Weight decoders of the matmul kernels, one section per format (src/engine/quantize.ts has
// the packed layout). matmul_gemv.wgsl / matmul_gemv_rows.wgsl / matmul_tiled.wgsl include
// `matmul_decode.wgsl:{format}`; each format section includes `types` and then `f16scales`
// (q8, q4) or `unscaled` (f32, f16, bf16). The kernels bind the weight chunk as
// `w: array<vec4<u32>>` and the uniform as `p` (scaleOffset in u32 words, a multiple of 4).
//
// load_block(row4, b): the 32 weights of block b (columns 32b..32b+31) of the row whose
// first vec4 is w[row4], as eight vec4<f32> in column order, UNSCALED, plus the block's
// scale s (1 for f32/f16/bf16): weight[32b + 4i + j] = s * v_i[j]. Returning the scale apart
// lets the kernels multiply once per block instead of once per weight.
//
// The GEMVs use a cheaper raw form: load_quads(row4, b) (s = 1) with the constants
// XSCALE_LO/HI (for the even/odd quads v0, v2, .. / v1, v3, ..) and QOFF_LO/HI:
//   weight[32b + 4i + j] = s * (v_i[j] * XSCALE[j] - QOFF[j]),
// so the GEMV pre-multiplies each x quad by XSCALE once (it reuses x across many rows) and
// subtracts dot(QOFF, x) once per block. For q4/q8 each nibble/byte is masked IN PLACE (value
// q·16^j or q·256^j): one AND and one int→float convert per weight and NO shift. Vector
// shifts matter on CPU adapters: SwiftShader's JIT (Subzero) scalarizes every vector shift,
// ~10x the cost of an AND (measured). The top nibble/byte of a word is read as a signed
// field after flipping its bias bit, so it needs no offset (QOFF 0 there). Power-of-two
// scales are exact in f32, so v·(x·XSCALE) = q·x bit for bit (unless |x| < 2^-98, where x·2^-28
// would underflow). f32/f16/bf16: raw = exact, XSCALE = 1, QOFF = 0.
// load_pair(row4, b, j): the same raw values for columns 8j..8j+7 of block b only (quads 2j
// and 2j+1, j = 0..3 a constant at the call site), for GEMVs that walk a block word by word.
// load_scales2(row4, s4, c): the scales of blocks 2i and 2i+1 (one u32 of two halves), where the
// caller computes s4 = scaleOffset/4 + i/4 and c = i % 4 once for all its rows.

//#section types
struct Block {
  v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
  v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
  s: f32,
}

struct Pair {
  lo: vec4<f32>,
  hi: vec4<f32>,
}

//#section f32
//#include matmul_decode.wgsl:types
//#include matmul_decode.wgsl:unscaled
fn load_pair(row4: u32, b: u32, j: u32) -> Pair {
  let i = row4 + 8u * b + 2u * j;
  return Pair(bitcast<vec4<f32>>(w[i]), bitcast<vec4<f32>>(w[i + 1u]));
}
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 8u * b;
  return Block(bitcast<vec4<f32>>(w[i]), bitcast<vec4<f32>>(w[i + 1u]), bitcast<vec4<f32>>(w[i + 2u]),
               bitcast<vec4<f32>>(w[i + 3u]), bitcast<vec4<f32>>(w[i + 4u]), bitcast<vec4<f32>>(w[i + 5u]),
               bitcast<vec4<f32>>(w[i + 6u]), bitcast<vec4<f32>>(w[i + 7u]), 1.0);
}

//#section f16
//#include matmul_decode.wgsl:types
//#include matmul_decode.wgsl:unscaled
fn h4(a: u32, b: u32) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(a), unpack2x16float(b));
}
fn load_pair(row4: u32, b: u32, j: u32) -> Pair {
  let q = w[row4 + 4u * b + j];
  return Pair(h4(q.x, q.y), h4(q.z, q.w));
}
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 4u * b;
  let q0 = w[i]; let q1 = w[i + 1u]; let q2 = w[i + 2u]; let q3 = w[i + 3u];
  return Block(h4(q0.x, q0.y), h4(q0.z, q0.w), h4(q1.x, q1.y), h4(q1.z, q1.w),
               h4(q2.x, q2.y), h4(q2.z, q2.w), h4(q3.x, q3.y), h4(q3.z, q3.w), 1.0);
}

//#section bf16
//#include matmul_decode.wgsl:types
//#include matmul_decode.wgsl:unscaled
// bf16 is the top half of an f32: the low half-word is the even column (moved up by a
// multiply, not a shift: see the note on shifts above).
fn b4(a: u32, b: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(vec4<u32>(a * 65536u, a & 0xffff0000u, b * 65536u, b & 0xffff0000u));
}
fn load_pair(row4: u32, b: u32, j: u32) -> Pair {
  let q = w[row4 + 4u * b + j];
  return Pair(b4(q.x, q.y), b4(q.z, q.w));
}
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 4u * b;
  let q0 = w[i]; let q1 = w[i + 1u]; let q2 = w[i + 2u]; let q3 = w[i + 3u];
  return Block(b4(q0.x, q0.y), b4(q0.z, q0.w), b4(q1.x, q1.y), b4(q1.z, q1.w),
               b4(q2.x, q2.y), b4(q2.z, q2.w), b4(q3.x, q3.y), b4(q3.z, q3.w), 1.0);
}

//#section q8
//#include matmul_decode.wgsl:types
//#include matmul_decode.wgsl:f16scales
// Four int8 in one word, byte n = column 4j+n; sign-extended by shifting up then down.
fn i8x4(a: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(a) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 2u * b;
  let q0 = w[i]; let q1 = w[i + 1u];
  return Block(i8x4(q0.x), i8x4(q0.y), i8x4(q0.z), i8x4(q0.w),
               i8x4(q1.x), i8x4(q1.y), i8x4(q1.z), i8x4(q1.w), block_scale(row4, b));
}
// Raw: XOR 0x00808080 turns bytes 0..2 into q + 128 (0..255), masked in place (value
// (q+128)·256^n); byte 3 keeps its two's complement and is read as a signed field (q·2^24).
const XSCALE_LO = vec4<f32>(1.0, 0.00390625, 1.52587890625e-05, 5.9604644775390625e-08);
const XSCALE_HI = XSCALE_LO;
const QOFF_LO = vec4<f32>(128.0, 128.0, 128.0, 0.0);
const QOFF_HI = QOFF_LO;
const B_MASK = vec4<u32>(0xffu, 0xff00u, 0xff0000u, 0xff000000u);
fn u8x4raw(a: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(a ^ 0x00808080u) & B_MASK));
}
fn load_pair(row4: u32, b: u32, j: u32) -> Pair {
  let i = row4 + 2u * b + j / 2u;
  let k = 2u * (j % 2u);
  return Pair(u8x4raw(w[i][k]), u8x4raw(w[i][k + 1u]));
}
fn load_quads(row4: u32, b: u32) -> Block {
  let i = row4 + 2u * b;
  let q0 = w[i]; let q1 = w[i + 1u];
  return Block(u8x4raw(q0.x), u8x4raw(q0.y), u8x4raw(q0.z), u8x4raw(q0.w),
               u8x4raw(q1.x), u8x4raw(q1.y), u8x4raw(q1.z), u8x4raw(q1.w), 1.0);
}

//#section q4
//#include matmul_decode.wgsl:types
//#include matmul_decode.wgsl:f16scales
// Eight u4 in one word, nibble n = column 8j+n, stored with a +8 offset.
const NIB_LO = vec4<u32>(0u, 4u, 8u, 12u);
const NIB_HI = vec4<u32>(16u, 20u, 24u, 28u);
fn u4x4(a: u32, sh: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>((vec4<u32>(a) >> sh) & vec4<u32>(15u))) - vec4<f32>(8.0);
}
fn load_block(row4: u32, b: u32) -> Block {
  let q = w[row4 + b];
  return Block(u4x4(q.x, NIB_LO), u4x4(q.x, NIB_HI), u4x4(q.y, NIB_LO), u4x4(q.y, NIB_HI),
               u4x4(q.z, NIB_LO), u4x4(q.z, NIB_HI), u4x4(q.w, NIB_LO), u4x4(q.w, NIB_HI), block_scale(row4, b));
}
// Raw: nibbles 0..6 masked in place (value u·16^n, u = q + 8); XOR 0x80000000 flips the bias
// bit of nibble 7, whose field read as signed is then q itself (so QOFF_HI.w = 0).
const XSCALE_LO = vec4<f32>(1.0, 0.0625, 0.00390625, 0.000244140625);
const XSCALE_HI = vec4<f32>(1.52587890625e-05, 9.5367431640625e-07, 5.9604644775390625e-08, 3.725290298461914e-09);
const QOFF_LO = vec4<f32>(8.0);
const QOFF_HI = vec4<f32>(8.0, 8.0, 8.0, 0.0);
const N_LO = vec4<u32>(0xfu, 0xf0u, 0xf00u, 0xf000u);
const N_HI = vec4<u32>(0xf0000u, 0xf00000u, 0xf000000u, 0xf0000000u);
fn nib4(a: u32, m: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(a) & m));
}
fn load_pair(row4: u32, b: u32, j: u32) -> Pair {
  let q = w[row4 + b][j] ^ 0x80000000u;
  return Pair(nib4(q, N_LO), nib4(q, N_HI));
}
fn load_quads(row4: u32, b: u32) -> Block {
  let q = w[row4 + b] ^ vec4<u32>(0x80000000u);
  return Block(nib4(q.x, N_LO), nib4(q.x, N_HI), nib4(q.y, N_LO), nib4(q.y, N_HI),
               nib4(q.z, N_LO), nib4(q.z, N_HI), nib4(q.w, N_LO), nib4(q.w, N_HI), 1.0);
}

//#section f16scales
// Included by the q8 / q4 sections: their f16 block scales.
// f16 → f32 by rebiasing the exponent (normal halves) or scaling the mantissa (subnormals);
// no shifts (cheaper than unpack2x16float on CPU backends). Scales are never inf/NaN (packer: finite input).
fn half_to_f32(h: u32) -> f32 {
  let mag = h & 0x7fffu;
  let normal = bitcast<f32>(mag * 8192u + 0x38000000u);
  let sub = f32(bitcast<i32>(mag)) * 5.9604644775390625e-8;
  let v = select(normal, sub, mag < 0x400u);
  return select(v, -v, (h & 0x8000u) != 0u);
}
fn load_scales2(row4: u32, s4: u32, c: u32) -> vec2<f32> {
  let s = w[row4 + s4][c];
  return vec2<f32>(half_to_f32(s & 0xffffu), half_to_f32(s >> 16u));
}
fn block_scale(row4: u32, b: u32) -> f32 {
  return load_scales2(row4, p.scaleOffset / 4u + (b >> 3u), (b >> 1u) & 3u)[b & 1u];
}
fn load_block_raw(row4: u32, b: u32) -> Block {
  var k = load_quads(row4, b);
  k.s = block_scale(row4, b);
  return k;
}

//#section unscaled
// Included by the f32 / f16 / bf16 sections: their raw form is the exact value, no block scales.
const XSCALE_LO = vec4<f32>(1.0);
const XSCALE_HI = vec4<f32>(1.0);
const QOFF_LO = vec4<f32>(0.0);
const QOFF_HI = vec4<f32>(0.0);
fn load_quads(row4: u32, b: u32) -> Block { return load_block(row4, b); }
fn load_scales2(row4: u32, s4: u32, c: u32) -> vec2<f32> { return vec2<f32>(1.0); }
fn load_block_raw(row4: u32, b: u32) -> Block { return load_block(row4, b); }
