#!/usr/bin/env bash
# The prepared GPU run (issue 12 item 6). On a machine with an NVIDIA GPU (Dawn on its Vulkan
# driver for the WGSL engine, torch CUDA for the sidecar) it runs, in under 8 minutes:
#   1. the kernel tests on the real adapter (src/kernels/*.test.ts)
#   2. duet bench kernels
#   3. duet bench verify at 1B/3B shapes (only where this checkout has that suite)
#   4. the padded targets (tiny target at Llama-3.2-1B and -3B cost, logits unchanged), generated
#      into a scratch dir (never committed), their logits checked on the CUDA sidecar (f32) and the
#      WGSL engine against the tiny target's
#   5. end to end through the gateway on the CUDA sidecar, tiny-draft drafting: adaptive k,
#      RTT 0/20 ms, pipelined or not, greedy and T = 0.7, each with its target-only baseline;
#      adaptive k without the k = 0 arm (pipelined, greedy: the runs whose speed of light is
#      defined, every token from a verify round); fixed k = 4; a slowed draft (--draft-delay-ms) with and without the k = 0 arm; the 3B-cost
#      target at RTT 0/20 (pipelined, greedy)
# and writes OUT/device.json + OUT/report.md (tools/bench/device-report.ts). Every step has its
# own timeout and status, so one failure costs its step, not the run.
#
#   tools/bench/device.sh [--out DIR] [--dry] [--skip-3b] [--e2e-only] [--repeats N]
#     --out DIR   results folder (default $OUT if set, else bench/device-<date>)
#     --dry       the same script at small sizes on whatever is here (SwiftShader, torch CPU):
#                 2 kernel test files, bench kernels --quick, a reduced-width padded target
#                 (hidden 640, MLP 1000, 7 layers), a CPU sidecar, fewer and shorter runs
#     --skip-3b   leave out the 3B-cost target (disk/time)
#     --e2e-only  only the full-size padded 1B-cost target: generate, check on the sidecar, and the
#                 end-to-end matrix (RTT $E2E_RTTS, default "0 20"; pipelined, adaptive; greedy and
#                 T = 0.7; the same without the k = 0 arm, greedy; the slowed draft with and
#                 without k = 0). On a CPU box this is the memory-bound regime the tiny pair
#                 never reaches (~13 min on 2 idle cores)
#     --repeats N every end-to-end run: both modes warmed up, then N runs each in alternating order,
#                 medians reported (duet speculate --repeats)
# Environment: SCRATCH (model scratch dir, default /tmp/duet-device), DRAFT_BACKEND (cpu|webgpu,
# default cpu), PY (default: the first of /usr/bin/python3, python3 that imports torch),
# SIDECAR_DTYPE (the end-to-end sidecar's --dtype: float32|bfloat16|float16; default its auto,
# float32 on a CPU and bfloat16 on CUDA).
set -uo pipefail

DRY=0
SKIP3B=0
E2E_ONLY=0
REPEATS=1
OUTDIR="${OUT:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --skip-3b) SKIP3B=1 ;;
    --e2e-only) E2E_ONLY=1; SKIP3B=1 ;;
    --repeats) REPEATS="$2"; shift ;;
    --out) OUTDIR="$2"; shift ;;
    -h|--help) sed -n 2,34p "$0"; exit 0 ;;
    *) echo "device.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT" || exit 1
[ -n "$OUTDIR" ] || OUTDIR="$ROOT/bench/device-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$OUTDIR/steps"
OUTDIR="$(cd "$OUTDIR" && pwd)"
S="$OUTDIR/steps"
SCRATCH="${SCRATCH:-/tmp/duet-device}"
mkdir -p "$SCRATCH"
# the python that has torch: $PY, else /usr/bin/python3 (Debian's python3-torch), else python3
if [ -z "${PY:-}" ]; then
  PY=python3
  for c in /usr/bin/python3 python3; do
    if "$c" -c 'import torch' 2>/dev/null; then PY="$c"; break; fi
  done
fi
DRAFT_BACKEND="${DRAFT_BACKEND:-cpu}"
DUET=(node bin/duet.mjs)
T0=$(date +%s)
GATEWAY_PID=""

cleanup() {
  # only the gateway this script started (its sidecar exits with it)
  if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then kill "$GATEWAY_PID"; wait "$GATEWAY_PID" 2>/dev/null; fi
  GATEWAY_PID=""
}
trap cleanup EXIT

# step NAME TIMEOUT_S CMD...: stdout/stderr to steps/NAME.{out,err}, status to steps/NAME.status.json
step() {
  local name="$1" limit="$2"; shift 2
  local t=$(date +%s)
  echo "[device.sh +$(( t - T0 ))s] $name (timeout ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" > "$S/$name.out" 2> "$S/$name.err"
  local rc=$?
  printf '{"name":"%s","rc":%d,"seconds":%d}\n' "$name" "$rc" "$(( $(date +%s) - t ))" > "$S/$name.status.json"
  [ "$rc" -eq 0 ] || echo "[device.sh] $name failed (rc $rc); see $S/$name.err" >&2
  return 0
}
skip() {
  printf '{"name":"%s","rc":null,"seconds":0,"skipped":"%s"}\n' "$1" "$2" > "$S/$1.status.json"
  echo "[device.sh] $1 skipped: $2" >&2
}

# ---- 0. what this machine is ----
GPU="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
TORCH="$($PY -c 'import torch; print(torch.__version__, "cuda" if torch.cuda.is_available() else "cpu-only")' 2>/dev/null || echo 'no torch')"
ADAPTER="$(timeout 60 npx tsx tools/bench/device-report.ts adapter 2>/dev/null | tail -1)"
[ -n "$ADAPTER" ] || ADAPTER='{"adapterName":null}'
CUDA=0
case "$TORCH" in *cuda) CUDA=1 ;; esac
SIDE_DEV=cpu
[ "$CUDA" -eq 1 ] && SIDE_DEV=cuda
cat > "$S/meta.json" <<EOF
{"date":"$(date -u +%Y-%m-%dT%H:%M:%SZ)","commit":"$(git rev-parse --short HEAD 2>/dev/null)","host":"$(hostname)","dry":$([ $DRY -eq 1 ] && echo true || echo false),
 "gpu":"${GPU:-none}","torch":"$TORCH","sidecarDevice":"$SIDE_DEV","sidecarDtype":"${SIDECAR_DTYPE:-auto}","draftBackend":"$DRAFT_BACKEND","cpus":$(nproc),"adapter":$ADAPTER}
EOF
echo "[device.sh] gpu: ${GPU:-none}; torch: $TORCH; adapter: $ADAPTER" >&2
if [ -n "$GPU" ] && echo "$ADAPTER" | grep -qi swiftshader; then
  echo "[device.sh] WARNING: an NVIDIA GPU is present but Dawn chose SwiftShader: install the NVIDIA Vulkan ICD (libnvidia-gl / nvidia_icd.json) or set VK_ICD_FILENAMES; WGSL figures below are CPU figures" >&2
fi

# ---- 1. kernel tests on the adapter ----
if [ $E2E_ONLY -eq 1 ]; then skip kernel-tests "--e2e-only"; skip bench-kernels "--e2e-only"; skip bench-verify "--e2e-only"
else
if [ $DRY -eq 1 ]; then KTESTS=(src/kernels/rmsnorm.test.ts src/kernels/add.test.ts); else KTESTS=(src/kernels); fi
step kernel-tests 200 npx vitest run "${KTESTS[@]}" --reporter=json --outputFile="$S/kernel-tests.json"

# ---- 2. duet bench kernels ----
if [ $DRY -eq 1 ]; then step bench-kernels 200 "${DUET[@]}" bench kernels --quick --no-engine --json "$S/bench-kernels.json"
else step bench-kernels 120 "${DUET[@]}" bench kernels --json "$S/bench-kernels.json"; fi

# ---- 3. duet bench verify (issue 11; guarded: the suite may not be in this checkout) ----
if "${DUET[@]}" bench --help 2>/dev/null | grep -qE '^  verify '; then
  if [ $DRY -eq 1 ]; then step bench-verify 120 "${DUET[@]}" bench verify --quick --json "$S/bench-verify.json"
  else step bench-verify 120 "${DUET[@]}" bench verify --json "$S/bench-verify.json"; fi
else skip bench-verify "no 'verify' suite in duet bench in this checkout"; fi
fi  # E2E_ONLY

# ---- 4. padded targets: generate, check logits ----
TOKENS=4091,17,250,1033,9,4000,77,2048,5,300,11
if [ $DRY -eq 1 ]; then
  P1="$SCRATCH/padded-dry"; GEN1=(--hidden 640 --mlp 1000 --layers 7)
else
  P1="$SCRATCH/padded-1b"; GEN1=(--like 1b)
fi
step padded-1b-gen 120 "${DUET[@]}" fixtures padded "${GEN1[@]}" --out "$P1" --json
cp "$S/padded-1b-gen.out" "$S/padded-1b.json" 2>/dev/null
SIDE_CHECK="$PY server/sidecar/main.py --model $P1 --device $SIDE_DEV --dtype float32 --max-sessions 1 --max-context 64"
step check-1b-sidecar 150 "${DUET[@]}" fixtures check-padded --model "$P1" --backend sidecar --sidecar-cmd "$SIDE_CHECK" --tokens "$TOKENS" --json
tail -1 "$S/check-1b-sidecar.out" > "$S/check-1b-sidecar.json"
[ $E2E_ONLY -eq 1 ] || step check-1b-webgpu 150 "${DUET[@]}" fixtures check-padded --model "$P1" --backend webgpu --tokens "$TOKENS" --json
[ $E2E_ONLY -eq 1 ] || tail -1 "$S/check-1b-webgpu.out" > "$S/check-1b-webgpu.json"
P3=""
if [ $DRY -eq 0 ] && [ $SKIP3B -eq 0 ]; then
  P3="$SCRATCH/padded-3b"
  step padded-3b-gen 200 "${DUET[@]}" fixtures padded --like 3b --out "$P3" --json
  cp "$S/padded-3b-gen.out" "$S/padded-3b.json" 2>/dev/null
fi

# ---- 5. end to end through the gateway on the sidecar ----
PROMPT="And Joseph fell upon his father's face, and wept upon him, and kissed him."
if [ $DRY -eq 1 ]; then NTOK=32; elif [ $E2E_ONLY -eq 1 ] && [ -z "${GPU:-}" ]; then NTOK=48; else NTOK=128; fi
NTOK="${E2E_TOKENS:-$NTOK}"

start_gateway() { # MODEL_DIR NAME
  cleanup
  local cmd="$PY server/sidecar/main.py --model $1 --device $SIDE_DEV --max-sessions 8 --max-context 1024${SIDECAR_DTYPE:+ --dtype $SIDECAR_DTYPE}"
  "${DUET[@]}" serve --port 0 --json --quiet --verifier sidecar --target "$1" --max-block 16 --sidecar-cmd "$cmd" > "$S/gateway-$2.out" 2> "$S/gateway-$2.err" &
  GATEWAY_PID=$!
  local i
  for i in $(seq 1 240); do
    WS="$(grep -o '"ws":"[^"]*"' "$S/gateway-$2.out" 2>/dev/null | head -1 | cut -d'"' -f4)"
    [ -n "$WS" ] && return 0
    kill -0 "$GATEWAY_PID" 2>/dev/null || break
    sleep 1
  done
  echo "[device.sh] gateway for $2 did not come up; see $S/gateway-$2.err" >&2
  return 1
}

# e2e NAME TARGET_LABEL RTT PIPELINE(0|1) TEMPERATURE MODE(adaptive|k4|no-k0) DRAFT_DELAY_MS
e2e() {
  local name="e2e-$1" label="$2" rtt="$3" pipe="$4" temp="$5" mode="$6" delay="$7"
  local args=(speculate --draft public/models/tiny-draft --gateway "$WS" --prompt "$PROMPT" --max-tokens "$NTOK" --backend "$DRAFT_BACKEND"
    --rtt-ms "$rtt" --temperature "$temp" --seed 1 --baseline --json)
  [ "$pipe" = 1 ] && args+=(--pipeline)
  case "$mode" in adaptive) args+=(--adaptive) ;; no-k0) args+=(--adaptive --no-k0) ;; k4) args+=(--k 4) ;; esac
  [ "$delay" != 0 ] && args+=(--draft-delay-ms "$delay")
  [ "$REPEATS" -gt 1 ] && args+=(--repeats "$REPEATS")
  step "$name" $(( 90 * REPEATS + 60 )) "${DUET[@]}" "${args[@]}"
  $PY - "$S/$name.out" "$S/$name.run.json" "$1" "$label" "$rtt" "$pipe" "$temp" "$mode" "$delay" <<'PYEOF'
import json, sys
src, dst, name, label, rtt, pipe, temp, mode, delay = sys.argv[1:]
run = {"name": name, "target": label, "verifier": "sidecar", "rttMs": float(rtt), "pipeline": pipe == "1", "temperature": float(temp), "mode": mode, "draftDelayMs": float(delay), "report": None}
try:
    lines = [l for l in open(src).read().splitlines() if l.startswith("{")]
    run["report"] = json.loads(lines[-1])
except Exception as e:
    run["error"] = f"{type(e).__name__}: {e}"
json.dump(run, open(dst, "w"))
PYEOF
}

if start_gateway "$P1" 1b; then
  L1=$([ $DRY -eq 1 ] && echo padded-dry || echo padded-1b)
  # warm-up (not reported): the first run after a load pays for cold caches
  "${DUET[@]}" speculate --draft public/models/tiny-draft --gateway "$WS" --prompt "$PROMPT" --max-tokens 16 --adaptive --baseline --json > /dev/null 2>&1
  if [ $E2E_ONLY -eq 1 ]; then
    for rtt in ${E2E_RTTS:-0 20}; do for temp in 0 0.7; do
      e2e "1b-rtt$rtt-pipe1-t$temp" "$L1" "$rtt" 1 "$temp" adaptive 0
    done
      # adaptive k without the k = 0 arm: every token from a verify round, so the run's speed of light is defined
      e2e "1b-rtt$rtt-pipe1-t0-nok0" "$L1" "$rtt" 1 0 no-k0 0
    done
    e2e 1b-rtt0-slowdraft-k0 "$L1" 0 0 0 adaptive 400
    e2e 1b-rtt0-slowdraft-nok0 "$L1" 0 0 0 no-k0 400
  elif [ $DRY -eq 1 ]; then
    e2e 1b-rtt0-pipe-greedy "$L1" 0 1 0 adaptive 0
    e2e 1b-rtt20-pipe-greedy "$L1" 20 1 0 adaptive 0
    e2e 1b-rtt0-pipe-t07 "$L1" 0 1 0.7 adaptive 0
    e2e 1b-slowdraft-k0 "$L1" 0 0 0 adaptive 20
  else
    for rtt in 0 20; do for pipe in 0 1; do for temp in 0 0.7; do
      e2e "1b-rtt$rtt-pipe$pipe-t$temp" "$L1" "$rtt" "$pipe" "$temp" adaptive 0
    done; done
      e2e "1b-rtt$rtt-pipe1-t0-nok0" "$L1" "$rtt" 1 0 no-k0 0
    done
    e2e 1b-rtt0-k4-greedy "$L1" 0 0 0 k4 0
    e2e 1b-rtt0-slowdraft-k0 "$L1" 0 0 0 adaptive 30
    e2e 1b-rtt0-slowdraft-nok0 "$L1" 0 0 0 no-k0 30
  fi
fi
if [ -n "$P3" ] && [ -d "$P3" ] && [ $(( $(date +%s) - T0 )) -lt 360 ] && start_gateway "$P3" 3b; then
  "${DUET[@]}" speculate --draft public/models/tiny-draft --gateway "$WS" --prompt "$PROMPT" --max-tokens 16 --adaptive --baseline --json > /dev/null 2>&1
  e2e 3b-rtt0-pipe1-t0 padded-3b 0 1 0 adaptive 0
  e2e 3b-rtt20-pipe1-t0 padded-3b 20 1 0 adaptive 0
elif [ -n "$P3" ]; then skip e2e-3b "time budget (over 360 s before the 3B gateway) or generation failed"; fi
cleanup

# ---- 6. one JSON + a short report ----
printf '{"wallS":%d}\n' "$(( $(date +%s) - T0 ))" > "$S/wall.json"
npx tsx tools/bench/device-report.ts report "$OUTDIR" > /dev/null
echo "[device.sh] done in $(( $(date +%s) - T0 )) s: $OUTDIR/device.json, $OUTDIR/report.md" >&2
