// The uniform of every matmul shader (binding 0, `p`), included by each kernel file.
// packMatmulParams() in matmul.ts writes it field by field in this order (MATMUL_PARAM_FIELDS);
// matmul-wgsl.test.ts checks the names, their order and the byte size against it.
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
