#!/usr/bin/env bash
# Checks the manifests in this directory against the Kubernetes API schemas, with the pinned
# `kubernetes-validate` (it ships the schemas, so no cluster and no network beyond PyPI are needed),
# installed once into a venv under ${RESPAWN_CACHE:-$HOME/.cache/respawn}/kubernetes-validate.
set -euo pipefail
VERSION="1.37.0"
here="$(cd "$(dirname "$0")" && pwd)"
venv="${RESPAWN_CACHE:-$HOME/.cache/respawn}/kubernetes-validate-$VERSION"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$VERSION"
fi
# --strict rejects unknown fields; check against the oldest and newest versions we claim.
for k8s in 1.30.0 "$VERSION"; do
    "$venv/bin/kubernetes-validate" --strict -k "$k8s" "$here"/*.yaml
done
