// Top-k candidates per logits row (k <= 64), sorted by logit descending, ties by lower id:
//   out(m, 0, r) = id of the r-th largest logit of row m,  out(m, 1, r) = its f32 bits
// (row m occupies words [m*2k, (m+1)*2k)). A sampled step reads back 2k words per row.
// Algorithm: radix select on order-preserving u32 keys (key(a) > key(b) iff a > b; negative
// floats bit-inverted, positive ones get the sign bit set). Four rounds of 8 bits: round r
// builds a 256-bin histogram (workgroup atomics) of digit r among the keys whose higher
// digits equal the prefix chosen so far, then picks the digit where the count from the top
// reaches k. After 4 rounds the prefix is T, the k-th largest key, and `need` says how many
// keys equal to T belong in the top k. A gather pass then places every key > T and the
// first `need` keys == T in index order (contiguous per-thread chunks + an exclusive prefix
// sum keep it deterministic), and a rank sort orders the k candidates.
// Thread mapping: one workgroup per row (dispatch (M, 1, 1)).
// Host constants: Params mirrors TopkParams in topk.ts (16 bytes); override WG; MAX_K = 64.

override WG: u32 = 256;
const MAX_K: u32 = 64u;

struct Params {
  vocab: u32,
  k: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> selPrefix: u32;
var<workgroup> selNeed: u32;
var<workgroup> cntAbove: array<u32, WG>;
var<workgroup> cntEq: array<u32, WG>;
var<workgroup> candKey: array<u32, MAX_K>;
var<workgroup> candIdx: array<u32, MAX_K>;

fn orderKey(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn keyBits(key: u32) -> u32 {
  return select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let vocab = params.vocab;
  let k = params.k;
  let base = wid.x * vocab;
  var prefix = 0u;
  var need = k;
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    for (var b = lid; b < 256u; b += WG) {
      atomicStore(&hist[b], 0u);
    }
    workgroupBarrier();
    for (var j = lid; j < vocab; j += WG) {
      let key = orderKey(logits[base + j]);
      // (x >> 32) is not allowed in WGSL; round 0 has no higher digits to match.
      if (round == 0u || (key >> (shift + 8u)) == (prefix >> (shift + 8u))) {
        atomicAdd(&hist[(key >> shift) & 255u], 1u);
      }
    }
    workgroupBarrier();
    if (lid == 0u) {
      var cum = 0u;
      for (var b = 255i; b >= 0i; b--) {
        let h = atomicLoad(&hist[u32(b)]);
        if (cum + h >= need) {
          prefix = prefix | (u32(b) << shift);
          need = need - cum;
          break;
        }
        cum += h;
      }
      selPrefix = prefix;
      selNeed = need;
    }
    prefix = workgroupUniformLoad(&selPrefix);
    need = workgroupUniformLoad(&selNeed);
  }

  // Gather: keys > T all go in (k - need of them), keys == T fill the last `need` slots in index order.
  let t = prefix;
  let chunk = (vocab + WG - 1u) / WG;
  let j0 = min(vocab, lid * chunk);
  let j1 = min(vocab, j0 + chunk);
  var a = 0u;
  var e = 0u;
  for (var j = j0; j < j1; j++) {
    let key = orderKey(logits[base + j]);
    a += select(0u, 1u, key > t);
    e += select(0u, 1u, key == t);
  }
  cntAbove[lid] = a;
  cntEq[lid] = e;
  workgroupBarrier();
  var offA = 0u;
  var offE = 0u;
  for (var i = 0u; i < lid; i++) {
    offA += cntAbove[i];
    offE += cntEq[i];
  }
  let firstEq = k - need;
  for (var j = j0; j < j1; j++) {
    let key = orderKey(logits[base + j]);
    if (key > t) {
      candKey[offA] = key;
      candIdx[offA] = j;
      offA++;
    } else if (key == t) {
      if (offE < need) {
        candKey[firstEq + offE] = key;
        candIdx[firstEq + offE] = j;
      }
      offE++;
    }
  }
  workgroupBarrier();

  let outBase = wid.x * 2u * k;
  for (var c = lid; c < k; c += WG) {
    let kc = candKey[c];
    let ic = candIdx[c];
    var rank = 0u;
    for (var j = 0u; j < k; j++) {
      let kj = candKey[j];
      rank += select(0u, 1u, kj > kc || (kj == kc && candIdx[j] < ic));
    }
    out[outBase + rank] = ic;
    out[outBase + k + rank] = keyBits(kc);
  }
}
