#!/usr/bin/env bash
# Command-line tools the tests use that no pip package ships, built from the Go module
# proxy into .tools/bin (reusing Go's caches; a no-op when already built):
#   kustomize        renders k8s/ for tests/test_k8s_manifests.py
#   toxiproxy-server the fault proxy of tests/chaos/ (latency, bandwidth, resets, timeouts)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
mkdir -p "$BIN"

# build NAME VERSION PACKAGE: go install PACKAGE@VERSION into $BIN/NAME once per version.
build() {
    local name="$1" version="$2" package="$3" stamp="$BIN/.$1-version"
    if [ ! -x "$BIN/$name" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
        echo "tools: building $name $version (Go module proxy)"
        local out
        out="$(mktemp -d)"
        GOBIN="$out" GOFLAGS=-mod=mod go install "$package@$version"
        mv "$out"/* "$BIN/$name"  # the one binary go install built
        rm -rf "$out"
        echo "$version" > "$stamp"
    fi
    echo "tools: $name $(cat "$stamp") ready"
}

build kustomize "${KUSTOMIZE_VERSION:-v5.5.0}" sigs.k8s.io/kustomize/kustomize/v5
build toxiproxy-server "${TOXIPROXY_VERSION:-v2.12.0}" github.com/Shopify/toxiproxy/v2/cmd/server
