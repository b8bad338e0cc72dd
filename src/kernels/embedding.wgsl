// Embedding lookup from a packed table (layout: src/engine/quantize.ts / matmul-layout.ts):
//   out(m, c) = E(ids(m), c)   for m < M, c < cols
// E is one row chunk [rowStart, rowStart + rows) of the table (a table over the binding
// limit is split; the host dispatches once per chunk and each dispatch writes only the rows
// whose id falls in its chunk). Values are dequantized exactly as the matmul sees them:
//   FORMAT 0 f32 | 1 f16 | 2 bf16 | 3 q8 (int8 * f16 scale per 32) | 4 q4 ((u4 - 8) * f16 scale)
// Thread mapping: one thread per (m, c), flat over count = M * cols on a 2-D grid.
// Host constants: Params mirrors EmbeddingParams in embedding.ts (32 bytes); overrides WG, FORMAT.

override WG: u32 = 256;
override FORMAT: u32 = 0u;

struct Params {
  cols: u32,
  rowWords: u32,
  scaleWordOffset: u32,
  rowStart: u32,
  rows: u32,
  count: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn half(word: u32, hi: bool) -> f32 {
  let p = unpack2x16float(word);
  return select(p.x, p.y, hi);
}

fn scale(base: u32, c: u32) -> f32 {
  let g = c / 32u;
  return half(table[base + params.scaleWordOffset + g / 2u], (g & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= params.count) {
    return;
  }
  let m = idx / params.cols;
  let c = idx % params.cols;
  let id = ids[m];
  if (id < params.rowStart || id >= params.rowStart + params.rows) {
    return;
  }
  let base = (id - params.rowStart) * params.rowWords;
  var v: f32;
  switch FORMAT {
    case 0u: {
      v = bitcast<f32>(table[base + c]);
    }
    case 1u: {
      v = half(table[base + c / 2u], (c & 1u) == 1u);
    }
    case 2u: {
      v = bitcast<f32>(((table[base + c / 2u] >> (16u * (c & 1u))) & 0xffffu) << 16u);
    }
    case 3u: {
      let q = i32(table[base + c / 4u] << (24u - 8u * (c & 3u))) >> 24u;
      v = f32(q) * scale(base, c);
    }
    default: {
      let q = i32((table[base + c / 8u] >> (4u * (c & 7u))) & 0xfu) - 8;
      v = f32(q) * scale(base, c);
    }
  }
  out[m * params.cols + c] = v;
}
