#!/usr/bin/env bash
# apt_install.sh PACKAGE...: install Debian packages that are not installed yet.
# Every server script installs through this one, under one machine-wide lock, because
# up.sh starts them in parallel and two apt-get runs at once fail on apt's own locks
# (`apt-get update` takes /var/lib/apt/lists/lock, which DPkg::Lock::Timeout does not cover).
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
(
    flock 9
    echo "installing ${missing[*]} (apt)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
) 9>/var/lock/dcstore-apt.lock
