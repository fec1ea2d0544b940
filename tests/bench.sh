#!/bin/sh
# make bench: write TinyLlama-1.1B- and Qwen2.5-0.5B-shaped models with
# rbee-mkmodel (once, cached under $RBEE_BENCH_DIR), measure prompt and
# generation speed at each thread count plus the memory-bandwidth roofline,
# and leave the results in $build/bench/: results.jsonl (rbee-bench --json),
# bench.md (the table, with ratios to llama.cpp's figures) and bench.png
# (the same as a chart). Figures go to BENCHMARKS.md by hand.
set -eu
build=${1:-build}
dir=${RBEE_BENCH_DIR:-$build/bench-models}
out=$build/bench
types=${RBEE_BENCH_TYPES:-"Q4_0 Q4_K_M Q8_0 F16"}
shapes=${RBEE_BENCH_SHAPES:-${RBEE_BENCH_SHAPE:-"tinyllama-1.1b qwen2.5-0.5b"}}
threads=${RBEE_BENCH_THREADS:-1,2}
mkdir -p "$dir" "$out"

models=""
for s in $shapes; do
        for t in $types; do
                f="$dir/$s-$t.gguf"
                if [ ! -s "$f" ]; then
                        echo "writing $f (once)" >&2
                        "$build/rbee-mkmodel" --shape "$s" --type "$t" --seed 1 -q -o "$f" >&2
                fi
                models="$models -m $f"
        done
done

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
# One rbee-bench run per model, so that each starts with its own page cache
# warm-up and one failure does not lose the rest.
: > "$out/results.jsonl"
for m in $models; do
        [ "$m" = "-m" ] && continue
        # shellcheck disable=SC2086
        "$build/rbee-bench" -m "$m" -p "${RBEE_BENCH_PP:-512}" -n "${RBEE_BENCH_TG:-128}" -t "$threads" \
                -r "${RBEE_BENCH_REPS:-5}" --membw --json | tee -a "$out/results.jsonl"
done
"$build/rbee-bench-plot" -o "$out/bench.png" "$out/results.jsonl" | tee "$out/bench.md"
echo "table: $out/bench.md, chart: $out/bench.png"
