// Weight decoders of the matmul kernels, one function per format (src/engine/quantize.ts has
// the packed layout). The host appends exactly one of these `load_block_<fmt>` functions,
// renamed `load_block`, to matmul_gemv.wgsl / matmul_tiled.wgsl; both kernels bind the
// weight chunk as `w: array<vec4<u32>>` and the uniform as `p` (scaleOffset in u32 words).
//
// load_block(row4, b): the 32 weights of block b (columns 32b..32b+31) of the row whose
// first vec4 is w[row4], as eight vec4<f32> in column order, UNSCALED, plus the block's
// scale s (1 for f32/f16/bf16): weight[32b + 4i + j] = s * v_i[j]. Returning the scale apart
// lets the kernels multiply once per block instead of once per weight.
//
// load_block_raw(row4, b) with the constants XSCALE and QOFF: the cheap form the GEMV uses.
// weight[32b + 4i + j] = s * (v_i[j] * XSCALE[j] - QOFF), so the GEMV pre-multiplies each x
// quad by XSCALE once (it reuses x across many rows) and subtracts QOFF·sum(x) once per
// block. For q4/q8 this leaves each nibble/byte masked IN PLACE (no per-element shift,
// q·16^j instead of q): one AND and one int→float convert per weight. Power-of-two scales are
// exact in f32, so v·(x·XSCALE) = q·x bit for bit. f32/f16/bf16: raw = exact, XSCALE = 1, QOFF = 0.

struct Block {
  v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
  v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
  s: f32,
}

//#fmt f32
const XSCALE = vec4<f32>(1.0);
const QOFF = 0.0;
fn load_block_raw(row4: u32, b: u32) -> Block { return load_block(row4, b); }
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 8u * b;
  return Block(bitcast<vec4<f32>>(w[i]), bitcast<vec4<f32>>(w[i + 1u]), bitcast<vec4<f32>>(w[i + 2u]),
               bitcast<vec4<f32>>(w[i + 3u]), bitcast<vec4<f32>>(w[i + 4u]), bitcast<vec4<f32>>(w[i + 5u]),
               bitcast<vec4<f32>>(w[i + 6u]), bitcast<vec4<f32>>(w[i + 7u]), 1.0);
}

//#fmt f16
const XSCALE = vec4<f32>(1.0);
const QOFF = 0.0;
fn load_block_raw(row4: u32, b: u32) -> Block { return load_block(row4, b); }
fn h4(a: u32, b: u32) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(a), unpack2x16float(b));
}
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 4u * b;
  let q0 = w[i]; let q1 = w[i + 1u]; let q2 = w[i + 2u]; let q3 = w[i + 3u];
  return Block(h4(q0.x, q0.y), h4(q0.z, q0.w), h4(q1.x, q1.y), h4(q1.z, q1.w),
               h4(q2.x, q2.y), h4(q2.z, q2.w), h4(q3.x, q3.y), h4(q3.z, q3.w), 1.0);
}

//#fmt bf16
// bf16 is the top half of an f32: the low half-word is the even column.
const XSCALE = vec4<f32>(1.0);
const QOFF = 0.0;
fn load_block_raw(row4: u32, b: u32) -> Block { return load_block(row4, b); }
fn b4(a: u32, b: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
}
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 4u * b;
  let q0 = w[i]; let q1 = w[i + 1u]; let q2 = w[i + 2u]; let q3 = w[i + 3u];
  return Block(b4(q0.x, q0.y), b4(q0.z, q0.w), b4(q1.x, q1.y), b4(q1.z, q1.w),
               b4(q2.x, q2.y), b4(q2.z, q2.w), b4(q3.x, q3.y), b4(q3.z, q3.w), 1.0);
}

//#fmt q8
// Four int8 in one word, byte n = column 4j+n; sign-extended by shifting up then down.
fn i8x4(a: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(a) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
// f16 → f32 by rebiasing the exponent (normal halves) or scaling the mantissa (subnormals);
// cheaper than unpack2x16float on CPU backends. Scales are never inf/NaN (packer: finite input).
fn half_to_f32(h: u32) -> f32 {
  let mag = h & 0x7fffu;
  let normal = bitcast<f32>((mag << 13u) + 0x38000000u);
  let sub = f32(bitcast<i32>(mag)) * 5.9604644775390625e-8;
  let v = select(normal, sub, mag < 0x400u);
  return select(v, -v, (h & 0x8000u) != 0u);
}
fn block_scale(row4: u32, b: u32) -> f32 {
  let word = 4u * row4 + p.scaleOffset + (b >> 1u);
  return half_to_f32((w[word >> 2u][word & 3u] >> (16u * (b & 1u))) & 0xffffu);
}
fn load_block(row4: u32, b: u32) -> Block {
  let i = row4 + 2u * b;
  let q0 = w[i]; let q1 = w[i + 1u];
  return Block(i8x4(q0.x), i8x4(q0.y), i8x4(q0.z), i8x4(q0.w),
               i8x4(q1.x), i8x4(q1.y), i8x4(q1.z), i8x4(q1.w), block_scale(row4, b));
}
// Raw: XOR 0x80 turns each two's-complement byte into q + 128 (0..255); bytes 0..2 are masked
// in place (value (q+128)·256^n), byte 3 after a shift by 8 (so no value reaches bit 31).
const XSCALE = vec4<f32>(1.0, 0.00390625, 0.0000152587890625, 0.0000152587890625);
const QOFF = 128.0;
const B_MASK = vec4<u32>(0xffu, 0xff00u, 0xff0000u, 0xff0000u);
const B_SHIFT = vec4<u32>(0u, 0u, 0u, 8u);
fn u8x4raw(a: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>((vec4<u32>(a ^ 0x80808080u) >> B_SHIFT) & B_MASK));
}
fn load_block_raw(row4: u32, b: u32) -> Block {
  let i = row4 + 2u * b;
  let q0 = w[i]; let q1 = w[i + 1u];
  return Block(u8x4raw(q0.x), u8x4raw(q0.y), u8x4raw(q0.z), u8x4raw(q0.w),
               u8x4raw(q1.x), u8x4raw(q1.y), u8x4raw(q1.z), u8x4raw(q1.w), block_scale(row4, b));
}

//#fmt q4
// Eight u4 in one word, nibble n = column 8j+n, stored with a +8 offset.
const NIB_LO = vec4<u32>(0u, 4u, 8u, 12u);
const NIB_HI = vec4<u32>(16u, 20u, 24u, 28u);
fn u4x4(a: u32, sh: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>((vec4<u32>(a) >> sh) & vec4<u32>(15u))) - vec4<f32>(8.0);
}
fn half_to_f32(h: u32) -> f32 {
  let mag = h & 0x7fffu;
  let normal = bitcast<f32>((mag << 13u) + 0x38000000u);
  let sub = f32(bitcast<i32>(mag)) * 5.9604644775390625e-8;
  let v = select(normal, sub, mag < 0x400u);
  return select(v, -v, (h & 0x8000u) != 0u);
}
fn block_scale(row4: u32, b: u32) -> f32 {
  let word = 4u * row4 + p.scaleOffset + (b >> 1u);
  return half_to_f32((w[word >> 2u][word & 3u] >> (16u * (b & 1u))) & 0xffffu);
}
fn load_block(row4: u32, b: u32) -> Block {
  let q = w[row4 + b];
  return Block(u4x4(q.x, NIB_LO), u4x4(q.x, NIB_HI), u4x4(q.y, NIB_LO), u4x4(q.y, NIB_HI),
               u4x4(q.z, NIB_LO), u4x4(q.z, NIB_HI), u4x4(q.w, NIB_LO), u4x4(q.w, NIB_HI), block_scale(row4, b));
}
// Raw: nibbles 0..3 masked in place (value q·16^n), nibbles 4..7 the same after a shift by 16.
const XSCALE = vec4<f32>(1.0, 0.0625, 0.00390625, 0.000244140625);
const QOFF = 8.0;
const N_MASK = vec4<u32>(0xfu, 0xf0u, 0xf00u, 0xf000u);
fn n4raw(a: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(a) & N_MASK));
}
fn load_block_raw(row4: u32, b: u32) -> Block {
  let q = w[row4 + b];
  return Block(n4raw(q.x), n4raw(q.x >> 16u), n4raw(q.y), n4raw(q.y >> 16u),
               n4raw(q.z), n4raw(q.z >> 16u), n4raw(q.w), n4raw(q.w >> 16u), block_scale(row4, b));
}
