#!/bin/bash
# SPDX-License-Identifier: MIT
# tests/e2e/run.sh: rbee's Debian packages under a real systemd.
#
# Builds the .debs (tests/e2e/build-deb.sh, lintian included), boots systemd 252
# (Debian bookworm) as PID 1 of a throw-away systemd-nspawn container whose root
# is a private debootstrap tree, installs the packages there with apt, and checks
# the promises of units/ and debian/: socket activation of the hive, workers as
# rbee-worker@MODEL.service started over D-Bus by the unprivileged hive through
# the polkit rule, journald fields, adoption, kill -9, the watchdog, idle stop,
# hive restarts, upgrade, remove and purge. It ends with the line
# "N passed, N failed, N skipped" and exits non-zero when a check failed.
#
# It needs root and a kernel that lets systemd-nspawn boot a container; without
# them it prints "skipped: REASON" and exits 0. It never runs systemd on this
# machine's own root: systemd's boot-time tmpfiles cleanup would empty /tmp.
#
# Environment:
#   RBEE_E2E_BASE    work directory (default /var/tmp/rbee-e2e): cache/ keeps the
#                    root tree as a .tar.zst (cold build ~3 min, then seconds),
#                    state/ the running container's root, debs/ the packages
#   RBEE_E2E_DEBS    directory with prebuilt rbee_*.deb and rbee-worker_*.deb
#                    (skips the package build and lintian)
#   RBEE_E2E_MODEL   GGUF model to serve (default ../shared/models/stories260K.gguf
#                    next to the checkout; else one written by rbee-mkmodel --shape tiny)
#   RBEE_E2E_MIRROR  Debian mirror for debootstrap (default: this machine's apt source)
#   RBEE_E2E=0       skip the whole run (the package build's own `make check` sets it)
#   RBEE_E2E_NO_APT=1  do not apt-get install missing host tools (skip instead)
#   RBEE_E2E_KEEP=1  leave the container running at the end (stop it with
#                    `tests/e2e/run.sh stop NAME`) for a post-mortem
#   RBEE_E2E_CGROUP  unified (default) or hybrid: the container's cgroup layout
#
# Subcommands: (none) or all: the whole run; rootfs: only build the cached tree;
# stop NAME: stop a kept container; security: print the units' exposure scores
# (boots a container, installs the packages, analyzes, stops).
set -uo pipefail

TOP=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${RBEE_E2E_BASE:-/var/tmp/rbee-e2e}
CACHE=$BASE/cache
STATE=$BASE/state
SUITE=bookworm
# The root tree holds systemd, D-Bus, polkit and every run-time dependency of the
# packages, so that apt installs the local .debs without a network; the
# container then gets a private network (its 127.0.0.1:7835 is its own).
# polkitd does not configure inside debootstrap's second stage, so it is added
# with apt in a chroot afterwards.
ROOT_PKGS=systemd,dbus,libcurl4,libjson-c5,libmicrohttpd12,libopenblas0,libopenblas0-pthread,libsqlite3-0,curl
ROOT_PKGS_APT="polkitd"
KEY=$(printf '%s %s %s e2e-v1' "$SUITE" "$ROOT_PKGS" "$ROOT_PKGS_APT" | sha1sum | cut -c1-12)
ROOTFS_TAR=$CACHE/rootfs-$SUITE-$KEY.tar.zst
CPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CG_PARENT=rbee-e2e
MODEL_ID=tiny-stories                      # a '-' makes systemd escape it (\x2d)
UNIT='rbee-worker@tiny\x2dstories.service'
SOCK=/run/rbee/workers/tiny-stories.sock   # the id, unescaped (%I)
WD_ID=wdtest
WD_UNIT=rbee-worker@wdtest.service

PASSED=0 FAILED=0 SKIPPED=0
NAME="" ROOT="" LEADER="" NSPAWN_PID=""

log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
pass() { printf '  PASS  %s\n' "$1"; PASSED=$((PASSED + 1)); }
fail() { printf '  FAIL  %s%s\n' "$1" "${2:+: $2}"; FAILED=$((FAILED + 1)); }
skip() { printf '  SKIP  %s%s\n' "$1" "${2:+: $2}"; SKIPPED=$((SKIPPED + 1)); }
summary() { echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"; }
skip_all() {
        echo "skipped: $*"
        echo "0 passed, 0 failed, 1 skipped"
        exit 0
}
check() {        # check DESC EXPECTED ACTUAL
        if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected [$2], got [$3]"; fi
}
check_grep() {   # check_grep DESC ERE TEXT
        if printf '%s' "$3" | grep -Eq -- "$2"; then pass "$1"
        else fail "$1" "/$2/ not in: $(printf '%s' "$3" | head -c 600)"; fi
}
check_nogrep() { # check_nogrep DESC ERE TEXT
        if printf '%s' "$3" | grep -Eq -- "$2"; then
                fail "$1" "/$2/ found in: $(printf '%s' "$3" | grep -E -- "$2" | head -3)"
        else pass "$1"; fi
}
check_rc() {     # check_rc DESC COMMAND...: passes when COMMAND exits 0
        local d=$1 out rc; shift
        out=$("$@" 2>&1); rc=$?
        if [ $rc = 0 ]; then pass "$d"; else fail "$d" "exit $rc: $(printf '%s' "$out" | tail -5)"; fi
}

# ---------------------------------------------------------------- host side
need_tools() {
        local missing=() t
        for t in systemd-nspawn debootstrap zstd nsenter dpkg-buildpackage dh lintian; do
                command -v "$t" >/dev/null || missing+=("$t")
        done
        [ ${#missing[@]} = 0 ] && return 0
        [ -z "${RBEE_E2E_NO_APT:-}" ] && command -v apt-get >/dev/null || \
                skip_all "missing host tools: ${missing[*]} (RBEE_E2E_NO_APT is set or there is no apt-get)"
        log "installing host tools (missing: ${missing[*]})"
        # systemd-container is pinned to the installed systemd: the newest one
        # would pull a systemd upgrade onto this machine along with it.
        local v pin=""
        v=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
        [ -n "$v" ] && pin="=$v"
        { timeout 300 apt-get update -q && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q \
                --no-install-recommends debootstrap zstd util-linux dpkg-dev debhelper lintian \
                "systemd-container$pin"; } > "$BASE/apt-host.log" 2>&1 || \
                skip_all "cannot install the host tools (log: $BASE/apt-host.log)"
        for t in systemd-nspawn debootstrap zstd nsenter dpkg-buildpackage dh; do
                command -v "$t" >/dev/null || skip_all "$t is still missing after apt-get install"
        done
}

# cgroup placement: the container gets its own subtree, in the unified
# hierarchy and, on a hybrid host, in the name=systemd one too.
CG_DIRS=()
detect_cgroups() {
        if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
                CG_DIRS=(/sys/fs/cgroup/$CG_PARENT)
                CG_UNIFIED=/sys/fs/cgroup/$CG_PARENT
        elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
                CG_DIRS=(/sys/fs/cgroup/unified/$CG_PARENT)
                [ -d /sys/fs/cgroup/systemd ] && CG_DIRS+=(/sys/fs/cgroup/systemd/$CG_PARENT)
                CG_UNIFIED=/sys/fs/cgroup/unified/$CG_PARENT
        else
                skip_all "no cgroup2 hierarchy mounted (systemd in a container needs one)"
        fi
}

host_mirror() {
        { sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null; \
          sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null; } | \
                grep -v security | head -n1
}

build_rootfs() {
        mkdir -p "$CACHE"
        exec 9>"$CACHE/lock"
        flock 9
        if [ -f "$ROOTFS_TAR" ]; then flock -u 9; return 0; fi
        local mirror=${RBEE_E2E_MIRROR:-$(host_mirror)} t=$CACHE/build.$$ u
        [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
        log "building the root tree ($SUITE: $ROOT_PKGS) from $mirror; cached afterwards"
        rm -rf "$t"
        if ! timeout 1200 debootstrap --variant=minbase --include="$ROOT_PKGS" "$SUITE" "$t" "$mirror" \
                > "$CACHE/debootstrap.log" 2>&1; then
                rm -rf "$t"; flock -u 9
                tail -5 "$CACHE/debootstrap.log" >&2
                return 1
        fi
        # Nothing may start in the chroot: policy-rc.d says no while apt runs.
        printf '#!/bin/sh\nexit 101\n' > "$t/usr/sbin/policy-rc.d"; chmod 755 "$t/usr/sbin/policy-rc.d"
        cp -L /etc/resolv.conf "$t/etc/resolv.conf" 2>/dev/null
        mount -t proc proc "$t/proc"
        DEBIAN_FRONTEND=noninteractive timeout 600 chroot "$t" apt-get install -y -q --no-install-recommends \
                $ROOT_PKGS_APT >> "$CACHE/debootstrap.log" 2>&1
        local rc=$?
        umount "$t/proc"
        rm -f "$t/usr/sbin/policy-rc.d" "$t/etc/resolv.conf"
        if [ $rc != 0 ]; then
                rm -rf "$t"; flock -u 9
                tail -5 "$CACHE/debootstrap.log" >&2
                return 1
        fi
        rm -f "$t"/var/cache/apt/archives/*.deb
        # Timers that could grab the dpkg lock or change state while tests run.
        for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
                 e2scrub_reap.service fstrim.timer console-getty.service systemd-timesyncd.service; do
                rm -f "$t"/etc/systemd/system/*.wants/"$u"
                ln -sfn /dev/null "$t/etc/systemd/system/$u"
        done
        echo rbee-e2e > "$t/etc/hostname"
        tar -C "$t" --numeric-owner -cf - . | zstd -q -T0 -3 -o "$ROOTFS_TAR.tmp" && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$t"
        flock -u 9
        [ -f "$ROOTFS_TAR" ]
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
cg_procs() { cat $(find "$CG_UNIFIED/$1" -name cgroup.procs 2>/dev/null) /dev/null 2>/dev/null; }
cg_pid_by_comm() {
        local p
        for p in $(cg_procs "$1"); do
                [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] && { echo "$p"; return 0; }
        done
        return 0
}

# Boot a container: a fresh copy of the cached tree, systemd-nspawn with a
# private network, no machined registration (none may exist on this host).
start_container() {
        local name=$1 d=$STATE/$1 i L="" NS="" st=""
        rm -rf "$d"; mkdir -p "$d/root"
        zstd -q -d -c "$ROOTFS_TAR" | tar -C "$d/root" --numeric-owner -xf - || return 1
        systemd-machine-id-setup --root="$d/root" >/dev/null 2>&1 || \
                od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$d/root/etc/machine-id"
        (
                for c in "${CG_DIRS[@]}"; do
                        mkdir -p "$c/$name" && echo "$BASHPID" > "$c/$name/cgroup.procs"
                done
                cgenv=(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)
                [ "${RBEE_E2E_CGROUP:-unified}" = hybrid ] && cgenv=()
                exec setsid env "${cgenv[@]}" timeout -k 30 -s TERM 3600 \
                        systemd-nspawn -D "$d/root" -b -M "$name" --register=no --keep-unit \
                        --private-network --link-journal=no --console=read-only \
                        < /dev/null > "$d/nspawn.log" 2>&1
        ) &
        # PID 1 of the container is the process named systemd whose parent is
        # systemd-nspawn (nspawn's short-lived helpers carry its name too).
        for i in $(seq 600); do
                for c in $(cg_procs "$name"); do
                        [ "$(cat /proc/$c/comm 2>/dev/null)" = systemd ] || continue
                        NS=$(awk '{ print $4 }' /proc/$c/stat 2>/dev/null)
                        [ "$(cat /proc/$NS/comm 2>/dev/null)" = systemd-nspawn ] && { L=$c; break; }
                done
                [ -n "$L" ] && break
                [ -n "$(cg_procs "$name")" ] || [ "$i" -lt 40 ] || break
                sleep 0.05
        done
        [ -n "$L" ] || return 1
        echo "$NS" > "$d/nspawn.pid"
        echo "$L" > "$d/leader"
        LEADER=$L NSPAWN_PID=$NS ROOT=$d/root
        for i in $(seq 120); do
                st=$(X timeout 60 systemctl is-system-running --wait 2>/dev/null)
                case "$st" in running|degraded) break ;; esac
                alive "$NS" || return 1
                sleep 0.5
        done
        case "$st" in running|degraded) ;; *) return 1 ;; esac
        [ "$st" = running ] || X systemctl --failed --no-legend >&2
        return 0
}

stop_container() {
        local name=$1 d=$STATE/$1 L NS i
        [ -d "$d" ] || return 0
        L=$(cat "$d/leader" 2>/dev/null); NS=$(cat "$d/nspawn.pid" 2>/dev/null)
        ours() { alive "$1" && grep -q "/$CG_PARENT/$name\(/\|\$\)" "/proc/$1/cgroup" 2>/dev/null; }
        ours "$NS" || NS=""; ours "$L" || L=""
        if [ -n "$NS" ] && [ -n "$L" ]; then
                timeout 15 nsenter -t "$L" -a -- /usr/bin/env -i PATH=$CPATH systemctl poweroff --no-block \
                        >/dev/null 2>&1 || kill -s RTMIN+4 "$L" 2>/dev/null
                for i in $(seq 300); do alive "$NS" || break; sleep 0.1; done
        fi
        if alive "$NS"; then
                kill -TERM "$NS" 2>/dev/null; [ -n "$L" ] && kill -s RTMIN+3 "$L" 2>/dev/null
                for i in $(seq 100); do alive "$NS" || break; sleep 0.1; done
        fi
        if [ -n "$(cg_procs "$name")" ]; then
                echo 1 > "$CG_UNIFIED/$name/cgroup.kill" 2>/dev/null
                for i in $(seq 50); do [ -z "$(cg_procs "$name")" ] && break; sleep 0.1; done
        fi
        for c in "${CG_DIRS[@]}"; do
                [ -d "$c/$name" ] && find "$c/$name" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
        # nspawn leaves these behind when /run is not a tmpfs.
        rm -rf "/run/systemd/nspawn/propagate/$name"
        if [ -n "$(cg_procs "$name")" ]; then
                log "processes still in cgroup $CG_PARENT/$name; not deleting $d"
                return 1
        fi
        [ -d "$d/root" ] && rm -f "/run/systemd/nspawn/locks/inode-$(stat -c %d:%i "$d/root")"
        rm -rf "$d"
}

# Roots left by runs that were killed before they could clean up.
reap_stale() {
        local d n
        for d in "$STATE"/*/; do
                [ -d "$d" ] || continue
                n=$(basename "$d")
                [ -z "$(cg_procs "$n")" ] || continue
                log "removing the stale container root $d"
                stop_container "$n" >/dev/null 2>&1 || true
        done
}

# Run a command in the container: all namespaces of its PID 1, a clean environment.
X() {
        nsenter -t "$LEADER" -a -- /usr/bin/env -i PATH=$CPATH LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= \
                SYSTEMD_COLORS=0 DEBIAN_FRONTEND=noninteractive NO_COLOR=1 "$@"
}
XS() { X timeout "${XS_TIMEOUT:-120}" /bin/sh -c "$1"; }

# Wait until the shell condition holds in the container (max $2 seconds).
wait_for() {
        local i n=$(( ${2:-20} * 5 ))
        for i in $(seq "$n"); do XS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
        return 1
}
prop() { X systemctl show -P "$2" -- "$1" 2>/dev/null; }
hive_get() { XS "curl -sS --max-time 10 http://127.0.0.1:7835$1"; }

# ---------------------------------------------------------------- the checks
t_install() {
        echo "== install (apt, offline: the dependencies are in the root tree)"
        mkdir -p "$ROOT/root/debs"
        cp "$DEBS"/rbee_*.deb "$DEBS"/rbee-worker_*.deb "$ROOT/root/debs/"
        local out
        out=$(XS 'apt-get install -y -q --no-install-recommends /root/debs/rbee_*.deb /root/debs/rbee-worker_*.deb' 2>&1)
        if [ $? = 0 ]; then pass "apt-get install rbee rbee-worker"
        else fail "apt-get install rbee rbee-worker" "$(printf '%s' "$out" | tail -8)"; return 1; fi
        check_grep "system user rbee (sysusers.d)" '^rbee:x:[0-9]+:[0-9]+:[^:]*:/var/lib/rbee:/usr/sbin/nologin$' \
                "$(X getent passwd rbee)"
        check "rbee-hive.socket enabled" enabled "$(X systemctl is-enabled rbee-hive.socket)"
        check "rbee-hive.socket listening" active "$(prop rbee-hive.socket ActiveState)"
        check "rbee-hive.service not started by the package" inactive "$(prop rbee-hive.service ActiveState)"
        check "worker template not enabled (static)" static "$(X systemctl is-enabled rbee-worker@.service)"
        check "/run/rbee/workers from tmpfiles.d" "rbee:rbee 750" "$(X stat -c '%U:%G %a' /run/rbee/workers)"
        check "systemd-analyze verify of the units" "" \
                "$(X systemd-analyze verify --man=no rbee-hive.socket rbee-hive.service "$UNIT" \
                   'rbee-worker@tiny\x2dstories.socket' rbee.slice 2>&1)"
}

t_security() {
        echo "== systemd-analyze security --offline=true (exposure, lower is better)"
        local u score out label d=$BASE/security
        mkdir -p "$d"
        score_unit() {   # score_unit LABEL UNIT
                out=$(X systemd-analyze security --offline=true --no-pager "$2" 2>&1)
                printf '%s\n' "$out" > "$d/$1.txt"
                score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
                echo "        $1: ${score:-?} $(printf '%s\n' "$out" | grep -o 'Overall exposure.*' | sed 's/.*: [0-9.]* //')"
                [ -n "$score" ] || { fail "security score of $1" "$(printf '%s' "$out" | tail -3)"; return; }
                if awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then pass "$1 exposure $score <= 3.0 (OK)"
                else fail "$1 exposure $score <= 3.0"; fi
        }
        score_unit rbee-hive.service rbee-hive.service
        score_unit rbee-worker@.service rbee-worker@x.service
        # The drop-ins a CUDA worker package would add (units/cuda/).
        mkdir -p "$ROOT/etc/systemd/system/rbee-worker@.service.d" "$ROOT/etc/systemd/system/rbee-hive.service.d"
        cp "$TOP/units/cuda/rbee-worker-cuda.conf" "$ROOT/etc/systemd/system/rbee-worker@.service.d/cuda.conf"
        cp "$TOP/units/cuda/rbee-hive-cuda.conf" "$ROOT/etc/systemd/system/rbee-hive.service.d/cuda.conf"
        score_unit "rbee-worker@.service+cuda.conf" rbee-worker@x.service
        score_unit "rbee-hive.service+cuda.conf" rbee-hive.service
        rm -rf "$ROOT/etc/systemd/system/rbee-worker@.service.d" "$ROOT/etc/systemd/system/rbee-hive.service.d"
        echo "        (full tables in $d/)"
}

t_socket_activation() {
        echo "== socket activation of the hive"
        local out pid
        out=$(hive_get /v1/health)
        check_grep "first connection to 127.0.0.1:7835 starts the hive" '"status": ?"ok"' "$out"
        check_grep "hive uses systemd units" '"mode": ?"systemd"' "$out"
        check "rbee-hive.service active after the connection" active "$(prop rbee-hive.service ActiveState)"
        check_grep "StatusText (sd_notify STATUS=)" '^Serving on ' "$(prop rbee-hive.service StatusText)"
        check_grep "systemctl status shows READY (running) and the STATUS line" \
                'Active: active \(running\).*Status: "Serving on ' \
                "$(X systemctl status --no-pager rbee-hive.service | tr '\n' ' ')"
        pid=$(prop rbee-hive.service MainPID)
        check "hive runs as rbee" rbee "$(X stat -c %U /proc/"$pid")"
        check "hive has no capabilities" "0000000000000000" \
                "$(X sed -n 's/^CapEff:[[:space:]]*//p' /proc/"$pid"/status)"
}

t_register() {
        echo "== register a model"
        mkdir -p "$ROOT/srv/rbee/models"
        if [ -f "$MODEL" ]; then
                cp "$MODEL" "$ROOT/srv/rbee/models/model.gguf"
                echo "        model: $MODEL"
        else
                X rbee-mkmodel --shape tiny -q -o /srv/rbee/models/model.gguf
                echo "        model: rbee-mkmodel --shape tiny (no $MODEL)"
        fi
        chmod 0644 "$ROOT/srv/rbee/models/model.gguf"
        check_rc "rbee model register $MODEL_ID" X rbee model register "$MODEL_ID" --path /srv/rbee/models/model.gguf
        check_rc "rbee model register $WD_ID (same file)" X rbee model register "$WD_ID" --path /srv/rbee/models/model.gguf
        check_grep "catalog lists it" "$MODEL_ID" "$(X rbee model list 2>&1)"
        check "catalog is private to rbee" "rbee 600" "$(X stat -c '%U %a' /var/lib/rbee/catalog.db)"
}

t_infer_dbus() {
        echo "== rbee infer starts $UNIT over D-Bus (hive as rbee, polkit)"
        local out pid j
        out=$(XS "rbee infer --model $MODEL_ID --prompt 'Once upon a time' --max-tokens 24 --seed 7 --temperature 0 2>/tmp/infer.err")
        local rc=$?
        if [ $rc = 0 ] && [ -n "$(printf '%s' "$out" | tr -d '[:space:]')" ]; then pass "rbee infer streams text ($(printf '%s' "$out" | wc -w) words)"
        else fail "rbee infer streams text" "exit $rc, out [$out], err [$(X cat /tmp/infer.err)]"; fi
        check "$UNIT active" active "$(prop "$UNIT" ActiveState)"
        check "worker socket unit active" active "$(prop 'rbee-worker@tiny\x2dstories.socket' ActiveState)"
        check "worker socket rbee:rbee 0660" "rbee:rbee 660" "$(X stat -c '%U:%G %a' "$SOCK")"
        local wj; wj=$(hive_get /v1/workers/$MODEL_ID)
        check_grep "hive relays to the unescaped socket path (%I)" "\"socket\": ?\"$SOCK\"" "$wj"
        check_grep "worker's log field is null under systemd (the journal has it)" '"log": ?null' "$wj"
        check "worker in rbee.slice" rbee.slice "$(prop "$UNIT" Slice)"
        check_grep "worker StatusText" '^Serving ' "$(prop "$UNIT" StatusText)"
        pid=$(prop "$UNIT" MainPID)
        check "worker runs as rbee" rbee "$(X stat -c %U /proc/"$pid")"
        check "worker sees no network (PrivateNetwork)" "lo" \
                "$(X nsenter -t "$pid" -n ls /sys/class/net 2>/dev/null | tr '\n' ' ' | sed 's/ $//')"
        sleep 1   # journald may still be writing the job's record
        j=$(X journalctl -u "$UNIT" -o json --no-pager)
        check_grep "journalctl -u $UNIT: RBEE_MODEL field" '"RBEE_MODEL":("tiny-stories"|\[[^]]*"tiny-stories")' "$j"
        check_grep "journalctl -u $UNIT: a job record (RBEE_JOB_ID, RBEE_TOKENS_OUT)" \
                '"RBEE_JOB_ID":"[^"]+".*"RBEE_TOKENS_OUT"|"RBEE_TOKENS_OUT".*"RBEE_JOB_ID":"[^"]+"' \
                "$(printf '%s\n' "$j" | grep RBEE_JOB_ID)"
        check_grep "journalctl RBEE_MODEL=$MODEL_ID finds the worker's records" . \
                "$(X journalctl RBEE_MODEL="$MODEL_ID" -o cat --no-pager)"
        # The CLI reads the same journal: its last record must be in the output.
        last=$(X journalctl -u "$UNIT" -o cat --no-pager -n 1 | tail -n 1)
        out=$(XS "rbee worker logs $MODEL_ID -n 20 2>&1")
        if [ -n "$last" ] && printf '%s' "$out" | grep -qF -- "$last"; then pass "rbee worker logs $MODEL_ID shows the unit's journal"
        else fail "rbee worker logs $MODEL_ID shows the unit's journal" "last record [$last], output [$out]"; fi
        # systemd 252 drops the descriptor of a socket whose path holds a
        # backslash on daemon-reload (any apt install does one): the socket path
        # must not be the escaped instance name.
        X systemctl daemon-reload
        check_nogrep "worker socket keeps its descriptor over daemon-reload" 'configuration has changed' \
                "$(X journalctl -u 'rbee-worker@tiny\x2dstories.socket' -o cat --no-pager)"
        check_grep "worker socket unit still active after daemon-reload" '^active/(running|listening)$' \
                "$(prop 'rbee-worker@tiny\x2dstories.socket' ActiveState)/$(prop 'rbee-worker@tiny\x2dstories.socket' SubState)"
        check "PID 1 still holds the listening socket $SOCK after daemon-reload" yes "$(pid1_holds_socket)"
        check "the worker answers on $SOCK after daemon-reload" 200 \
                "$(XS "curl -s -o /dev/null -w %{http_code} --max-time 10 --unix-socket $SOCK http://w/v1/health")"
        check_nogrep "hive journal: no D-Bus/polkit denial" 'Access denied|Interactive authentication required|not authorized' \
                "$(X journalctl -u rbee-hive.service -o cat --no-pager)"
}

# "yes" when systemd (PID 1) has an fd on the listening socket bound to $SOCK:
# what a restarted worker gets from rbee-worker@.socket.
pid1_holds_socket() {
        XS "ino=\$(awk -v p='$SOCK' '\$NF == p && \$6 == \"01\" { print \$7; exit }' /proc/net/unix)
            [ -n \"\$ino\" ] && ls -l /proc/1/fd 2>/dev/null | grep -q \"socket:\\[\$ino\\]\" && echo yes || echo no"
}

t_polkit_scope() {
        echo "== polkit rule: rbee may manage rbee-worker@*.service and nothing else"
        local bus=(busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1
                   org.freedesktop.systemd1.Manager)
        local out
        out=$(X setpriv --reuid=rbee --regid=rbee --init-groups "${bus[@]}" StopUnit ss rbee-hive.socket replace 2>&1)
        check_grep "rbee may not stop rbee-hive.socket" 'Access denied|authentication required|not authorized' "$out"
        out=$(X setpriv --reuid=rbee --regid=rbee --init-groups "${bus[@]}" StartUnit ss systemd-journal-flush.service replace 2>&1)
        check_grep "rbee may not start other units" 'Access denied|authentication required|not authorized' "$out"
        out=$(X setpriv --reuid=rbee --regid=rbee --init-groups "${bus[@]}" EnableUnitFiles asbb 1 rbee-worker@x.service false false 2>&1)
        check_grep "rbee may not enable unit files" 'Access denied|authentication required|not authorized' "$out"
        check "rbee-hive.socket still active" active "$(prop rbee-hive.socket ActiveState)"
}

t_stop_and_adopt() {
        echo "== rbee worker stop; systemctl start by hand; the hive adopts it"
        check_rc "rbee worker stop $MODEL_ID" X rbee worker stop "$MODEL_ID"
        wait_for "[ \"\$(systemctl show -P ActiveState '$UNIT')\" = inactive ]" 20
        check "$UNIT inactive after stop" inactive "$(prop "$UNIT" ActiveState)"
        check "worker socket unit stopped with it (PartOf)" inactive "$(prop 'rbee-worker@tiny\x2dstories.socket' ActiveState)"
        check "socket file removed (RemoveOnStop)" gone "$(X test -e "$SOCK" && echo present || echo gone)"

        check_rc "systemctl start $UNIT" X timeout 120 systemctl start "$UNIT"
        check "$UNIT active" active "$(prop "$UNIT" ActiveState)"
        local pid; pid=$(prop "$UNIT" MainPID)
        wait_for "curl -s http://127.0.0.1:7835/v1/workers/$MODEL_ID | grep -Eq '\"adopted\": ?true'" 15
        local w; w=$(hive_get /v1/workers/$MODEL_ID)
        check_grep "hive adopted the hand-started unit" '"adopted": ?true' "$w"
        check_grep "adopted worker is ready with the unit's PID" "\"pid\": ?$pid[,} ]" "$w"
        check_rc "rbee infer through the adopted worker" XS "rbee infer --model $MODEL_ID --prompt 'Once' --max-tokens 8 --seed 1"
        check "same worker served it (no restart)" "$pid" "$(prop "$UNIT" MainPID)"
}

t_stop_race() {
        echo "== a request right after the worker went behind the hive's back gets an answer"
        # The hive learns of a unit stopped by someone else at its next refresh
        # (2 s); a request in between finds no socket. It must re-check the unit,
        # start it again and retry, not answer 502.
        local out rc n0 n1
        n0=$(X journalctl -u rbee-hive.service -o cat --no-pager | grep -c 'did not answer')
        X timeout 120 systemctl start "$UNIT" 2>/dev/null
        wait_for "curl -s http://127.0.0.1:7835/v1/workers/$MODEL_ID | grep -Eq '\"state\": ?\"ready\"'" 15
        out=$(XS "systemctl stop '$UNIT' && curl -s -o /tmp/race.json -w %{http_code} --max-time 120 \
                -H 'Content-Type: application/json' \
                -d '{\"model\":\"$MODEL_ID\",\"prompt\":\"Once\",\"max_tokens\":4,\"stream\":false}' \
                http://127.0.0.1:7835/v1/inference")
        check "non-streaming request right after systemctl stop: 200" 200 "$out"
        [ "$out" = 200 ] || echo "        body: $(X cat /tmp/race.json 2>/dev/null | head -c 400)"
        check "$UNIT active again" active "$(prop "$UNIT" ActiveState)"

        wait_for "curl -s http://127.0.0.1:7835/v1/workers/$MODEL_ID | grep -Eq '\"state\": ?\"ready\"'" 15
        out=$(XS "systemctl stop '$UNIT' && rbee infer --model $MODEL_ID --prompt 'Once upon a time' --max-tokens 8 --seed 1 2>&1")
        rc=$?
        if [ $rc = 0 ] && [ -n "$(printf '%s' "$out" | tr -d '[:space:]')" ]; then pass "rbee infer (streaming) right after systemctl stop"
        else fail "rbee infer (streaming) right after systemctl stop" "exit $rc: $(printf '%s' "$out" | tail -3)"; fi

        # A crash after a daemon-reload: the unit fails, its socket unit keeps
        # listening, and the next worker must get that socket (systemd 252 lost
        # it on daemon-reload when the path held a backslash).
        wait_for "curl -s http://127.0.0.1:7835/v1/workers/$MODEL_ID | grep -Eq '\"state\": ?\"ready\"'" 15
        X systemctl daemon-reload
        out=$(XS "systemctl kill -s KILL '$UNIT' && rbee infer --model $MODEL_ID --prompt 'Once' --max-tokens 8 --seed 1 2>&1")
        rc=$?
        if [ $rc = 0 ] && [ -n "$(printf '%s' "$out" | tr -d '[:space:]')" ]; then pass "rbee infer right after daemon-reload and kill -9 of the worker"
        else fail "rbee infer right after daemon-reload and kill -9 of the worker" "exit $rc: $(printf '%s' "$out" | tail -3)"; fi
        check "$UNIT active again after the crash" active "$(prop "$UNIT" ActiveState)"
        check "PID 1 holds the worker socket again" yes "$(pid1_holds_socket)"
        n1=$(X journalctl -u rbee-hive.service -o cat --no-pager | grep -c 'did not answer')
        echo "        ($((n1 - n0)) of these 3 requests found the worker gone before the hive's own refresh did)"
}

t_kill9() {
        echo "== kill -9 of the worker mid-stream"
        # A test hook of the worker slows the tokens down so the stream is long enough to hit.
        mkdir -p "$ROOT/etc/systemd/system/$UNIT.d"
        printf '[Service]\nEnvironment=RBEE_WORKER_TEST_TOKEN_DELAY_MS=200\n' > "$ROOT/etc/systemd/system/$UNIT.d/e2e.conf"
        X systemctl daemon-reload
        X systemctl stop "$UNIT" 2>/dev/null
        # The hive notices a unit stopped behind its back on its next refresh.
        wait_for "! curl -sf http://127.0.0.1:7835/v1/workers/$MODEL_ID >/dev/null" 15
        X sh -c "rbee infer --model $MODEL_ID --prompt 'Once upon a time' --max-tokens 100 --seed 3 --keep-alive -1 \
                >/tmp/k9.out 2>/tmp/k9.err; echo \$? > /tmp/k9.rc" &
        local bg=$!
        if ! wait_for "[ -s /tmp/k9.out ] && [ \"\$(systemctl show -P ActiveState '$UNIT')\" = active ]" 60; then
                fail "stream started before kill" "$(X cat /tmp/k9.err 2>/dev/null | tail -3)"
        fi
        local pid; pid=$(prop "$UNIT" MainPID)
        XS "kill -9 $pid"
        wait "$bg"
        local rc err
        rc=$(X cat /tmp/k9.rc 2>/dev/null); err=$(X cat /tmp/k9.err 2>/dev/null)
        check_grep "client ends with a terminal error (exit $rc)" '^[1-9]' "$rc"
        check_grep "client is told the worker died" 'worker_died|died' "$err"
        wait_for "[ \"\$(systemctl show -P Result '$UNIT')\" = signal ]" 10
        check "unit result 'signal' (no restart on kill -9)" signal "$(prop "$UNIT" Result)"
        check "unit was not restarted" 0 "$(prop "$UNIT" NRestarts)"
        # The hive reports it, then resets the failed unit (--failed-linger).
        # Reaped means no longer failed with result 'signal'. A connection to the
        # still-listening worker socket (the hive's own probe) may already have
        # started it again by then, so inactive and active both count.
        wait_for "[ \"\$(systemctl show -P ActiveState '$UNIT')\" != failed ] && [ \"\$(systemctl show -P Result '$UNIT')\" != signal ]" 45
        st=$(prop "$UNIT" ActiveState); res=$(prop "$UNIT" Result)
        check "hive reaped the failed unit (reset-failed)" "not failed" \
                "$([ "$st" != failed ] && [ "$res" != signal ] && echo "not failed" || echo "$st/$res")"
        rm -f "$ROOT/etc/systemd/system/$UNIT.d/e2e.conf"; X systemctl daemon-reload
        check_rc "the next request starts a fresh worker" XS "rbee infer --model $MODEL_ID --prompt 'Once' --max-tokens 8 --seed 1"
        check "$UNIT active again" active "$(prop "$UNIT" ActiveState)"
        check_grep "fresh worker has a new PID" '^[0-9]+$' "$(p=$(prop "$UNIT" MainPID); [ "$p" != "$pid" ] && [ "$p" != 0 ] && echo "$p")"
}

t_slow_load() {
        echo "== a slow load outlives TimeoutStartSec= through EXTEND_TIMEOUT_USEC"
        mkdir -p "$ROOT/etc/systemd/system/$WD_UNIT.d"
        # 5 layers at 1 s each against a 2 s start timeout; STATUS= shows the progress.
        printf '[Service]\nTimeoutStartSec=2s\nEnvironment=RBEE_WORKER_TEST_LOAD_DELAY_MS=1000\n' \
                > "$ROOT/etc/systemd/system/$WD_UNIT.d/e2e.conf"
        X systemctl daemon-reload
        local t0=$SECONDS st=""
        X systemctl start --no-block "$WD_UNIT"
        wait_for "systemctl show -P StatusText $WD_UNIT | grep -q '^Loading [0-9]*/[0-9]* layers'" 10
        st=$(prop "$WD_UNIT" StatusText)
        check_grep "STATUS= progress while activating" '^Loading [0-9]+/[0-9]+ layers' "$st"
        wait_for "[ \"\$(systemctl show -P ActiveState $WD_UNIT)\" != activating ]" 30
        check "became active after $((SECONDS - t0)) s despite TimeoutStartSec=2s" active "$(prop "$WD_UNIT" ActiveState)"
        X systemctl stop "$WD_UNIT" 2>/dev/null
        rm -rf "$ROOT/etc/systemd/system/$WD_UNIT.d"; X systemctl daemon-reload
}

t_watchdog() {
        echo "== watchdog: a wedged worker is killed and restarted (Restart=on-watchdog)"
        mkdir -p "$ROOT/etc/systemd/system/$WD_UNIT.d"
        # The worker's test hook stalls the engine once without heartbeats.
        printf '[Service]\nWatchdogSec=3s\nEnvironment=RBEE_WORKER_TEST_STALL_MS=15000\nLimitCORE=0\n' \
                > "$ROOT/etc/systemd/system/$WD_UNIT.d/e2e.conf"
        X systemctl daemon-reload
        check_rc "systemctl start $WD_UNIT" X timeout 120 systemctl start "$WD_UNIT"
        local pid; pid=$(prop "$WD_UNIT" MainPID)
        XS "curl -s --max-time 20 --unix-socket /run/rbee/workers/$WD_ID.sock -H 'Content-Type: application/json' \
                -d '{\"prompt\":\"Once\",\"max_tokens\":4,\"stream\":false}' http://w/v1/inference" >/dev/null 2>&1
        wait_for "[ \"\$(systemctl show -P NRestarts '$WD_UNIT')\" -ge 1 ] && [ \"\$(systemctl show -P ActiveState '$WD_UNIT')\" = active ]" 30
        check_grep "systemd logged the watchdog timeout" 'Watchdog timeout' \
                "$(X journalctl -u "$WD_UNIT" -o cat --no-pager)"
        check_grep "unit restarted (NRestarts >= 1)" '^[1-9]' "$(prop "$WD_UNIT" NRestarts)"
        check "restarted worker is active" active "$(prop "$WD_UNIT" ActiveState)"
        check_grep "with a new PID" '^[0-9]+$' "$(p=$(prop "$WD_UNIT" MainPID); [ "$p" != "$pid" ] && [ "$p" != 0 ] && echo "$p")"
        X systemctl stop "$WD_UNIT" 2>/dev/null
        rm -rf "$ROOT/etc/systemd/system/$WD_UNIT.d"; X systemctl daemon-reload
        X systemctl reset-failed "$WD_UNIT" 2>/dev/null
}

t_start_limit() {
        echo "== workers have no start rate limit (the hive may start one per request)"
        local i ok=0
        for i in 1 2 3 4 5 6 7; do
                X timeout 60 systemctl restart "$WD_UNIT" 2>/dev/null && ok=$((ok + 1))
        done
        check "7 starts in a row succeed" 7 "$ok"
        check "$WD_UNIT active" active "$(prop "$WD_UNIT" ActiveState)"
        X systemctl stop "$WD_UNIT" 2>/dev/null
}

t_idle() {
        echo "== keep-alive: an idle worker's unit is stopped"
        X rbee worker stop "$MODEL_ID" >/dev/null 2>&1
        wait_for "[ \"\$(systemctl show -P ActiveState '$UNIT')\" = inactive ]" 20
        XS "rbee infer --model $MODEL_ID --prompt 'Once' --max-tokens 4 --keep-alive 2s >/dev/null 2>&1"
        check "worker active right after the request" active "$(prop "$UNIT" ActiveState)"
        wait_for "[ \"\$(systemctl show -P ActiveState '$UNIT')\" = inactive ]" 20
        check "unit stopped after the 2 s keep-alive" inactive "$(prop "$UNIT" ActiveState)"
        check "its socket unit stopped too" inactive "$(prop 'rbee-worker@tiny\x2dstories.socket' ActiveState)"
}

t_hive_restart() {
        echo "== hive restarts keep the catalog and adopt running workers"
        check_rc "rbee worker spawn --keep-alive -1" X rbee worker spawn --model "$MODEL_ID" --keep-alive -1
        local wpid hpid
        wpid=$(prop "$UNIT" MainPID); hpid=$(prop rbee-hive.service MainPID)
        check_rc "systemctl restart rbee-hive" X timeout 60 systemctl restart rbee-hive.service
        check_grep "catalog kept" "$MODEL_ID" "$(X rbee model list 2>&1)"
        wait_for "curl -s http://127.0.0.1:7835/v1/workers/$MODEL_ID | grep -Eq '\"state\": ?\"ready\"'" 15
        check_grep "restarted hive adopted the running worker" "\"pid\": ?$wpid[,} ]" "$(hive_get /v1/workers/$MODEL_ID)"
        check "worker kept running" "$wpid" "$(prop "$UNIT" MainPID)"

        echo "== the hive dies: Restart=on-failure"
        hpid=$(prop rbee-hive.service MainPID)
        XS "kill -9 $hpid"
        wait_for "[ \"\$(systemctl show -P NRestarts rbee-hive.service)\" -ge 1 ] && [ \"\$(systemctl show -P ActiveState rbee-hive.service)\" = active ]" 20
        check_grep "hive restarted after kill -9 (NRestarts >= 1)" '^[1-9]' "$(prop rbee-hive.service NRestarts)"
        check_grep "hive answers again" '"status": ?"ok"' "$(hive_get /v1/health)"
        check "worker untouched" "$wpid" "$(prop "$UNIT" MainPID)"
}

t_api_key() {
        echo "== API key from /etc/credstore (LoadCredential=rbee-api-key)"
        local key=e2e-$RANDOM$RANDOM$RANDOM
        mkdir -p "$ROOT/etc/credstore"
        (umask 077; printf '%s\n' "$key" > "$ROOT/etc/credstore/rbee-api-key")
        X timeout 60 systemctl restart rbee-hive.service
        check "without the key: 401" 401 \
                "$(XS 'curl -s -o /dev/null -w %{http_code} --max-time 10 http://127.0.0.1:7835/v1/models')"
        check "with the key: 200" 200 \
                "$(XS "curl -s -o /dev/null -w %{http_code} --max-time 10 -H 'Authorization: Bearer $key' http://127.0.0.1:7835/v1/models")"
        rm -f "$ROOT/etc/credstore/rbee-api-key"
        X timeout 60 systemctl restart rbee-hive.service
        check "key removed: open to loopback again" 200 \
                "$(XS 'curl -s -o /dev/null -w %{http_code} --max-time 10 http://127.0.0.1:7835/v1/models')"
}

t_upgrade() {
        echo "== upgrade (reinstall): hive restarted, workers and catalog kept"
        local wpid hpid out
        wpid=$(prop "$UNIT" MainPID); hpid=$(prop rbee-hive.service MainPID)
        out=$(XS 'apt-get install -y -q --reinstall /root/debs/rbee_*.deb /root/debs/rbee-worker_*.deb' 2>&1)
        if [ $? = 0 ]; then pass "apt-get install --reinstall"; else fail "apt-get install --reinstall" "$(printf '%s' "$out" | tail -5)"; fi
        check "socket still enabled" enabled "$(X systemctl is-enabled rbee-hive.socket)"
        check_grep "hive serves" '"status": ?"ok"' "$(hive_get /v1/health)"
        check_grep "hive was restarted onto the new binary" '^[0-9]+$' \
                "$(p=$(prop rbee-hive.service MainPID); [ "$p" != "$hpid" ] && [ "$p" != 0 ] && echo "$p")"
        check "running worker kept" "$wpid" "$(prop "$UNIT" MainPID)"
        check_grep "catalog kept" "$MODEL_ID" "$(X rbee model list 2>&1)"
}

t_remove_purge() {
        echo "== apt remove keeps the models; apt purge removes the state"
        local out
        out=$(XS 'apt-get remove -y -q rbee rbee-worker' 2>&1)
        if [ $? = 0 ]; then pass "apt-get remove"; else fail "apt-get remove" "$(printf '%s' "$out" | tail -5)"; fi
        check "no rbee unit active or failed" "" \
                "$(X systemctl list-units --state=active,activating,deactivating,failed --no-legend --plain 'rbee*' 2>&1)"
        check "no processes of user rbee" "" "$(X sh -c 'for p in /proc/[0-9]*; do [ "$(stat -c %U $p 2>/dev/null)" = rbee ] && cat $p/comm; done')"
        check "port 7835 closed" closed "$(XS 'curl -s --max-time 3 http://127.0.0.1:7835/v1/health >/dev/null && echo open || echo closed')"
        check "catalog kept after remove" present "$(X test -f /var/lib/rbee/catalog.db && echo present || echo gone)"
        check "binaries gone" gone "$(X test -e /usr/sbin/rbee-hive -o -e /usr/sbin/rbee-workerd && echo present || echo gone)"
        out=$(XS 'apt-get purge -y -q rbee rbee-worker' 2>&1)
        if [ $? = 0 ]; then pass "apt-get purge"; else fail "apt-get purge" "$(printf '%s' "$out" | tail -5)"; fi
        check "state, cache and runtime directories gone" "" \
                "$(X sh -c 'ls -d /var/lib/rbee /var/cache/rbee /run/rbee 2>/dev/null')"
        check "no enablement symlinks left" "" "$(X sh -c 'find /etc/systemd -name "rbee*" 2>/dev/null')"
        check "no unit files left" "" "$(X sh -c 'ls /lib/systemd/system/rbee* /usr/lib/systemd/system/rbee* 2>/dev/null')"
        check "dpkg forgot both packages" "" "$(X sh -c "dpkg-query -W -f='\${db:Status-Abbrev}\n' rbee rbee-worker 2>/dev/null | grep -v '^un' | grep -v '^\$'")"
        check "no rbee units known to systemd" "" "$(X systemctl list-units --all --no-legend --plain 'rbee*' 2>&1)"
}

# ---------------------------------------------------------------- main
cleanup() {
        [ -n "$NAME" ] || return 0
        if [ -n "${RBEE_E2E_KEEP:-}" ]; then
                log "kept container $NAME: root $ROOT, leader $LEADER; stop with: $0 stop $NAME"
        else
                stop_container "$NAME" || log "could not stop $NAME cleanly"
        fi
}

boot_with_packages() {
        build_rootfs || skip_all "cannot build the root tree with debootstrap (log: $CACHE/debootstrap.log)"
        NAME=e2e$$
        trap cleanup EXIT
        trap 'exit 130' INT TERM
        local t0=$SECONDS
        if ! start_container "$NAME"; then
                local why; why=$(tail -5 "$STATE/$NAME/nspawn.log" 2>/dev/null | tr '\n' ' ')
                stop_container "$NAME" >/dev/null 2>&1; NAME=""
                skip_all "systemd-nspawn cannot boot a container here: ${why:-no output}"
        fi
        log "container $NAME up in $((SECONDS - t0)) s (leader $LEADER)"
}

main() {
        [ "${RBEE_E2E:-1}" != 0 ] || skip_all "RBEE_E2E=0"
        [ "$(uname -s)" = Linux ] || skip_all "not Linux"
        [ "$(id -u)" = 0 ] || skip_all "not root (booting systemd in a container needs root)"
        mkdir -p "$BASE" "$STATE" "$CACHE"
        # One run at a time on a machine: reap_stale stops any other run's container.
        exec 9>"$BASE/lock"
        flock 9
        need_tools
        detect_cgroups
        reap_stale
        local t0=$SECONDS
        MODEL=${RBEE_E2E_MODEL:-$TOP/../shared/models/stories260K.gguf}

        echo "== packages"
        if [ -n "${RBEE_E2E_DEBS:-}" ]; then
                DEBS=$RBEE_E2E_DEBS
                skip "dpkg-buildpackage and lintian" "using prebuilt packages in $DEBS"
        else
                DEBS=$BASE/debs
                "$TOP/tests/e2e/build-deb.sh" "$DEBS" > "$BASE/build-deb.log" 2>&1
                case $? in
                0) pass "dpkg-buildpackage -us -uc -b"; pass "lintian clean" ;;
                3) pass "dpkg-buildpackage -us -uc -b"
                   fail "lintian clean" "$(grep -E '^[EW]:' "$DEBS/lintian.log" | head -10 | tr '\n' ';')" ;;
                *) fail "dpkg-buildpackage -us -uc -b" "$(tail -15 "$BASE/build-deb.log")"
                   summary; exit 1 ;;
                esac
        fi
        ls "$DEBS"/rbee_*.deb "$DEBS"/rbee-worker_*.deb >/dev/null 2>&1 || {
                fail "packages present" "no rbee_*.deb / rbee-worker_*.deb in $DEBS"; summary; exit 1; }

        boot_with_packages
        if t_install; then
                t_security
                t_socket_activation
                t_register
                t_infer_dbus
                t_polkit_scope
                t_stop_and_adopt
                t_stop_race
                t_kill9
                t_slow_load
                t_watchdog
                t_start_limit
                t_idle
                t_hive_restart
                t_api_key
                t_upgrade
                t_remove_purge
        fi
        echo "== done in $((SECONDS - t0)) s"
        summary
        [ "$FAILED" = 0 ]
}

case "${1:-all}" in
all) main ;;
rootfs)
        [ "$(id -u)" = 0 ] || skip_all "not root"
        mkdir -p "$CACHE"; need_tools; build_rootfs && echo "$ROOTFS_TAR" ;;
stop)
        [ -n "${2:-}" ] || { echo "usage: $0 stop NAME" >&2; exit 2; }
        detect_cgroups; stop_container "$2" ;;
security)
        [ "$(id -u)" = 0 ] || skip_all "not root"
        mkdir -p "$BASE" "$STATE" "$CACHE"; need_tools; detect_cgroups
        DEBS=${RBEE_E2E_DEBS:-$BASE/debs}
        boot_with_packages; t_install >/dev/null && t_security; summary ;;
*) echo "usage: $0 [all|rootfs|stop NAME|security]" >&2; exit 2 ;;
esac
