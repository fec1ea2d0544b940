#!/bin/sh
# The CUDA backend's checks on a machine with a GPU, as one time-boxed run:
# build, parity and golden tests, compute-sanitizer memcheck on the parity
# tests, and llama-bench-like speed figures on TinyLlama-1.1B-shaped files.
#   engine/cuda/gpu-check.sh [OUTDIR]     (default: $OUT, else /tmp/rbee-gpu-check)
# Environment: BUILD (default build), JOBS (make -j, default nproc),
# TYPES (default "Q4_0 Q8_0 Q4_K_M"), SKIP_BENCH=1, SKIP_SANITIZER=1, and
# NO_BUILD=1 to use binaries built elsewhere (a GPU machine without nvcc):
# $BUILD/tests/test-cuda, rbee-mkmodel, rbee-bench.
set -u
out=${1:-${OUT:-/tmp/rbee-gpu-check}}
build=${BUILD:-build}
case $build in /*) ;; *) build=$PWD/$build ;; esac
jobs=${JOBS:-$(nproc)}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

log "$(date -u) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$out/summary.txt"

if [ -z "${NO_BUILD:-}" ]; then
        log "build (CUDA=1)"
        if ! make BUILD="$build" CUDA=1 -j"$jobs" all "$build/tests/test-cuda" >"$out/build.log" 2>&1; then
                tail -40 "$out/build.log" | tee -a "$out/summary.txt"
                exit 1
        fi
        grep -i warning "$out/build.log" | head -20 | tee -a "$out/summary.txt"
else
        log "using the binaries in $build"
fi

log "test-cuda"
RBEE_BUILD=$build "$build/tests/test-cuda" 2>&1 | tee "$out/test-cuda.txt" | tail -60 >>"$out/summary.txt"
tail -1 "$out/test-cuda.txt"

san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -z "${SKIP_SANITIZER:-}" ] && [ -x "$san" ]; then
        log "compute-sanitizer memcheck (llama_parity long_context shared_weights topk_kernel device_topk_matches_cpu)"
        RBEE_BUILD=$build "$san" --tool memcheck --target-processes all --error-exitcode 99 \
                "$build/tests/test-cuda" llama_parity long_context shared_weights topk_kernel \
                device_topk_matches_cpu >"$out/memcheck.txt" 2>&1
        echo "memcheck exit $?" | tee -a "$out/summary.txt"
        grep -E "ERROR SUMMARY|Invalid|out of bounds" "$out/memcheck.txt" | sort | uniq -c | head -20 |
                tee -a "$out/summary.txt"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
        mdir=${RBEE_BENCH_DIR:-/tmp/rbee-bench-models}
        mkdir -p "$mdir"
        models=""
        for t in ${TYPES:-Q4_0 Q8_0 Q4_K_M}; do
                f="$mdir/tinyllama-1.1b-$t.gguf"
                [ -s "$f" ] || "$build/rbee-mkmodel" --shape tinyllama-1.1b --type "$t" --seed 1 -j "$jobs" -q -o "$f"
                models="$models -m $f"
        done
        log "rbee-bench --device 0 (pp512 / tg128, 5 repetitions)"
        # shellcheck disable=SC2086
        "$build/rbee-bench" $models --device 0 -p 512 -n 128 -r 5 2>&1 | tee -a "$out/summary.txt"
fi
log "done $(date -u)"
