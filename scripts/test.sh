#!/usr/bin/env bash
# Runs respawn's whole test suite: unit, property, message-level and real-process integration tests.
#
# The tests that need llama.cpp's llama-server or the official OpenAI Python client (installed by
# `bash scripts/ci-deps.sh`) are #[ignore]d, so a plain run lists them as ignored. With
# RESPAWN_REQUIRE_REAL_SERVERS=1 (as CI runs it) they run too, and fail when what they need is
# missing. Extra arguments go to `cargo test` (after `--`, to the test binaries).
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
    if [ "$separator" = "yes" ]; then
        args+=(--include-ignored)
    else
        args+=(-- --include-ignored)
    fi
fi
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast "${args[@]+"${args[@]}"}"
