#!/usr/bin/env bash
# Installs what Paddock needs to build, run and test on a fresh Debian/Ubuntu
# host (run as root). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$1"); }
for p in build-essential protobuf-compiler libseccomp-dev debootstrap nftables iproute2 \
         redis-server jq zstd ca-certificates curl busybox-static \
         python3-ipykernel python3-matplotlib python3-matplotlib-inline python3-pandas node-typescript; do
  want "$p"
done
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
  if [ -x /usr/local/go/bin/go ]; then export PATH=$PATH:/usr/local/go/bin; else
    echo "setup: Go >= 1.26 is required (https://go.dev/dl)"; exit 1; fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: installing Node.js and npm from Debian"
  apt-get install -y -qq nodejs npm >/dev/null
fi

# CRIU >= 4.2 for memory snapshots (pause, snapshots), unpacked under /opt
# without touching the system's libraries.
scripts/install-criu.sh

echo "setup: building bin/paddock"
make -s build
echo "setup: done ($(bin/paddock version))"
