;; matmul_rows: o(m, d) = x(m, n) @ W(d, n)^T in f32 with WebAssembly SIMD (f32x4), for the
;; fast CPU forward (cpu-batch.ts). All pointers are byte offsets into the imported memory.
;;
;; Every output element o[r, i] is computed by ONE fixed sequence, whichever path below computes
;; it and whatever else is in the batch (batch invariance):
;;   lane l (l = 0..3) accumulates w[i, j] * x[r, j] for j = l, l + 4, ... < n4 (n4 = n & ~3),
;;   in order, in f32 (a multiply then an add: no fused multiply-add);
;;   s = (lane0 + lane1) + (lane2 + lane3);
;;   then s += w[i, j] * x[r, j] for j = n4 .. n - 1, in order.
;;
;; Paths: 4 weight rows × 2 input rows (8 accumulators: each weight vector loaded once serves two
;; rows, each x vector four rows), 4 × 1 for an odd last input row (decode steps are all this
;; path), and 1 × 1 for the last d % 4 weight rows. A block of 4 weight rows is read once from
;; memory for every input row of the pass: the point of batching on a CPU.
;;
;; Host contract (cpu-batch.ts): memory exported as "memory"; o, x, w 4-byte aligned (v128 loads
;; use align=4, so they need no 16-byte alignment); o does not overlap x or w.
(module
  (memory (export "memory") 1)

  ;; the fixed reduction order of one output element (see the header)
  (func $hsum (param $v v128) (result f32)
    (f32.add
      (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
      (f32.add (f32x4.extract_lane 2 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))

  ;; s + sum_{j = n4}^{n-1} w[j] * x[j], in order (w, x: byte offsets of the row starts)
  (func $tail (param $s f32) (param $w i32) (param $x i32) (param $n4 i32) (param $n i32) (result f32)
    (local $j i32)
    (local.set $j (local.get $n4))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $j) (local.get $n)))
        (local.set $s (f32.add (local.get $s)
          (f32.mul (f32.load (i32.add (local.get $w) (i32.shl (local.get $j) (i32.const 2))))
                   (f32.load (i32.add (local.get $x) (i32.shl (local.get $j) (i32.const 2)))))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $next)))
    (local.get $s))

  (func (export "matmul_rows") (param $o i32) (param $x i32) (param $w i32) (param $n i32) (param $d i32) (param $m i32)
    (local $i i32) (local $r i32) (local $j i32) (local $n4 i32) (local $rowB i32) (local $d4 i32)
    (local $w0 i32) (local $w1 i32) (local $w2 i32) (local $w3 i32) (local $x0 i32) (local $x1 i32) (local $oo i32)
    (local $a v128) (local $b v128) (local $p0 v128) (local $p1 v128) (local $p2 v128) (local $p3 v128)
    (local $s00 v128) (local $s10 v128) (local $s20 v128) (local $s30 v128)
    (local $s01 v128) (local $s11 v128) (local $s21 v128) (local $s31 v128)
    (local.set $n4 (i32.and (local.get $n) (i32.const -4)))
    (local.set $rowB (i32.shl (local.get $n) (i32.const 2)))     ;; bytes per row of W and x
    (local.set $d4 (i32.and (local.get $d) (i32.const -4)))
    ;; ---- blocks of 4 weight rows ----
    (local.set $i (i32.const 0))
    (block $iDone
      (loop $iNext
        (br_if $iDone (i32.ge_u (local.get $i) (local.get $d4)))
        (local.set $w0 (i32.add (local.get $w) (i32.mul (local.get $i) (local.get $rowB))))
        (local.set $w1 (i32.add (local.get $w0) (local.get $rowB)))
        (local.set $w2 (i32.add (local.get $w1) (local.get $rowB)))
        (local.set $w3 (i32.add (local.get $w2) (local.get $rowB)))
        ;; -- pairs of input rows: 4 × 2 --
        (local.set $r (i32.const 0))
        (block $rDone
          (loop $rNext
            (br_if $rDone (i32.gt_u (i32.add (local.get $r) (i32.const 2)) (local.get $m)))
            (local.set $x0 (i32.add (local.get $x) (i32.mul (local.get $r) (local.get $rowB))))
            (local.set $x1 (i32.add (local.get $x0) (local.get $rowB)))
            (local.set $s00 (v128.const f32x4 0 0 0 0)) (local.set $s10 (v128.const f32x4 0 0 0 0))
            (local.set $s20 (v128.const f32x4 0 0 0 0)) (local.set $s30 (v128.const f32x4 0 0 0 0))
            (local.set $s01 (v128.const f32x4 0 0 0 0)) (local.set $s11 (v128.const f32x4 0 0 0 0))
            (local.set $s21 (v128.const f32x4 0 0 0 0)) (local.set $s31 (v128.const f32x4 0 0 0 0))
            (local.set $j (i32.const 0))
            (block $jDone
              (loop $jNext
                (br_if $jDone (i32.ge_u (local.get $j) (i32.shl (local.get $n4) (i32.const 2))))
                (local.set $a (v128.load align=4 (i32.add (local.get $x0) (local.get $j))))
                (local.set $b (v128.load align=4 (i32.add (local.get $x1) (local.get $j))))
                (local.set $p0 (v128.load align=4 (i32.add (local.get $w0) (local.get $j))))
                (local.set $p1 (v128.load align=4 (i32.add (local.get $w1) (local.get $j))))
                (local.set $p2 (v128.load align=4 (i32.add (local.get $w2) (local.get $j))))
                (local.set $p3 (v128.load align=4 (i32.add (local.get $w3) (local.get $j))))
                (local.set $s00 (f32x4.add (local.get $s00) (f32x4.mul (local.get $p0) (local.get $a))))
                (local.set $s10 (f32x4.add (local.get $s10) (f32x4.mul (local.get $p1) (local.get $a))))
                (local.set $s20 (f32x4.add (local.get $s20) (f32x4.mul (local.get $p2) (local.get $a))))
                (local.set $s30 (f32x4.add (local.get $s30) (f32x4.mul (local.get $p3) (local.get $a))))
                (local.set $s01 (f32x4.add (local.get $s01) (f32x4.mul (local.get $p0) (local.get $b))))
                (local.set $s11 (f32x4.add (local.get $s11) (f32x4.mul (local.get $p1) (local.get $b))))
                (local.set $s21 (f32x4.add (local.get $s21) (f32x4.mul (local.get $p2) (local.get $b))))
                (local.set $s31 (f32x4.add (local.get $s31) (f32x4.mul (local.get $p3) (local.get $b))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $jNext)))
            ;; o[r, i..i+3] and o[r+1, i..i+3]
            (local.set $oo (i32.add (local.get $o) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $d)) (local.get $i)) (i32.const 2))))
            (f32.store offset=0 (local.get $oo) (call $tail (call $hsum (local.get $s00)) (local.get $w0) (local.get $x0) (local.get $n4) (local.get $n)))
            (f32.store offset=4 (local.get $oo) (call $tail (call $hsum (local.get $s10)) (local.get $w1) (local.get $x0) (local.get $n4) (local.get $n)))
            (f32.store offset=8 (local.get $oo) (call $tail (call $hsum (local.get $s20)) (local.get $w2) (local.get $x0) (local.get $n4) (local.get $n)))
            (f32.store offset=12 (local.get $oo) (call $tail (call $hsum (local.get $s30)) (local.get $w3) (local.get $x0) (local.get $n4) (local.get $n)))
            (local.set $oo (i32.add (local.get $oo) (i32.shl (local.get $d) (i32.const 2))))
            (f32.store offset=0 (local.get $oo) (call $tail (call $hsum (local.get $s01)) (local.get $w0) (local.get $x1) (local.get $n4) (local.get $n)))
            (f32.store offset=4 (local.get $oo) (call $tail (call $hsum (local.get $s11)) (local.get $w1) (local.get $x1) (local.get $n4) (local.get $n)))
            (f32.store offset=8 (local.get $oo) (call $tail (call $hsum (local.get $s21)) (local.get $w2) (local.get $x1) (local.get $n4) (local.get $n)))
            (f32.store offset=12 (local.get $oo) (call $tail (call $hsum (local.get $s31)) (local.get $w3) (local.get $x1) (local.get $n4) (local.get $n)))
            (local.set $r (i32.add (local.get $r) (i32.const 2)))
            (br $rNext)))
        ;; -- the odd last input row: 4 × 1 --
        (if (i32.lt_u (local.get $r) (local.get $m))
          (then
            (local.set $x0 (i32.add (local.get $x) (i32.mul (local.get $r) (local.get $rowB))))
            (local.set $s00 (v128.const f32x4 0 0 0 0)) (local.set $s10 (v128.const f32x4 0 0 0 0))
            (local.set $s20 (v128.const f32x4 0 0 0 0)) (local.set $s30 (v128.const f32x4 0 0 0 0))
            (local.set $j (i32.const 0))
            (block $jDone1
              (loop $jNext1
                (br_if $jDone1 (i32.ge_u (local.get $j) (i32.shl (local.get $n4) (i32.const 2))))
                (local.set $a (v128.load align=4 (i32.add (local.get $x0) (local.get $j))))
                (local.set $s00 (f32x4.add (local.get $s00) (f32x4.mul (v128.load align=4 (i32.add (local.get $w0) (local.get $j))) (local.get $a))))
                (local.set $s10 (f32x4.add (local.get $s10) (f32x4.mul (v128.load align=4 (i32.add (local.get $w1) (local.get $j))) (local.get $a))))
                (local.set $s20 (f32x4.add (local.get $s20) (f32x4.mul (v128.load align=4 (i32.add (local.get $w2) (local.get $j))) (local.get $a))))
                (local.set $s30 (f32x4.add (local.get $s30) (f32x4.mul (v128.load align=4 (i32.add (local.get $w3) (local.get $j))) (local.get $a))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $jNext1)))
            (local.set $oo (i32.add (local.get $o) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $d)) (local.get $i)) (i32.const 2))))
            (f32.store offset=0 (local.get $oo) (call $tail (call $hsum (local.get $s00)) (local.get $w0) (local.get $x0) (local.get $n4) (local.get $n)))
            (f32.store offset=4 (local.get $oo) (call $tail (call $hsum (local.get $s10)) (local.get $w1) (local.get $x0) (local.get $n4) (local.get $n)))
            (f32.store offset=8 (local.get $oo) (call $tail (call $hsum (local.get $s20)) (local.get $w2) (local.get $x0) (local.get $n4) (local.get $n)))
            (f32.store offset=12 (local.get $oo) (call $tail (call $hsum (local.get $s30)) (local.get $w3) (local.get $x0) (local.get $n4) (local.get $n)))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $iNext)))
    ;; ---- the last d % 4 weight rows: 1 × 1 ----
    (block $iDone2
      (loop $iNext2
        (br_if $iDone2 (i32.ge_u (local.get $i) (local.get $d)))
        (local.set $w0 (i32.add (local.get $w) (i32.mul (local.get $i) (local.get $rowB))))
        (local.set $r (i32.const 0))
        (block $rDone2
          (loop $rNext2
            (br_if $rDone2 (i32.ge_u (local.get $r) (local.get $m)))
            (local.set $x0 (i32.add (local.get $x) (i32.mul (local.get $r) (local.get $rowB))))
            (local.set $s00 (v128.const f32x4 0 0 0 0))
            (local.set $j (i32.const 0))
            (block $jDone2
              (loop $jNext2
                (br_if $jDone2 (i32.ge_u (local.get $j) (i32.shl (local.get $n4) (i32.const 2))))
                (local.set $s00 (f32x4.add (local.get $s00)
                  (f32x4.mul (v128.load align=4 (i32.add (local.get $w0) (local.get $j))) (v128.load align=4 (i32.add (local.get $x0) (local.get $j))))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $jNext2)))
            (f32.store
              (i32.add (local.get $o) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $d)) (local.get $i)) (i32.const 2)))
              (call $tail (call $hsum (local.get $s00)) (local.get $w0) (local.get $x0) (local.get $n4) (local.get $n)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rNext2)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $iNext2)))))
