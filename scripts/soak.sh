#!/usr/bin/env bash
# The long chaos soak of respawn serve: traffic at concurrency 32 against a faulty mock, with
# SIGSTOP/SIGKILL of the model server injected at random moments, for SECONDS (default 1800).
# Prints the `soak summary:` line (requests, errors by class, lost, duplicated, incidents,
# restarts, respawn's memory at the first and last phase). Exits non-zero when a promise broke.
#   scripts/soak.sh [SECONDS]        RESPAWN_SOAK_LOG=1 also prints respawn's whole log.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-1800}"
case "$secs" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cargo build --locked --bin respawn --tests
RESPAWN_SOAK_SECS="$secs" cargo test --locked --test reliability_soak -- --nocapture --test-threads 1
