// Reduction tail of matmul_gemv.wgsl for adapters with `subgroups`: replaces the text between
// //#reduce and //#end. All partials go to workgroup memory (one barrier); then the subgroup
// that holds thread 0 adds them, each lane a strided share, and subgroupAdd finishes. This
// assumes nothing about how invocations map to subgroups. The branch is uniform per
// subgroup (subgroupAny), which WGSL's analysis cannot see, hence the diagnostic directive.
  partial[lid] = acc;
  workgroupBarrier();
  if (subgroupAny(lid == 0u)) {
    var s = vec4<f32>(0.0);
    for (var i = sgLane; i < WG; i += sgSize) {
      s += partial[i];
    }
    s = subgroupAdd(s);
    if (lid == 0u) {
      for (var r = 0u; r < 4u; r++) {
        if (row0 + r < p.rows) {
          out[p.outOffset + row0 + r] = s[r];
        }
      }
    }
  }
