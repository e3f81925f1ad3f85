#!/usr/bin/env bash
# The README's main command: installs the Debian packages, builds, and runs the whole local stack
# (Redis + coordinator + two MPI worker groups) on the built-in tiny model, rendering
# examples/prompts.txt. Extra arguments go to deploy/local-stack.sh (e.g. --keep-running).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
exec deploy/local-stack.sh "$@"
