#!/usr/bin/env bash
# Command-line tools the tests use that no pip package ships, built from the Go module
# proxy into .tools/bin (reusing Go's caches; a no-op when already built):
#   kustomize  renders k8s/ for tests/test_k8s_manifests.py
set -euo pipefail
cd "$(dirname "$0")/.."
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.5.0}"
BIN="$PWD/.tools/bin"
mkdir -p "$BIN"
STAMP="$BIN/.kustomize-version"
if [ ! -x "$BIN/kustomize" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
    echo "tools: building kustomize $KUSTOMIZE_VERSION (Go module proxy)"
    GOBIN="$BIN" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    echo "$KUSTOMIZE_VERSION" > "$STAMP"
fi
echo "tools: kustomize $(cat "$STAMP") ready"
