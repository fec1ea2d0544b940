#!/bin/sh
# SPDX-License-Identifier: MIT
# Bounded loopback load on rbee-hive (and, through it, one rbee-workerd):
# health, model list, model lookup, inference routing (native and OpenAI),
# then an optional soak that samples the daemons' RSS and open fds.
#
#   tests/load/run.sh BUILD_DIR                    (make load)
#   RBEE_LOAD_SECONDS=10  seconds per scenario (default 10)
#   RBEE_LOAD_CONNS=16    connections for the cheap endpoints (default 16)
#   RBEE_SOAK_SECONDS=600 the soak (make load SOAK=600); 0 = none (default)
#   RBEE_LOAD_OUT=DIR     keep the logs and soak.csv there
#   RBEE_LOAD_WRAPPER="valgrind --leak-check=full --error-exitcode=99"
#                         run the hive under a tool (its errors fail the run)
#   RBEE_LOAD_WORKERD=P   the worker program the hive starts (e.g. a script that
#                         execs rbee-workerd under valgrind)
#
# Only 200 (and 503 where admission control is meant to answer it) count as
# success; anything else, a broken connection, fds that grow over the soak,
# RSS that grows by more than 10% after warm-up, or a sanitizer report in a
# daemon's log fails the run. Build with SANITIZE=address for LeakSanitizer.
set -eu

BUILD=${1:?usage: run.sh BUILD_DIR}
SECS=${RBEE_LOAD_SECONDS:-10}
CONNS=${RBEE_LOAD_CONNS:-16}
SOAK=${RBEE_SOAK_SECONDS:-0}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
MODEL=${RBEE_SHARED:-$SRC/../shared}/models/stories260K.gguf
KEY=load-test-key
LOAD=$BUILD/rbee-load

[ -r "$MODEL" ] || { echo "load: $MODEL is missing (shared test data): skipped"; exit 0; }
for p in rbee-hive rbee-workerd rbee-load; do
        [ -x "$BUILD/$p" ] || { echo "load: $BUILD/$p is not built" >&2; exit 1; }
done

T=$(mktemp -d /tmp/rbee-load-XXXXXX)
OUT=${RBEE_LOAD_OUT:-$T/out}
mkdir -p "$OUT"
HIVE_PID=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
        if [ -n "$HIVE_PID" ]; then
                kill "$HIVE_PID" 2>/dev/null || true
                wait "$HIVE_PID" 2>/dev/null || true
        fi
        [ -n "${RBEE_LOAD_OUT:-}" ] || rm -rf "$T"
}
trap cleanup EXIT INT TERM

# shellcheck disable=SC2086 # the wrapper is a command line
RBEE_API_KEY=$KEY ${RBEE_LOAD_WRAPPER:-} "$BUILD/rbee-hive" --units=process --state-dir "$T/state" --runtime-dir "$T/run" \
        --workerd "${RBEE_LOAD_WORKERD:-$BUILD/rbee-workerd}" --listen 127.0.0.1:0 --stop-workers-on-exit --worker-threads=1 \
        --max-queue=4 --keep-alive=-1 --log-level=info >"$OUT/hive.log" 2>&1 &
HIVE_PID=$!

# The port the kernel picked, from the hive's "Listening on" line.
PORT=
i=0
while [ -z "$PORT" ] && [ $i -lt 1200 ]; do
        PORT=$(sed -n 's/.*Listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/hive.log" | head -n1)
        kill -0 "$HIVE_PID" 2>/dev/null || { cat "$OUT/hive.log"; echo "load: the hive did not start" >&2; exit 1; }
        [ -n "$PORT" ] || sleep 0.05
        i=$((i + 1))
done
[ -n "$PORT" ] || { echo "load: no port in the hive log" >&2; exit 1; }
URL=http://127.0.0.1:$PORT
AUTH="Authorization: Bearer $KEY"

"$LOAD" -n 1 -m POST -H "$AUTH" --ok 201 \
        -b "{\"id\":\"stories\",\"path\":\"$MODEL\"}" "$URL/v1/models" >/dev/null
"$LOAD" -n 1 -m POST -H "$AUTH" --ok 201 -b '{"model":"stories"}' "$URL/v1/workers" >/dev/null
WORKER_PID=$(sed -n 's/.*Started worker stories as pid \([0-9]*\).*/\1/p' "$OUT/hive.log" | head -n1)

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
sample() {
        echo "$1,$(rss "$HIVE_PID"),$(fds "$HIVE_PID"),$(threads "$HIVE_PID"),$(rss "$WORKER_PID"),$(fds "$WORKER_PID")"
}

echo "load: hive pid $HIVE_PID on $URL, worker pid $WORKER_PID, ${SECS}s per scenario, $(nproc) CPUs"
echo "t_s,hive_rss_kib,hive_fds,hive_threads,worker_rss_kib,worker_fds" >"$OUT/soak.csv"
sample 0 >>"$OUT/soak.csv"
BEFORE=$(sample 0)

fail=0
run() {
        label=$1
        shift
        if ! "$LOAD" -l "$label" -d "$SECS" -H "$AUTH" "$@"; then
                fail=1
        fi
}
INFER='{"model":"stories","prompt":"Once upon a time","max_tokens":4,"stream":false}'
CHAT='{"model":"stories","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'
run health -c "$CONNS" "$URL/v1/health"
run models-list -c "$CONNS" "$URL/v1/models"
run model-get -c "$CONNS" "$URL/v1/models/stories"
run workers-list -c "$CONNS" "$URL/v1/workers"
run infer-c4 -c 4 -m POST -b "$INFER" "$URL/v1/inference"
run chat-c4 -c 4 -m POST -b "$CHAT" "$URL/v1/chat/completions"
# Past the worker's slots (4) + 4 queued the hive answers 503 (admission control, intended).
run infer-c16-admission -c 16 -m POST -b "$INFER" --ok 200,503 "$URL/v1/inference"
# The same two cheap endpoints through wrk, when it is installed, as a cross-check.
if command -v wrk >/dev/null 2>&1; then
        for p in /v1/health /v1/models; do
                out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "$AUTH" "$URL$p" 2>&1) || fail=1
                printf 'wrk %-18s %s\n' "$p" "$(echo "$out" | awk '/Requests\/sec/ { r = $2 } / 50%/ { a = $2 } / 90%/ { b = $2 } / 99%/ { c = $2 }
                        END { printf "%s req/s  p50 %s  p90 %s  p99 %s", r, a, b, c }')"
                if echo "$out" | grep -q -e "Non-2xx" -e "Socket errors"; then
                        echo "$out" | grep -e "Non-2xx" -e "Socket errors"
                        fail=1
                fi
        done
fi
AFTER=$(sample "$SECS")
echo "load: before  hive rss/fds/threads, worker rss/fds: $BEFORE"
echo "load: after   hive rss/fds/threads, worker rss/fds: $AFTER"

if [ "$SOAK" -gt 0 ]; then
        echo "load: soak for ${SOAK}s (health, models, inference at once), sampling every 10 s into $OUT/soak.csv"
        : >"$OUT/soak.csv.tmp"
        "$LOAD" -l soak-health -d "$SOAK" -c 4 -H "$AUTH" "$URL/v1/health" >"$OUT/soak-health.txt" 2>&1 &
        p1=$!
        "$LOAD" -l soak-models -d "$SOAK" -c 4 -H "$AUTH" "$URL/v1/models" >"$OUT/soak-models.txt" 2>&1 &
        p2=$!
        "$LOAD" -l soak-infer -d "$SOAK" -c 2 -m POST -b "$INFER" -H "$AUTH" --ok 200,503 "$URL/v1/inference" \
                >"$OUT/soak-infer.txt" 2>&1 &
        p3=$!
        t=0
        while [ $t -lt "$SOAK" ]; do
                sleep 10
                t=$((t + 10))
                sample "$t" >>"$OUT/soak.csv"
        done
        for p in $p1 $p2 $p3; do wait "$p" || fail=1; done
        cat "$OUT/soak-health.txt" "$OUT/soak-models.txt" "$OUT/soak-infer.txt"
        sleep 2
        sample end >>"$OUT/soak.csv"
        # Flat: compare the end with the first sample after a minute of warm-up.
        awk -F, 'NR == 1 { next }
                 $1 == "60" || (warm == "" && $1 + 0 >= 60) { if (warm == "") { warm = $2; wfd = $3; wwr = $5; wwfd = $6 } }
                 { last = $2; lfd = $3; lwr = $5; lwfd = $6; if ($2 > max) max = $2 }
                 END {
                        if (warm == "") { warm = last; wfd = lfd; wwr = lwr; wwfd = lwfd }
                        printf "load: soak hive rss %d -> %d KiB (max %d), fds %d -> %d; worker rss %d -> %d KiB, fds %d -> %d\n",
                               warm, last, max, wfd, lfd, wwr, lwr, wwfd, lwfd
                        bad = 0
                        if (lfd > wfd + 2 || lwfd > wwfd + 2) { print "load: FAIL: fds grew"; bad = 1 }
                        if (last > warm * 1.10 + 1024 || lwr > wwr * 1.10 + 1024) { print "load: FAIL: RSS grew"; bad = 1 }
                        exit bad
                 }' "$OUT/soak.csv" || fail=1
fi

kill "$HIVE_PID"
wait "$HIVE_PID" || { echo "load: the hive exited uncleanly" >&2; fail=1; }
HIVE_PID=
for log in "$OUT/hive.log" "$T"/run/workers/*.log; do
        [ -f "$log" ] || continue
        if grep -q -e "ERROR: AddressSanitizer" -e "ERROR: LeakSanitizer" -e "runtime error:" "$log"; then
                echo "load: sanitizer report in $log:" >&2
                grep -A30 -e "ERROR: AddressSanitizer" -e "ERROR: LeakSanitizer" -e "runtime error:" "$log" | head -60 >&2
                fail=1
        fi
        [ -z "${RBEE_LOAD_OUT:-}" ] || cp "$log" "$OUT/" 2>/dev/null || true
done
[ $fail -eq 0 ] && echo "load: ok" || echo "load: FAILED"
exit $fail
