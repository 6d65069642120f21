#!/usr/bin/env bash
# Creates a Python virtual environment with the official `openai` client, pinned with its whole
# dependency set, for tests/openai_client.rs (which runs tests/openai_client.py in it).
#
# The venv lives outside the checkout, in
#   ${RESPAWN_CACHE:-$HOME/.cache/respawn}/openai-1.109.1/venv
# and the test finds its interpreter there, or through RESPAWN_OPENAI_PYTHON. Idempotent: a second
# run only checks the installed version.
#
# Usage: scripts/openai-client-venv.sh [--print-env]
#   --print-env   print only the `export RESPAWN_OPENAI_PYTHON=...` line
set -euo pipefail

OPENAI_VERSION="1.109.1"
# The openai release and the exact dependency versions it resolved to on Python 3.11 when this
# was pinned; a new resolution cannot change what the tests run against.
REQUIREMENTS=(
    "openai==$OPENAI_VERSION"
    "annotated-types==0.8.0"
    "anyio==4.16.0"
    "certifi==2026.10.19.post1"
    "distro==1.9.0"
    "h11==0.16.0"
    "httpcore==1.0.9"
    "httpx==0.28.1"
    "idna==3.20"
    "jiter==0.19.0"
    "pydantic==2.14.4"
    "pydantic_core==2.50.5"
    "sniffio==1.3.1"
    "tqdm==4.70.1"
    "typing-inspection==0.4.5"
    "typing_extensions==4.16.0"
)

print_env_only=0
if [ "${1:-}" = "--print-env" ]; then
    print_env_only=1
fi

cache_root="${RESPAWN_CACHE:-$HOME/.cache/respawn}"
venv="$cache_root/openai-$OPENAI_VERSION/venv"
python="$venv/bin/python"

LOG_PREFIX="openai-client-venv"
# log, die, apt_install.
# shellcheck source=scripts/lib/fetch.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/fetch.sh"

installed_version() {
    "$python" -c 'import openai; print(openai.__version__)' 2>/dev/null || true
}

started=$SECONDS
if [ "$(installed_version)" != "$OPENAI_VERSION" ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3 python3-venv python3-pip
    fi
    log "creating $venv with openai==$OPENAI_VERSION"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$python" -m pip install -q --disable-pip-version-check --no-deps "${REQUIREMENTS[@]}"
    "$python" -m pip check >/dev/null || die "the pinned dependency set is inconsistent: $("$python" -m pip check)"
    [ "$(installed_version)" = "$OPENAI_VERSION" ] || die "openai $OPENAI_VERSION did not install"
else
    log "openai $OPENAI_VERSION already installed"
fi

if [ "$print_env_only" -eq 1 ]; then
    printf 'export RESPAWN_OPENAI_PYTHON=%q\n' "$python"
    exit 0
fi
log "done in $((SECONDS - started)) s"
printf 'openai client python: %s\n' "$python"
printf 'The tests find it by default; to use it elsewhere:\n'
printf '  export RESPAWN_OPENAI_PYTHON=%q\n' "$python"
