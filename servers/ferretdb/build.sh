#!/usr/bin/env bash
# Build (once) the dcstore-ferretdb binary: FerretDB v1 embedded, SQLite handler only,
# with one upstream fix applied to a copy of the module (the module cache is untouched):
# FerretDB v1's SQLite handler compares `_id` with `_ferretdb_sjson->'$._id'` while the
# unique `_id` index it creates is on `_ferretdb_sjson->"_id"`. Both expressions name the
# same value, but SQLite uses an expression index only for the expression it was built on,
# so every find, update and delete by `_id` scanned the whole collection (3.9 s for one
# 4 MiB chunk of a 30 MB object). The copy writes the query with `->'_id'`, which SQLite
# matches to the index (EXPLAIN QUERY PLAN: SEARCH ... USING INDEX ..._id_).
# Prints the binary path. Cached under $REPO/.servers/ferretdb/bin keyed by FerretDB
# version and a hash of this folder's Go sources, so repeated calls cost nothing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VERSION="$(awk '$1=="require" && $2=="github.com/FerretDB/FerretDB" {print $3}' "$HERE/go.mod")"
SRC_HASH="$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" "$HERE/build.sh" | sha256sum | cut -c1-12)"
BIN_DIR="$REPO/.servers/ferretdb/bin"
BIN="$BIN_DIR/dcstore-ferretdb-$VERSION-$SRC_HASH"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

# Go >= 1.21 switches to the toolchain go.mod needs by itself (GOTOOLCHAIN=auto, through the
# module proxy). Without Go, or with an older one (Debian 12 ships 1.19), fetch the official
# toolchain module golang.org/toolchain from the Go module proxy once and use it.
go_ok() { command -v go >/dev/null 2>&1 && go version | grep -Eq 'go1\.(2[1-9]|[3-9][0-9])'; }
if ! go_ok; then
  GO_VERSION="${FERRETDB_GO_VERSION:-go1.24.3}"
  TOOLCHAIN="$REPO/.servers/ferretdb/toolchain/$GO_VERSION"
  if [[ ! -x "$TOOLCHAIN/bin/go" ]]; then
    PROXY="$(go env GOPROXY 2>/dev/null || echo "${GOPROXY:-https://proxy.golang.org}")"
    PROXY="${PROXY%%,*}"
    [[ "$PROXY" == direct || "$PROXY" == off ]] && PROXY=https://proxy.golang.org
    ZIP_URL="$PROXY/golang.org/toolchain/@v/v0.0.1-$GO_VERSION.linux-$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/').zip"
    echo "no Go >= 1.21 here; fetching the $GO_VERSION toolchain module from $PROXY" >&2
    mkdir -p "$TOOLCHAIN.tmp"
    python3 - "$ZIP_URL" "$TOOLCHAIN.tmp" <<'PY'
import io, os, sys, urllib.request, zipfile
url, dest = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url, timeout=600) as resp:
    archive = zipfile.ZipFile(io.BytesIO(resp.read()))
first = archive.namelist()[0]  # golang.org/toolchain@v0.0.1-goX.linux-ARCH/...
prefix = first[: first.index("/", first.index("@")) + 1]
for info in archive.infolist():
    name = info.filename[len(prefix):]
    if not name or info.is_dir():
        continue
    path = os.path.join(dest, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with archive.open(info) as src, open(path, "wb") as out:
        out.write(src.read())
    mode = (info.external_attr >> 16) & 0o777
    os.chmod(path, mode or 0o644)
PY
    rm -rf "$TOOLCHAIN" && mv "$TOOLCHAIN.tmp" "$TOOLCHAIN"
  fi
  export GOROOT="$TOOLCHAIN" PATH="$TOOLCHAIN/bin:$PATH" GOTOOLCHAIN=local
fi

mkdir -p "$BIN_DIR"
echo "building FerretDB $VERSION (first time only; several minutes on 2 cores)..." >&2
(
  cd "$HERE"
  # -mod=readonly: go.sum pins every module; nothing is resolved anew.
  export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
  go mod download github.com/FerretDB/FerretDB
  # A patched copy of the module, used through a `replace` in a build-only go.mod
  # (Go refuses -overlay for files in the module cache).
  PATCHED="$REPO/.servers/ferretdb/src-$VERSION-$SRC_HASH"
  if [[ ! -f "$PATCHED/.patched" ]]; then
    rm -rf "$PATCHED"
    cp -r "$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)" "$PATCHED"
    chmod -R u+w "$PATCHED"
    FILE="$PATCHED/internal/backends/sqlite/metadata/metadata.go"
    sed -i "s|IDColumn = DefaultColumn + \"->'\\\$._id'\"|IDColumn = DefaultColumn + \"->'_id'\"|" "$FILE"
    if ! grep -q "IDColumn = DefaultColumn + \"->'_id'\"" "$FILE"; then
      echo "build.sh: FerretDB $VERSION's sqlite/metadata/metadata.go no longer has the line the _id index fix rewrites; check the fix is still needed" >&2
      exit 1
    fi
    touch "$PATCHED/.patched"
  fi
  MODFILE="$REPO/.servers/ferretdb/build-$SRC_HASH.mod"
  { cat go.mod; echo "replace github.com/FerretDB/FerretDB => $PATCHED"; } > "$MODFILE"
  cp go.sum "${MODFILE%.mod}.sum"
  go build -modfile "$MODFILE" -trimpath -tags ferretdb_no_postgresql -ldflags="-s -w" -o "$BIN.tmp.$$" .
)
mv -f "$BIN.tmp.$$" "$BIN"
echo "$BIN"
