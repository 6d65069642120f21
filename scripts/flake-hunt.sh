#!/usr/bin/env bash
# Runs the whole test suite (scripts/test.sh) N times with a 2-core CPU hog beside it, and prints
# how often each test failed. A test that fails even once here will fail someday in CI.
#
#   bash scripts/flake-hunt.sh [N] [-- ARGS FOR cargo test]
#
# N defaults to 20. The hog is `stress-ng --cpu 2` when installed, else two busy shell loops; it
# runs in its own process group and is killed when the script ends, however it ends. Each run's
# output is kept in target/flake-hunt/run-I.log. Exit status: 0 when no test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
shift || true
if [[ "${1:-}" == "--" ]]; then
    shift
fi
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [N] [-- ARGS FOR cargo test]" >&2
    exit 2
fi

logs=target/flake-hunt
mkdir -p "$logs"
rm -f "$logs"/run-*.log

# Build before the hog starts: compiling under it proves nothing.
cargo build --workspace --all-targets --locked --quiet

hog_pid=
stop_hog() {
    if [[ -n "$hog_pid" ]]; then
        # The hog leads its own process group: end all of it.
        kill -TERM -- "-$hog_pid" 2>/dev/null || true
        wait "$hog_pid" 2>/dev/null || true
        hog_pid=
    fi
}
trap stop_hog EXIT
trap 'stop_hog; exit 130' INT
trap 'stop_hog; exit 143' TERM

if command -v stress-ng >/dev/null 2>&1; then
    hog="stress-ng --cpu 2 --quiet"
    setsid stress-ng --cpu 2 --quiet &
else
    hog="two busy shell loops"
    setsid sh -c 'sh -c "while :; do :; done" & sh -c "while :; do :; done" & wait' &
fi
hog_pid=$!
echo "flake hunt: $runs run(s) of scripts/test.sh beside a CPU hog ($hog); logs in $logs/"

failed_runs=0
for ((i = 1; i <= runs; i++)); do
    log="$logs/run-$i.log"
    started=$SECONDS
    if bash scripts/test.sh "$@" >"$log" 2>&1; then
        outcome=ok
    else
        outcome=FAILED
        failed_runs=$((failed_runs + 1))
    fi
    failures=$(grep -cE '^test .* \.\.\. FAILED$' "$log" || true)
    echo "run $i/$runs: $outcome, $failures failed test(s), $((SECONDS - started)) s"
done
stop_hog

# One line per failure, named by test binary and test: `test NAME ... FAILED` under the latest
# `Running TARGET` line; a binary that died without reporting (e.g. killed by a signal) counts too.
summary=$(
    for log in "$logs"/run-*.log; do
        awk '
            /^ *Running / {
                # "Running tests/x.rs (target/debug/deps/x-HASH)": name it by the binary.
                binary = $0
                sub(/.*\(/, "", binary); sub(/\).*/, "", binary)
                n = split(binary, parts, "/"); binary = parts[n]
                sub(/-[0-9a-f]+$/, "", binary)
                next
            }
            /^ *Doc-tests / { binary = "doc-tests " $2; next }
            /^test .* \.\.\. FAILED$/ { sub(/^test /, ""); sub(/ \.\.\. FAILED$/, ""); print binary "::" $0; next }
            /process didn.t exit successfully/ && /signal/ { print binary " (the test binary died)" }
        ' "$log"
    done | sort | uniq -c | sort -rn
)
echo
if [[ -z "$summary" ]]; then
    echo "no test failed in $runs run(s)"
else
    echo "failures per test over $runs run(s):"
    echo "$summary"
fi
total=$(printf '%s\n' "$summary" | awk '{ n += $1 } END { print n + 0 }')
echo "total: $total failure(s); $failed_runs of $runs run(s) failed"
if [[ "$failed_runs" -gt 0 ]]; then
    exit 1
fi
