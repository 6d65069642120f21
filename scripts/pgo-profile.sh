#!/usr/bin/env bash
# Rewrites cli/pgo/respawn.profdata: how often each branch and call of respawn ran while it served,
# which scripts/release-build.sh hands to the compiler (profile-guided optimisation: the paths that
# run are laid out straight and inlined, the rest moved aside). Made by an instrumented release
# build running the work of scripts/lib/serve_workload.py (start-up, 64 keep-alive connections of
# GETs and small chat completions, clients that give up, a streamed completion, the control routes,
# an operator's restart, the shutdown); the model server it supervises is the same binary, so
# `respawn mock` is profiled too. Rerun it after changing the code on the request path or the
# toolchain: functions changed since the profile are compiled as without one. About 6 minutes on
# 2 cores; needs llvm-profdata of the compiler's LLVM (installed with apt-get when missing).
# Then rerun scripts/function-order.sh, whose list follows this build's functions.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/llvm.sh

profdata="$(llvm_profdata)"
build="target/pgo-generate"
raw="$PWD/$build/profiles"
rm -rf "$raw"
mkdir -p "$raw"
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-generate=$raw" \
    cargo build --release --locked -p respawn-cli --target-dir "$build"
# The build's own instrumented programs (build scripts, procedural macros) wrote profiles there too.
rm -rf "$raw"
mkdir -p "$raw"
python3 scripts/lib/serve_workload.py --respawn "$build/release/respawn" --requests 20000
mkdir -p cli/pgo
"$profdata" merge --sparse -o cli/pgo/respawn.profdata "$raw"
rustc_llvm_major >cli/pgo/llvm-major
echo "wrote cli/pgo/respawn.profdata (LLVM $(cat cli/pgo/llvm-major))" >&2
