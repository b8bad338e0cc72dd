// Subgroup variants of the two decode GEMVs; matmulShaderCode splices one part into its kernel
// (comment lines dropped) and prepends `enable subgroups;` and the uniformity diagnostic.
//#part coop
// Reduction tail of matmul_gemv.wgsl for adapters with `subgroups`: replaces the text between
// //#reduce and //#end. The subgroup holding thread 0 adds every row's WG partials, each lane
// a strided share, and subgroupAdd finishes the row; nothing is assumed about how invocations
// map to subgroups. The branch is uniform per subgroup (subgroupAny), which WGSL's analysis
// cannot see, hence the diagnostic directive the host prepends.
  if (subgroupAny(lid == 0u)) {
    for (var r = 0u; r < ROWS; r++) {
      var s = 0.0;
      for (var i = sgLane; i < WG; i += sgSize) {
        s += partial[r * WG + i];
      }
      s = subgroupAdd(s);
      if (lid == 0u && row0 + r < p.rows) {
        out[p.outOffset + row0 + r] = s;
      }
    }
  }
//#part rows
// x slice of matmul_gemv_rows.wgsl (replaces its //#x .. //#end): lane `sg` of a 4-lane
// subgroup loads quads sg and sg + 4 of the block and the group broadcasts them, 2 loads per
// lane instead of 8. The host uses this part only where the adapter's subgroup size is
// exactly 4 (SwiftShader); every lane is active (the kernel has no early return).
  let q = xbase(xo + 32u * b);
  let c = 32u * b;
  let u = xquadm(q, sg, c);
  let v = xquadm(q, sg + 4u, c);
  return prep_x(XBlock(subgroupBroadcast(u, 0u), subgroupBroadcast(u, 1u), subgroupBroadcast(u, 2u), subgroupBroadcast(u, 3u),
                       subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)));
