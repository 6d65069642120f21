#!/usr/bin/env bash
# Runs `examples/systemd.rs` as documented in the README: it serves on $PORT, refuses /restart
# without the token, accepts it with the token, and exits with the documented code 75.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --example systemd --locked
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PORT=$port RESPAWN_ADMIN_TOKEN=smoke-token ./target/debug/examples/systemd &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then break; fi
    sleep 0.1
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/restart")
[ "$code" = 401 ] || { echo "expected 401 without a token, got $code" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer smoke-token' "http://127.0.0.1:$port/restart")
[ "$code" = 202 ] || { echo "expected 202 with the token, got $code" >&2; exit 1; }
set +e
wait $pid
status=$?
set -e
trap - EXIT
[ "$status" = 75 ] || { echo "expected exit code 75 after /restart, got $status" >&2; exit 1; }
echo "systemd example: 401 without token, 202 with it, exit 75"
