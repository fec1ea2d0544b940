#!/bin/sh
# Runs the CUDA backend on the CPU: the kernels of matvec.cu and ops.cu
# compiled as C++ (launches rewritten by transform.py, one fiber per CUDA
# thread, blocks in turn), the real host code (decode.c, upload.c), a fake
# runtime and a naive cuBLAS GemmEx with cuBLAS's column-major semantics.
# It checks the logic (indexing, reductions, barriers, graph replay, cuBLAS
# arguments) on machines without a GPU; it says nothing about speed, the
# memory model, alignment faults or races. Slow: use small models.
#   engine/cuda/emu/run.sh BUILD MODEL.gguf [batch|by6|by1] [N_PROMPT] [N_STEPS] [N_CTX]
# BUILD is a CUDA=1 build directory (its engine objects are reused).
# Prints the worst relative RMS error of the logits against the CPU backend.
set -eu
build=$(cd "$1" && pwd)
shift
src=$(cd "$(dirname "$0")/../../.." && pwd)
work=${EMU_WORK:-$build/cuda-emu}
mkdir -p "$work"
cxx="g++ -std=c++17 -O2 -g -I$src/engine -I$src/engine/cuda -I$src/common -isystem /usr/local/cuda/include -D_GNU_SOURCE"
for f in matvec ops topk; do
        python3 "$src/engine/cuda/emu/transform.py" "$src/engine/cuda/$f.cu" >"$work/$f.emu.cpp"
        $cxx -x c++ -Wno-unknown-pragmas -include "$src/engine/cuda/emu/emu.h" -c "$work/$f.emu.cpp" -o "$work/$f.o"
done
$cxx -x c++ -Wno-unknown-pragmas -c "$src/engine/cuda/selftest.cu" -o "$work/selftest.o"
$cxx -I"$src/engine/cuda/emu" -c "$src/engine/cuda/emu/emu.cpp" -o "$work/emu.o"
gcc -std=gnu11 -O2 -D_GNU_SOURCE -I"$src/engine" -I"$src/common" -c "$src/engine/cuda/emu/parity.c" -o "$work/parity.o"
# shellcheck disable=SC2046
g++ -pthread -o "$work/parity" "$work/parity.o" $(ls "$build"/obj/engine/*.o) "$build/obj/engine/cuda/decode.o" \
        "$build/obj/engine/cuda/upload.o" "$build/obj/engine/cuda/topk-check.o" "$work/matvec.o" "$work/ops.o" "$work/topk.o" "$work/emu.o" "$work/selftest.o" \
        "$build/librbee-common.a" $(pkg-config --libs libsystemd libmicrohttpd sqlite3 libcurl json-c openblas) -lm
[ $# -gt 0 ] && exec "$work/parity" "$@"
echo "built $work/parity"
