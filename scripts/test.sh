#!/usr/bin/env bash
# Runs respawn's whole test suite: unit, property, message-level and real-process integration tests.
#
# The tests that need llama.cpp's llama-server or the official OpenAI Python client (installed by
# `bash scripts/ci-deps.sh`) are #[ignore]d, so a plain run lists them as ignored. With
# RESPAWN_REQUIRE_REAL_SERVERS=1 (as CI runs it) they run too, and fail when what they need is
# missing. With RESPAWN_SKIP_VLLM=1 as well, the vLLM tests (named `vllm_*`, tests/real_vllm.rs; a
# 6.3 GB install and a minute per vLLM start) are left out, and the run says so. Extra arguments go
# to `cargo test` (after `--`, to the test binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
if [ "${RESPAWN_REQUIRE_REAL_SERVERS:-0}" = "1" ]; then
    separator=no
    for arg in "${args[@]+"${args[@]}"}"; do
        if [ "$arg" = "--" ]; then
            separator=yes
        fi
    done
    extra=(--include-ignored)
    if [ "${RESPAWN_SKIP_VLLM:-0}" = "1" ]; then
        echo "scripts/test.sh: RESPAWN_SKIP_VLLM=1: the vllm_* tests are left out of this run" >&2
        extra+=(--skip vllm_)
    fi
    if [ "$separator" = "yes" ]; then
        args+=("${extra[@]}")
    else
        args+=(-- "${extra[@]}")
    fi
fi
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast "${args[@]+"${args[@]}"}"
# The allocator of the program built on mimalloc (an opt-in feature): its way of giving memory back.
cargo test -p respawn-cli --lib --locked --features mimalloc allocator
