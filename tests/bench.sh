#!/bin/sh
# make bench: write TinyLlama-1.1B-shaped models with rbee-mkmodel (once,
# cached under $RBEE_BENCH_DIR) and measure prompt and generation speed,
# plus the memory-bandwidth roofline. Figures go to BENCHMARKS.md by hand.
set -eu
build=${1:-build}
dir=${RBEE_BENCH_DIR:-$build/bench-models}
types=${RBEE_BENCH_TYPES:-"Q4_0 Q8_0"}
shape=${RBEE_BENCH_SHAPE:-tinyllama-1.1b}
threads=${RBEE_BENCH_THREADS:-1,2}
mkdir -p "$dir"

models=""
for t in $types; do
        f="$dir/$shape-$t.gguf"
        if [ ! -s "$f" ]; then
                echo "writing $f (once)" >&2
                "$build/rbee-mkmodel" --shape "$shape" --type "$t" --seed 1 -o "$f" >&2
        fi
        models="$models -m $f"
done

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
# shellcheck disable=SC2086
"$build/rbee-bench" $models -p "${RBEE_BENCH_PP:-512}" -n "${RBEE_BENCH_TG:-128}" -t "$threads" -r "${RBEE_BENCH_REPS:-3}" --membw
