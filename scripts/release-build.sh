#!/usr/bin/env bash
# Builds respawn's release binaries (target/release/) as they are measured in docs/BENCHMARKS.md:
# `cargo build --release --locked` plus the profile of cli/pgo/respawn.profdata (profile-guided
# optimisation; made by scripts/pgo-profile.sh), and, through cli/build.rs, the function order of
# cli/function-order.txt. Arguments go to cargo (e.g. `-p respawn-cli`).
#
# The profile is left out, with a note, when `RESPAWN_PGO=off`, when it is missing, or when the
# compiler's LLVM is older than the one that wrote it (cli/pgo/llvm-major), which could not read
# it. A plain `cargo build --release` builds the same code without it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/llvm.sh

profile="$PWD/cli/pgo/respawn.profdata"
llvm="$(rustc_llvm_major)"
if [ "${RESPAWN_PGO:-}" = off ]; then
    echo "release build without the profile (RESPAWN_PGO=off)" >&2
elif [ ! -f "$profile" ] || [ ! -f cli/pgo/llvm-major ]; then
    echo "release build without the profile: cli/pgo/respawn.profdata is missing (scripts/pgo-profile.sh makes it)" >&2
elif ! [[ "$llvm" =~ ^[0-9]+$ ]] || [ "$llvm" -lt "$(cat cli/pgo/llvm-major)" ]; then
    echo "release build without the profile: it was written by LLVM $(cat cli/pgo/llvm-major), the compiler's is ${llvm:-unknown}" >&2
else
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$profile"
fi
exec cargo build --release --locked "$@"
