# Shell helpers for the scripts that work with the compiler's LLVM (sourced, not run).

# The major version of the LLVM inside rustc ("22").
rustc_llvm_major() {
    rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p'
}

# The path of an llvm-profdata of the compiler's LLVM version (rustup's llvm-tools, or a
# distribution's llvm-profdata-N), installing the distribution's llvm-N with apt-get when none is
# found. Fails with a message when there is none to be had.
llvm_profdata() {
    local major sysroot candidate
    major="$(rustc_llvm_major)"
    sysroot="$(rustc --print sysroot)"
    for attempt in 1 2; do
        for candidate in "$sysroot"/lib/rustlib/*/bin/llvm-profdata "llvm-profdata-$major" llvm-profdata; do
            if command -v "$candidate" >/dev/null 2>&1 &&
                "$candidate" --version 2>/dev/null | grep -q "LLVM version $major\."; then
                command -v "$candidate"
                return 0
            fi
        done
        [ "$attempt" = 1 ] || break
        echo "installing llvm-$major (for llvm-profdata) with apt-get" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update >&2 && $sudo apt-get install -y "llvm-$major" >&2 || break
    done
    echo "no llvm-profdata of LLVM $major (the compiler's) found: install llvm-$major, or rustup's llvm-tools" >&2
    return 1
}
