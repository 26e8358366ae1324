#!/usr/bin/env bash
# Installs CRIU >= 4.2 for Paddock's memory snapshots (pause with memory,
# snapshots) without touching the system's packages or libraries.
#
# Older CRIU fails on current kernels (3.17: vDSO layout of Linux >= 6.13;
# 4.1: inet sockets on Linux >= 6.16). When no CRIU >= 4.2 is installed, this
# takes `criu` and the libraries it links from Debian's packages of the
# newest suite that has it (sid), with a private apt configuration whose
# state and cache live under $CACHE, unpacks them with `dpkg -x` into $PREFIX,
# and writes $PREFIX/bin/criu: a wrapper that runs the unpacked binary through
# its own dynamic loader and library path. `paddock serve` puts $PREFIX/bin
# first on its PATH (libcontainer runs `criu swrk`).
#
# The Debian mirror is the one the host's apt already uses (read at run time).
# Idempotent: a second run only checks. Run as root.
#
#   PREFIX (default /opt/paddock/criu)    where the unpacked tree and wrapper go
#   CACHE  (default /var/cache/paddock/criu-apt)  private apt state and downloads
#   CRIU_SUITE (default sid)              Debian suite to take CRIU from
set -euo pipefail

PREFIX=${PREFIX:-/opt/paddock/criu}
CACHE=${CACHE:-/var/cache/paddock/criu-apt}
SUITE=${CRIU_SUITE:-sid}
MIN_VERSION=40200 # 4.2.0

log() { printf 'install-criu: %s\n' "$*" >&2; }

# criu_version <criu>: prints the version as an integer (4.2.1 -> 40201).
criu_version() {
	local v
	v=$("$1" --version 2>/dev/null | awk '/^Version:/ {print $2; exit}') || return 1
	[[ -n $v ]] || return 1
	IFS=. read -r a b c <<<"$v"
	echo $((a * 10000 + ${b:-0} * 100 + ${c:-0}))
}

usable() { # usable <criu>: new enough and passes its own check
	local v
	v=$(criu_version "$1") || return 1
	((v >= MIN_VERSION)) && "$1" check >/dev/null 2>&1
}

if [[ -x $PREFIX/bin/criu ]] && usable "$PREFIX/bin/criu"; then
	log "CRIU $("$PREFIX/bin/criu" --version | awk '/^Version:/ {print $2}') already in $PREFIX"
	exit 0
fi
if sys=$(command -v criu) && usable "$sys"; then
	log "the system's CRIU ($sys) is new enough; nothing to install"
	exit 0
fi

arch=$(dpkg --print-architecture)
# The Debian mirror apt uses: the URI of a configured main suite (no
# -updates/-security), as apt itself reports it.
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' 2>/dev/null |
	awk '$3 == "Packages" && $2 !~ /-/ {print $1; exit}')
if [[ -z $mirror ]]; then
	# No downloaded lists yet: read the sources directly.
	apt-get update -qq >/dev/null 2>&1 || true
	mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' 2>/dev/null |
		awk '$3 == "Packages" && $2 !~ /-/ {print $1; exit}')
fi
[[ -n $mirror ]] || { log "cannot find the Debian mirror in apt's sources"; exit 1; }
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || { log "missing $keyring (package debian-archive-keyring)"; exit 1; }

# A private apt: its own sources, state, status and cache; nothing of the
# host's apt state is read or written.
rm -rf "$CACHE"
mkdir -p "$CACHE"/{state/lists/partial,cache/archives/partial,etc/sources.list.d,etc/preferences.d,debs}
: >"$CACHE/status"
echo "deb [signed-by=$keyring] ${mirror%/} $SUITE main" >"$CACHE/etc/sources.list"
cat >"$CACHE/apt.conf" <<EOF
Dir::State "$CACHE/state";
Dir::State::status "$CACHE/status";
Dir::Cache "$CACHE/cache";
Dir::Etc::SourceList "$CACHE/etc/sources.list";
Dir::Etc::SourceParts "$CACHE/etc/sources.list.d";
Dir::Etc::Preferences "$CACHE/etc/preferences";
Dir::Etc::PreferencesParts "$CACHE/etc/preferences.d";
APT::Architecture "$arch";
APT::Sandbox::User "root";
EOF
export APT_CONFIG=$CACHE/apt.conf
log "reading Debian $SUITE from ${mirror%/}"
apt-get update -qq
# The closure of criu's dependencies against an empty system: the unpacked
# tree needs its own libc (sid's CRIU wants a newer glibc than stable's).
pkgs=$(apt-get install -s --no-install-recommends criu 2>/dev/null | awk '/^Inst / {print $2}')
[[ -n $pkgs ]] || { log "apt found no installable criu in $SUITE"; exit 1; }
log "downloading $(wc -w <<<"$pkgs") packages: $(tr '\n' ' ' <<<"$pkgs")"
(cd "$CACHE/debs" && apt-get download -qq $pkgs)

tmp=$PREFIX.new
rm -rf "$tmp"
mkdir -p "$tmp/bin"
for deb in "$CACHE"/debs/*.deb; do
	dpkg -x "$deb" "$tmp/root"
done
libdir=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
loader=$(find "$tmp/root/usr/lib/$libdir" "$tmp/root/lib/$libdir" -maxdepth 1 -name 'ld-linux*.so.*' 2>/dev/null | head -n1 || true)
[[ -n $loader && -x $tmp/root/usr/sbin/criu ]] || { log "unpacked tree lacks the loader or criu"; exit 1; }
loader=${loader#"$tmp/root/"}
cat >"$tmp/bin/criu" <<EOF
#!/bin/sh
# CRIU from Debian $SUITE, run with its own loader and libraries
# (written by scripts/install-criu.sh; the system's libraries are untouched).
R=$PREFIX/root
exec "\$R/$loader" --library-path "\$R/usr/lib/$libdir:\$R/lib/$libdir" "\$R/usr/sbin/criu" "\$@"
EOF
chmod 755 "$tmp/bin/criu"
rm -rf "$PREFIX"
mv "$tmp" "$PREFIX"
rm -rf "$CACHE/debs" "$CACHE/cache"

if ! usable "$PREFIX/bin/criu"; then
	log "the installed CRIU does not pass 'criu check':"
	"$PREFIX/bin/criu" check >&2 || true
	exit 1
fi
log "installed CRIU $("$PREFIX/bin/criu" --version | awk '/^Version:/ {print $2}') in $PREFIX (wrapper $PREFIX/bin/criu)"
