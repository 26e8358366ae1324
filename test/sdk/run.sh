#!/usr/bin/env bash
# The official E2B JS SDK (npm e2b, pinned in package.json) driving the real
# paddock binary. Called by `make test-sdk` (after `make build`).
#
#   test/sdk/run.sh              every suite
#   test/sdk/run.sh envd         only the named suites (envd)
#   test/sdk/run.sh bench        the envd latency measurements (never assertions)
#
# Environment: PADDOCK_BIN (default bin/paddock), SDK_TEST_PATTERN (passed to
# node --test-name-pattern). Logs and reports go to test/sdk/.out/.
# Exits non-zero if any test fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${PADDOCK_BIN:-$root/bin/paddock}
out=$here/.out
run_id=$$
export PADDOCK_SDK_RUN_ID=$run_id

envd_addr=127.0.0.1
envd_port=49983 # the SDK's debug mode always talks to localhost:49983
envd_pid=

log() { printf '[run.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

cleanup() {
	stop_envd
	# Scratch directories the suites create on this host (debug mode runs on the host).
	rm -rf "/tmp/paddock-sdk-$run_id" "/home/user/.paddock-sdk-$run_id" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- steps ---------------------------------------------------------------

ensure_node_modules() {
	command -v node >/dev/null || die "node is not installed (need Node.js >= 20)"
	command -v npm >/dev/null || die "npm is not installed"
	if [[ ! -f $here/node_modules/e2b/package.json || ! -f $here/node_modules/e2b-2.50/package.json ||
		$here/package-lock.json -nt $here/node_modules/.package-lock.json ]]; then
		log "installing node modules (npm ci)"
		(cd "$here" && npm ci --no-audit --no-fund) >&2
	fi
	local v
	v=$(node -p "require('$here/node_modules/e2b/package.json').version")
	[[ $v == 2.51.0 ]] || die "node_modules has e2b $v, want 2.51.0 (delete test/sdk/node_modules)"
}

# The suites act as `user` (home /home/user), as in E2B templates.
ensure_user() {
	if id user >/dev/null 2>&1; then return; fi
	[[ $(id -u) == 0 ]] || die "user 'user' is missing and creating it needs root"
	log "creating user 'user'"
	useradd -m -s /bin/bash user
}

# In debug mode envd runs every command on this host through `bash -l -c` as
# root or `user`, so those login shells must finish. A dotfile that waits
# (e.g. a stale pyenv rehash lock, /root/.pyenv/shims/.pyenv-shim) would show
# up as every test timing out; say so up front instead.
check_login_shells() {
	local who
	for who in root user; do
		if ! timeout 20 runuser -u "$who" -- bash -l -c true </dev/null >/dev/null 2>&1; then
			die "'bash -l -c true' as $who did not finish within 20 s: check $who's dotfiles (~/.profile, ~/.bashrc); the SDK runs every command through a login shell"
		fi
	done
}

port_busy() { (exec 3<>"/dev/tcp/$envd_addr/$1") 2>/dev/null; }

start_envd() {
	[[ -x $bin ]] || die "$bin not found: run 'make build' first"
	if port_busy "$envd_port"; then
		die "port $envd_port is already in use (another envd?); the SDK's debug mode needs it: stop that process first"
	fi
	mkdir -p "$out"
	"$bin" envd --listen "$envd_addr:$envd_port" >"$out/envd.log" 2>&1 &
	envd_pid=$!
	local i
	for ((i = 0; i < 100; i++)); do
		if ! kill -0 "$envd_pid" 2>/dev/null; then
			envd_pid=
			tail -n 20 "$out/envd.log" >&2 || true
			die "paddock envd exited during startup (log: $out/envd.log)"
		fi
		if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$envd_addr:$envd_port/health" 2>/dev/null) == 204 ]]; then
			log "paddock envd up on $envd_addr:$envd_port (pid $envd_pid, log $out/envd.log)"
			return
		fi
		sleep 0.1
	done
	die "paddock envd did not answer GET /health with 204 within 10 s (log: $out/envd.log)"
}

stop_envd() {
	[[ -n $envd_pid ]] || return 0
	kill -TERM "$envd_pid" 2>/dev/null || true
	local i
	for ((i = 0; i < 50; i++)); do
		kill -0 "$envd_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$envd_pid" 2>/dev/null || true
	wait "$envd_pid" 2>/dev/null || true
	envd_pid=
}

# run_node_suite <label> <file>: node's test runner with the spec reporter on
# stdout and a one-line summary. Returns the runner's status.
run_node_suite() {
	local label=$1 file=$2 rc=0
	local summary=$out/${label// /-}.summary
	local args=(--test --test-concurrency=1
		--test-reporter=spec --test-reporter-destination=stdout
		--test-reporter="$here/lib/summary-reporter.mjs" --test-reporter-destination="$summary")
	[[ -n ${SDK_TEST_PATTERN:-} ]] && args+=(--test-name-pattern="$SDK_TEST_PATTERN")
	(cd "$here" && PADDOCK_SDK_SUITE=$label E2B_DEBUG=true node "${args[@]}" "$file") || rc=$?
	echo
	cat "$summary" 2>/dev/null || echo "$label: no summary (the runner failed before reporting; status $rc)"
	return "$rc"
}

suite_envd() {
	start_envd
	local rc=0
	run_node_suite "sdk suite" envd.test.mjs || rc=$?
	stop_envd
	return "$rc"
}

# The ingress suite: `paddock serve --domain` (HTTPS, local CA, DNS) and the
# SDK with only E2B_DOMAIN, in a network namespace; see ingress.sh.
suite_ingress() {
	PADDOCK_BIN=$bin PADDOCK_SDK_RUN_ID=$run_id "$here/ingress.sh"
}

bench_envd() {
	start_envd
	(cd "$here" && E2B_DEBUG=true node bench-envd.mjs)
	stop_envd
}

# ---- main ----------------------------------------------------------------

all_suites=(envd ingress) # later: control-plane suites against `paddock serve`
suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=("${all_suites[@]}")

ensure_node_modules
ensure_user
[[ $(id -u) == 0 ]] && check_login_shells

status=0
for s in "${suites[@]}"; do
	case $s in
	envd) suite_envd || status=1 ;;
	ingress) suite_ingress || status=1 ;;
	bench) bench_envd || status=1 ;;
	*) die "unknown suite '$s' (known: ${all_suites[*]} bench)" ;;
	esac
done
exit "$status"
