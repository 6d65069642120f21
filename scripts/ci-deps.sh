#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent.
set -euo pipefail
need=()
command -v setsid >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
