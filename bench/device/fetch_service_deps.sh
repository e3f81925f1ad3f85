#!/usr/bin/env bash
# Builds a small prefix with what the service needs beyond the GPU image (Ubuntu 24.04 + CUDA + torch,
# no internet): FFmpeg 5.1 (libavcodec/-format/-util, libswscale, libswresample) with libx264,
# hiredis, and redis-server/redis-cli, from Debian 12 packages. Run it on a Debian 12 host with apt
# (not on the device); it downloads the packages and their dependency closure with `apt-get download`,
# unpacks them with `dpkg -x` (nothing is installed) and keeps only what the libraries and programs
# load at run time (bench/device/prune_prefix.py: about 35 MiB; the unused codec libraries become stubs).
# Nothing it fetches is committed: everything lands under OUT (default build-deps/, ignored by git).
#
# Usage: bench/device/fetch_service_deps.sh [OUT]      -> OUT/prefix/{bin,lib,include}
# Then on the device: bench/device/gpu_service_build.sh OUT/prefix
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/build-deps}"
. /etc/os-release
[ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ] || { echo "fetch_service_deps: needs a Debian 12 host (this is $PRETTY_NAME)" >&2; exit 1; }
ROOTS=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libhiredis-dev
       redis-server redis-tools)
mkdir -p "$OUT/debs"
OUT="$(cd "$OUT" && pwd)"
# The closure of the roots' Depends (no Recommends), libraries and the Redis programs only: fonts,
# perl and the libc/libstdc++ that every image has are left out; the *-extra59 FFmpeg flavours
# duplicate the plain ones.
apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
    "${ROOTS[@]}" 2>/dev/null | grep -v '^ ' | grep -v '<' | sort -u \
  | grep -E '^lib|^redis|^ocl-icd-libopencl1$' \
  | grep -vE 'extra|^libc6$|^libgcc-s1$|^libstdc\+\+6$|perl|^libpam|^libsemanage|^libdebian' > "$OUT/packages.txt"
echo "fetch_service_deps: $(wc -l < "$OUT/packages.txt") packages"
(cd "$OUT/debs" && apt-get download $(cat "$OUT/packages.txt") > /dev/null)
rm -rf "$OUT/stage"
mkdir -p "$OUT/stage"
for deb in "$OUT"/debs/*.deb; do dpkg -x "$deb" "$OUT/stage"; done
python3 "$ROOT/bench/device/prune_prefix.py" "$OUT/stage" "$OUT/prefix"
rm -rf "$OUT/stage"
