#!/usr/bin/env bash
# Rewrites cli/function-order.txt: the functions of `respawn` that run while it serves, hottest
# first, which cli/build.rs hands to the linker of release builds so that they sit next to each
# other (a serving process then maps about 1.5 MB of its code instead of most of it). Rerun it after
# a change of toolchain or dependencies (their functions' names change) and after
# scripts/pgo-profile.sh (the profile changes what is inlined); a list that has gone stale
# only leaves the functions it does not name where the compiler put them. About 2 minutes on 2
# cores; needs valgrind (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    echo "installing valgrind with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo apt-get install -y valgrind
fi
scripts/release-build.sh -p respawn-cli
python3 scripts/lib/function_order.py --respawn target/release/respawn --out cli/function-order.txt "$@"
# The list changed: relink with it.
scripts/release-build.sh -p respawn-cli
