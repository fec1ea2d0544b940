#!/bin/bash
# SPDX-License-Identifier: MIT
# build-deb.sh OUTDIR: build the rbee Debian packages from a copy of this
# checkout (tracked files plus new files git does not ignore) with
# `dpkg-buildpackage -us -uc -b`, then run lintian on the result.
# The .debs, .buildinfo, .changes and lintian.log end up in OUTDIR.
#   DEB_BUILD_OPTIONS   passed through (default: nocheck parallel=<nproc>)
#   DEB_BUILD_PROFILES  passed through; pkg.rbee.cuda adds rbee-worker-cuda (needs
#                       nvcc: $NVCC, /usr/local/cuda/bin/nvcc or nvidia-cuda-toolkit)
#   RBEE_LINTIAN=0      skip lintian
set -euo pipefail

out=${1:?usage: build-deb.sh OUTDIR}
# From `make BUILD=... deb`: the caller's make variables (in MAKEFLAGS and the
# environment) must not reach the package build, whose `make clean` would
# remove that BUILD, OUTDIR included. NVCC stays: debian/rules reads it.
unset MAKEFLAGS MFLAGS MAKEOVERRIDES MAKELEVEL BUILD CUDA
top=$(cd "$(dirname "$0")/../.." && pwd)
export DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-nocheck parallel=$(nproc)}

for t in dpkg-buildpackage dh; do
        command -v "$t" >/dev/null || { echo "build-deb: $t is missing (apt-get install dpkg-dev debhelper)" >&2; exit 2; }
done
ver=$(cd "$top" && dpkg-parsechangelog -S Version)
rm -rf "$out"
mkdir -p "$out/src"
# The source directory is named as dpkg-source expects (rbee-VERSION).
src=$out/src/rbee-$ver
mkdir -p "$src"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$top" && git ls-files -z -co --exclude-standard | \
                xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) | \
                tar -C "$top" --null -T - -cf - | tar -C "$src" -xf -
else
        tar -C "$top" --exclude=./build --exclude=./.git -cf - . | tar -C "$src" -xf -
fi
rm -rf "$src/build" "$src/tests/worker/node_modules"

# An nvcc outside Debian's packages (NVIDIA's /usr/local/cuda) does not
# satisfy the Build-Depends nvidia-cuda-toolkit <pkg.rbee.cuda>: then the
# build dependencies are not checked (-d); debian/rules still fails without nvcc.
dpkg_args=(-us -uc -b)
case " ${DEB_BUILD_PROFILES:-} " in
*" pkg.rbee.cuda "*)
        if ! dpkg-query -W -f='${Status}' nvidia-cuda-toolkit 2>/dev/null | grep -q "ok installed"; then
                echo "build-deb: nvidia-cuda-toolkit is not installed; building with ${NVCC:-/usr/local/cuda/bin/nvcc} (-d)"
                dpkg_args+=(-d)
        fi
        ;;
esac
echo "build-deb: dpkg-buildpackage ${dpkg_args[*]} in $src (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS DEB_BUILD_PROFILES=${DEB_BUILD_PROFILES:-})"
(cd "$src" && dpkg-buildpackage "${dpkg_args[@]}") > "$out/build.log" 2>&1 || {
        tail -40 "$out/build.log" >&2
        echo "build-deb: dpkg-buildpackage failed (log: $out/build.log)" >&2
        exit 1
}
mv "$out"/src/*.deb "$out"/src/*.changes "$out"/src/*.buildinfo "$out"/ 2>/dev/null || true
rm -rf "$out/src"
ls -1 "$out"/*.deb

if [ "${RBEE_LINTIAN:-1}" != 0 ] && command -v lintian >/dev/null; then
        # --fail-on warning: errors and warnings fail; info and pedantic tags are shown only.
        if lintian --fail-on error,warning --info --display-info "$out"/*.changes > "$out/lintian.log" 2>&1; then
                echo "build-deb: lintian clean"
        else
                cat "$out/lintian.log" >&2
                echo "build-deb: lintian reported errors or warnings (log: $out/lintian.log)" >&2
                exit 3
        fi
        [ ! -s "$out/lintian.log" ] || sed 's/^/  lintian: /' "$out/lintian.log"
fi
