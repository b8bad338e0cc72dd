// The parts of the two decode GEMVs that differ between core WGSL and adapters with the
// `subgroups` feature, as sections `<part>.core` / `<part>.subgroups`, included as
// `<part>.{sg}`. They are text, not overrides, because WGSL cannot switch an `enable`
// directive or an entry point's builtins with a pipeline constant.
//   enable.*  the module's first lines: nothing, or `enable subgroups;` and the uniformity
//             diagnostic (the subgroup parts' branches are uniform per subgroup, which WGSL's
//             analysis cannot see)
//   coop.*    matmul_gemv.wgsl: CoopIn (entry-point builtins) and reduce_rows(inv, row0),
//             the reduction after the barrier
//   rows.*    matmul_gemv_rows.wgsl: RowsIn (entry-point builtins), sg_lane(inv) and
//             xslice(xo, b, sg), the pre-scaled x slice of block b of the token at f32 index xo

//#section enable.core
// core WGSL: no extension

//#section enable.subgroups
enable subgroups;
diagnostic(off, subgroup_uniformity);

//#section coop.core
struct CoopIn {
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
}

// Thread r < ROWS adds the WG partials of row r and writes it.
fn reduce_rows(inv: CoopIn, row0: u32) {
  let lid = inv.lid;
  if (lid < ROWS && row0 + lid < p.rows) {
    var s = 0.0;
    for (var i = 0u; i < WG; i++) {
      s += partial[lid * WG + i];
    }
    emit(p.outOffset + row0 + lid, s);
  }
}

//#section coop.subgroups
struct CoopIn {
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(subgroup_invocation_id) sgLane: u32,
  @builtin(subgroup_size) sgSize: u32,
}

// The subgroup holding thread 0 adds every row's WG partials, each lane a strided share, and
// subgroupAdd finishes the row; nothing is assumed about how invocations map to subgroups.
fn reduce_rows(inv: CoopIn, row0: u32) {
  let lid = inv.lid;
  if (subgroupAny(lid == 0u)) {
    for (var r = 0u; r < ROWS; r++) {
      var s = 0.0;
      for (var i = inv.sgLane; i < WG; i += inv.sgSize) {
        s += partial[r * WG + i];
      }
      s = subgroupAdd(s);
      if (lid == 0u && row0 + r < p.rows) {
        emit(p.outOffset + row0 + r, s);
      }
    }
  }
}

//#section rows.core
struct RowsIn {
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
}

fn sg_lane(inv: RowsIn) -> u32 {
  return 0u;
}

fn xslice(xo: u32, b: u32, sg: u32) -> XPrep {
  return prep_x(load_x(xo, b));
}

//#section rows.subgroups
struct RowsIn {
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(subgroup_invocation_id) sgLane: u32,
}

fn sg_lane(inv: RowsIn) -> u32 {
  return inv.sgLane;
}

// Lane `sg` of a 4-lane subgroup loads quads sg and sg + 4 of the block and the group
// broadcasts them, 2 loads per lane instead of 8. The host uses this part only where the
// adapter's subgroup size is exactly 4 (SwiftShader); every lane is active (the kernel has no
// early return).
fn xslice(xo: u32, b: u32, sg: u32) -> XPrep {
  let q = xbase(xo + 32u * b);
  let c = 32u * b;
  let u = xquadm(q, sg, c);
  let v = xquadm(q, sg + 4u, c);
  return prep_x(XBlock(subgroupBroadcast(u, 0u), subgroupBroadcast(u, 1u), subgroupBroadcast(u, 2u), subgroupBroadcast(u, 3u),
                       subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)));
}
