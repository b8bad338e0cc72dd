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
