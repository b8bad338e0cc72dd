// Output epilogue of the matmul kernels (matmul_gemv.wgsl, matmul_gemv_rows.wgsl, their
// subgroup parts, matmul_tiled.wgsl), included by each: emit(i, v) stores out[i] = v, or,
// with ACCUMULATE, out[i] += v: the residual add of the engine (x += xb · Wᵀ) folded into the
// matmul, which saves one dispatch per use and computes the same f32 sum x + v as add.wgsl.
// Uses the kernel's `out` binding (read_write storage).

override ACCUMULATE: bool = false;

fn emit(i: u32, v: f32) {
  if (ACCUMULATE) {
    out[i] = out[i] + v;
  } else {
    out[i] = v;
  }
}
