#!/usr/bin/env bash
# Runs respawn's benchmarks on this machine and rewrites docs/BENCHMARKS.md with the figures.
#
# Measured side by side in one run: recovery from a hard hang (respawn vs the original design's restart
# loop), health-green deadlocks, a restart storm, proxy overhead (direct vs nginx vs a bare actix-web + awc proxy vs a plain hyper
# proxy vs respawn, with wrk), streaming lag, respawn's own time in a restart, the cost of supervising 1, 8
# and 64 servers, the resident size of the release build with and without its function order
# (cli/function-order.txt), the release build with and without its compiler profile
# (cli/pgo/respawn.profdata), the release build on the C library's allocator and on mimalloc, and
# 1,000 concurrent streams (direct vs nginx vs respawn: CPU per stream, RSS, per-chunk lag). About 40
# minutes on 2 cores, four release builds included (about 33 minutes of measuring; from a clean
# target directory the four release builds and the two example programs take about 10 more). Not part of CI; nothing here is a pass/fail test.
# Arguments go to benches/driver.py: `scripts/bench.sh --only hard_hang,restart_time` reruns those
# parts and keeps the other figures of the last full run (target/bench/results.json).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]} with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    $sudo apt-get install -y "${need_apt[@]}"
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed to drive the benchmarks" >&2; exit 1; }

# Twins of the release build for the parts that compare builds: the same code without its profile
# (cli/pgo/respawn.profdata; in a target directory of its own, since the profile changes every
# crate's compilation), on mimalloc (its own directory too: other features) and
# linked without its function order (cli/function-order.txt); then the
# build everyone gets (scripts/release-build.sh).
mkdir -p target/bench
RESPAWN_PGO=off scripts/release-build.sh -p respawn-cli --target-dir target/bench/build-no-pgo
cp target/bench/build-no-pgo/release/respawn target/bench/respawn-no-pgo
scripts/release-build.sh -p respawn-cli --features mimalloc --target-dir target/bench/build-mimalloc
cp target/bench/build-mimalloc/release/respawn target/bench/respawn-mimalloc
RESPAWN_FUNCTION_ORDER=off scripts/release-build.sh -p respawn-cli
cp target/release/respawn target/bench/respawn-unordered
scripts/release-build.sh
# The load generator of the many-streams part, and the plain proxies of the overhead part: on
# actix-web + awc (an example of respawn's) and on hyper (a workspace of its own, benches/hyper_proxy).
scripts/release-build.sh --example stream_clients --example bare_proxy
cargo build --release --locked --manifest-path benches/hyper_proxy/Cargo.toml --target-dir target/bench/build-hyper
workdir="target/bench/logs"
rm -rf "$workdir"
mkdir -p "$workdir"
python3 benches/driver.py \
    --respawn target/release/respawn \
    --respawn-unordered target/bench/respawn-unordered \
    --respawn-no-pgo target/bench/respawn-no-pgo \
    --respawn-mimalloc target/bench/respawn-mimalloc \
    --hyper-proxy target/bench/build-hyper/release/hyper-proxy \
    --out docs/BENCHMARKS.md \
    --command "scripts/bench.sh" \
    --workdir "$workdir" \
    "$@"
