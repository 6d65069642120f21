#!/usr/bin/env bash
# Runs respawn's whole test suite: unit, property, message-level and real-process integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast "$@"
