#!/usr/bin/env bash
# Build (once) the dcstore-ferretdb binary: FerretDB v1 embedded, SQLite handler only.
# Prints the binary path. Cached under $REPO/.servers/ferretdb/bin keyed by FerretDB
# version and a hash of this folder's Go sources, so repeated calls cost nothing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VERSION="$(awk '$1=="require" && $2=="github.com/FerretDB/FerretDB" {print $3}' "$HERE/go.mod")"
SRC_HASH="$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" | sha256sum | cut -c1-12)"
BIN_DIR="$REPO/.servers/ferretdb/bin"
BIN="$BIN_DIR/dcstore-ferretdb-$VERSION-$SRC_HASH"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "go not found; installing golang-go (the go.mod toolchain line fetches a newer one if needed)" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >&2
fi

mkdir -p "$BIN_DIR"
echo "building FerretDB $VERSION (first time only; several minutes on 2 cores)..." >&2
(
  cd "$HERE"
  # -mod=readonly: go.sum pins every module; nothing is resolved anew.
  GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" \
    go build -trimpath -tags ferretdb_no_postgresql -ldflags="-s -w" -o "$BIN.tmp.$$" .
)
mv -f "$BIN.tmp.$$" "$BIN"
echo "$BIN"
