#!/usr/bin/env bash
# Installs every Debian 12 package the CPU build, the tests and the local stack need. Idempotent.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev
  libopenmpi-dev openmpi-bin
  libhiredis-dev redis-server
  libboost-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev ffmpeg
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev
  curl python3
  chromium
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt_options=(-y -q --no-install-recommends)
  if [ "${CI:-}" = "true" ]; then
    # A throwaway CI machine: dpkg need not sync every file it unpacks, and no one reads man pages.
    apt_options+=(-o Dpkg::Options::=--force-unsafe-io)
    $SUDO rm -f /var/lib/man-db/auto-update
  fi
  $SUDO apt-get update -q
  $SUDO apt-get install "${apt_options[@]}" "${missing[@]}"
fi
