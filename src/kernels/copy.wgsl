// Plain buffer copy, dst[i] = src[i] for i < n vec4<u32> (16 bytes each): the bandwidth
// baseline that `duet bench kernels` holds the matmul kernels against (same adapter, same
// bytes moved). Thread-to-data: thread g copies vec4s g, g + T, g + 2T, ... where T is the
// total thread count (consecutive threads touch consecutive 16-byte words: coalesced).
// Dispatch: (min(groups, 65535), ceil(groups / 65535)) workgroups of WG threads.
// Host constants: Params mirrors the copy params in tools/bench/kernels.ts; WG is an override.

struct Params {
  n: u32,       // vec4<u32> to copy
  threads: u32, // T = total threads dispatched
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

override WG: u32 = 256;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var i = gid.x + gid.y * nwg.x * WG; i < p.n; i += p.threads) {
    dst[i] = src[i];
  }
}
