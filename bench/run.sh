#!/usr/bin/env bash
# Paddock benchmarks (`make bench`): builds bin/paddock and the Go baselines
# (bench/cmd/pbench), installs what is missing (Debian's runc for the second
# reference, the pinned e2b npm package), then runs bench/sdk/bench.mjs, which
# starts its own `paddock serve`, prints the table and writes bench/RESULTS.md.
# Never part of `make test`: benchmarks measure, they do not assert.
#
# Knobs (environment): BENCH_QUICK=1 (small CI-friendly counts), BENCH_N,
# BENCH_CONCURRENCY, BENCH_CONC_SAMPLES, BENCH_CMD_N, BENCH_FILES_RUNS,
# BENCH_DENSITY_MAX, BENCH_LOAD_SECONDS, BENCH_LOAD_CONCURRENCY, BENCH_FLOOR_N,
# BENCH_PROFILE_SECONDS, BENCH_POOL_SIZE, BENCH_POOL_N, BENCH_POOL_ROUNDS,
# BENCH_ONLY=create,pool,concurrent,commands,files,envd,density,control,kill,
# profile, BENCH_BRIDGE, BENCH_SUBNET, BENCH_POOL_BRIDGE, BENCH_POOL_SUBNET, BENCH_RESULTS,
# PADDOCK_BIN (skip the build and use this binary). See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
log() { printf '[bench/run.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

[[ $(id -u) == 0 ]] || die "run as root: paddock serve and the libcontainer baselines create namespaces, cgroups and mounts"
command -v node >/dev/null || die "node is not installed (need Node.js >= 20; scripts/setup.sh installs it)"
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

if ! command -v runc >/dev/null; then
	log "installing Debian's runc (the second reference)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc >/dev/null
fi

if [[ -z ${PADDOCK_BIN:-} ]]; then
	log "building bin/paddock"
	make -s -C "$root" build
	export PADDOCK_BIN=$root/bin/paddock
fi
mkdir -p "$here/.out"
log "building bench/.out/pbench"
# Static, as bin/paddock: libcontainer re-executes it as each floor
# container's init, and a dynamic binary pays the loader on every start.
(cd "$root" && CGO_ENABLED=1 go build -tags 'seccomp osusergo netgo' \
	-ldflags '-s -w -linkmode external -extldflags "-static"' -o "$here/.out/pbench" ./bench/cmd/pbench)
export PBENCH_BIN=$here/.out/pbench
# The floor's containers start through the same small init as paddock's
# (cmd/paddock-init from a sealed memfd), so the floor is libcontainer's cost
# and not that of pbench's own package initialisers.
log "building bench/.out/paddock-init"
(cd "$root" && CGO_ENABLED=1 go build -tags 'seccomp osusergo netgo' \
	-ldflags '-s -w -linkmode external -extldflags "-static"' -o "$here/.out/paddock-init" ./cmd/paddock-init)
export PBENCH_INIT=$here/.out/paddock-init

if [[ ! -f $here/sdk/node_modules/e2b/package.json || $here/sdk/package-lock.json -nt $here/sdk/node_modules/.package-lock.json ]]; then
	log "installing node modules (npm ci)"
	(cd "$here/sdk" && npm ci --no-audit --no-fund) >&2
fi

knobs=$(env | grep -E '^BENCH_[A-Z_]+=' | sort | tr '\n' ' ' || true)
export BENCH_COMMAND="${knobs}make bench"
cd "$here/sdk"
exec node bench.mjs
