#!/usr/bin/env bash
# The official E2B JS SDK (npm e2b, pinned in package.json) driving the real
# paddock binary. Called by `make test-sdk` (after `make build`).
#
#   test/sdk/run.sh              every suite
#   test/sdk/run.sh envd         only the named suites (envd)
#   test/sdk/run.sh bench        the envd latency measurements (never assertions)
#   test/sdk/run.sh serve        envd + platform suites through `paddock serve`, e2b 2.51 and 2.50
#   test/sdk/run.sh quickstart   the README quick start: a fresh `paddock serve`, its key, `apikey`
#   test/sdk/run.sh bench-serve  Sandbox.create() and commands.run latency through serve (measured)
#   test/sdk/run.sh host         isolation + lifecycle robustness against their own `paddock serve` (host-side checks)
#   test/sdk/run.sh codeinterp   @e2b/code-interpreter against the built-in code-interpreter-v1 template (own serve)
#   test/sdk/run.sh pool         the warm pool: `paddock serve --pool-size 2` and Sandbox.create() (own serve)
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
	serve_cleanup || true
	host_cleanup || true
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
		! -f $here/node_modules/@e2b/code-interpreter/package.json ||
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

# ---- paddock serve (control-plane suites) ----------------------------------
# One server for both SDK versions: a free port, a temp data dir, and its own
# bridge and /24 so it cannot clash with a developer's server. Sandboxes
# outlive the server by design, so cleanup kills them through the API first
# (restarting the server on the same data dir if it died), then stops it and
# fails if anything is left on the host (lib/serve-host.mjs check-host).

serve_pid=
serve_data=
serve_url=
serve_bridge=pdsdk$((run_id % 100000))
serve_subnet=
serve_ids=$out/serve-ids
serve_envs=()

# serve_launch starts the server (a new free port; the data dir, bridge and
# subnet stay the same across restarts) and waits for GET /health 200.
serve_launch() {
	[[ -x $bin ]] || { log "error: $bin not found: run 'make build' first"; return 2; }
	mkdir -p "$out"
	if [[ -z $serve_data ]]; then
		serve_data=$(mktemp -d /tmp/paddock-sdk-serve.XXXXXX)
		chmod 711 "$serve_data"
		: >"$serve_ids"
		: >"$out/serve.out"
		: >"$out/serve.log"
	fi
	[[ -n $serve_subnet ]] || serve_subnet=$(node "$here/lib/serve-host.mjs" pick-subnet "$run_id") || return 2
	local port
	port=$(node "$here/lib/serve-host.mjs" free-port) || return 2
	serve_url=http://127.0.0.1:$port
	"$bin" serve --data-dir "$serve_data/data" --listen "127.0.0.1:$port" \
		--bridge "$serve_bridge" --subnet "$serve_subnet" >>"$out/serve.out" 2>>"$out/serve.log" &
	serve_pid=$!
	local i
	for ((i = 0; i < 6000; i++)); do
		if ! kill -0 "$serve_pid" 2>/dev/null; then
			wait "$serve_pid" 2>/dev/null || true
			serve_pid=
			tail -n 30 "$out/serve.log" >&2 || true
			log "error: paddock serve exited during startup (log: $out/serve.log)"
			return 2
		fi
		if [[ $(curl -s -o /dev/null -w '%{http_code}' "$serve_url/health" 2>/dev/null) == 200 ]]; then
			if [[ ! -s $serve_data/data/initial-api-key ]]; then
				log "error: paddock serve wrote no $serve_data/data/initial-api-key"
				return 2
			fi
			log "paddock serve up on $serve_url (pid $serve_pid, bridge $serve_bridge, subnet $serve_subnet, data $serve_data/data, log $out/serve.log)"
			serve_envs=(E2B_API_URL="$serve_url" E2B_SANDBOX_URL="$serve_url"
				E2B_API_KEY="$(<"$serve_data/data/initial-api-key")"
				PADDOCK_SDK_IDS_FILE="$serve_ids" PADDOCK_BIN="$bin")
			return 0
		fi
		sleep 0.1
	done
	log "error: paddock serve did not answer GET /health with 200 within 600 s (log: $out/serve.log)"
	return 2
}

serve_start() {
	[[ $(id -u) == 0 ]] || die "the serve suites need root (paddock serve creates namespaces, cgroups, mounts)"
	serve_launch || exit 2
}

serve_stop() {
	[[ -n $serve_pid ]] || return 0
	kill -TERM "$serve_pid" 2>/dev/null || true
	local i
	for ((i = 0; i < 150; i++)); do
		kill -0 "$serve_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$serve_pid" 2>/dev/null || true
	wait "$serve_pid" 2>/dev/null || true
	serve_pid=
}

# serve_cleanup kills every sandbox, stops the server, checks the host and
# removes the bridge, its nftables table and the data dir. Idempotent;
# returns non-zero if something could not be killed or was left behind.
serve_cleanup() {
	[[ -n $serve_data ]] || return 0
	local rc=0 key_file=$serve_data/data/initial-api-key
	if [[ -z $serve_pid ]] || ! kill -0 "$serve_pid" 2>/dev/null; then
		serve_pid=
		if [[ -f $key_file ]]; then
			log "paddock serve is not running: restarting it on the same data dir to kill what is left"
			serve_launch || rc=1
		fi
	fi
	if [[ -n $serve_pid && -f $key_file ]]; then
		node "$here/lib/serve-host.mjs" kill-sandboxes "$serve_url" "$key_file" "$serve_ids" >&2 || rc=1
	fi
	serve_stop
	node "$here/lib/serve-host.mjs" check-host "$serve_data/data" "$serve_bridge" "$serve_ids" >&2 || rc=1
	node "$here/lib/serve-host.mjs" teardown-network "$serve_bridge" >&2 || rc=1
	if grep -qF " $serve_data/" /proc/self/mountinfo; then
		log "error: mounts remain under $serve_data; leaving it in place"
		rc=1
	else
		rm -rf "$serve_data"
	fi
	serve_data=
	return "$rc"
}

# run_node_suite_env <label> <file> [VAR=value...]: run_node_suite with the
# given environment instead of the SDK's debug mode.
run_node_suite_env() {
	local label=$1 file=$2 rc=0
	shift 2
	local summary=$out/${label// /-}.summary
	local args=(--test --test-concurrency=1
		--test-reporter=spec --test-reporter-destination=stdout
		--test-reporter="$here/lib/summary-reporter.mjs" --test-reporter-destination="$summary")
	[[ -n ${SDK_TEST_PATTERN:-} ]] && args+=(--test-name-pattern="$SDK_TEST_PATTERN")
	(cd "$here" && env -u E2B_DEBUG -u E2B_DOMAIN PADDOCK_SDK_SUITE="$label" "$@" node "${args[@]}" "$file") || rc=$?
	echo
	cat "$summary" 2>/dev/null || echo "$label: no summary (the runner failed before reporting; status $rc)"
	return "$rc"
}

suite_serve() {
	serve_start
	local rc=0
	run_node_suite_env "sdk 2.51 (serve)" serve-2.51.test.mjs "${serve_envs[@]}" || rc=1
	run_node_suite_env "sdk 2.50 (serve)" serve-2.50.test.mjs "${serve_envs[@]}" || rc=1
	serve_cleanup || rc=1
	front_check || rc=1
	return "$rc"
}

# front_check: the SDKs' requests to envd were served by the proxy's front
# end (not only by net/http), and, the API and envd sharing one origin here,
# connections went to net/http and came back. serve logs its counts when it
# stops.
front_check() {
	local line served taken
	line=$(grep -F 'msg="proxy front end"' "$out/serve.log" | tail -n 1)
	served=$(sed -n 's/.* servedRequests=\([0-9]*\).*/\1/p' <<<"$line")
	taken=$(sed -n 's/.* connectionsTakenBack=\([0-9]*\).*/\1/p' <<<"$line")
	if [[ -z $served || -z $taken || $served -eq 0 || $taken -eq 0 ]]; then
		log "error: the proxy's front end served ${served:-no} requests and took ${taken:-no} connections back (want both > 0): ${line:-no 'proxy front end' line in $out/serve.log}"
		return 1
	fi
	log "proxy front end: $served requests to envd served on their connection's goroutine, $taken connections taken back from net/http"
}

# The README quick start: the test starts its own server on a fresh data dir.
suite_quickstart() {
	[[ $(id -u) == 0 ]] || die "the quickstart suite needs root (paddock serve)"
	run_node_suite_env "quickstart" quickstart.test.mjs PADDOCK_BIN="$bin"
}

# The templates suite starts its own server (data dir, port, bridge, subnet):
# Template.build, cache, tags, teams, layer GC and `paddock template build`.
suite_templates() {
	[[ $(id -u) == 0 ]] || die "the templates suite needs root (paddock serve)"
	run_node_suite_env "templates" templates.test.mjs PADDOCK_BIN="$bin" PADDOCK_SDK_OUT="$out"
}

bench_serve() {
	serve_start
	local rc=0
	(cd "$here" && env -u E2B_DEBUG -u E2B_DOMAIN "${serve_envs[@]}" node bench-serve.mjs e2b) || rc=1
	(cd "$here" && env -u E2B_DEBUG -u E2B_DOMAIN "${serve_envs[@]}" node bench-serve.mjs e2b-2.50) || rc=1
	serve_cleanup || rc=1
	return "$rc"
}

# Pause, resume, auto-pause/resume and snapshots with memory (issue 7): the
# test runs its own server (it restarts it midway) and checks the host after;
# it also writes pause/resume latencies to .out/pause-latency.json.
suite_pause() {
	[[ $(id -u) == 0 ]] || die "the pause suite needs root (paddock serve, CRIU)"
	run_node_suite_env "pause" pause.test.mjs PADDOCK_BIN="$bin"
}

# The code interpreter (issue 6): @e2b/code-interpreter (pinned 2.8.0) against
# the built-in code-interpreter-v1 template of its own `paddock serve` (data
# dir, port, bridge, subnet; host checked after). It runs early: when the
# machine cache lacks the template, its server builds it (minutes) and caches
# it, so the servers of later suites extract it in seconds. It writes
# create → first runCode and runCode round-trip latencies to
# .out/codeinterp-latency.json.
suite_codeinterp() {
	[[ $(id -u) == 0 ]] || die "the codeinterp suite needs root (paddock serve)"
	run_node_suite_env "codeinterp" codeinterp.test.mjs PADDOCK_BIN="$bin" PADDOCK_SDK_OUT="$out"
}

# The warm pool (issue 4): the test starts its own `paddock serve --pool-size 2`
# (data dir, port, bridge, subnet), creates from the pool with the SDK and
# checks the host after stopping it (pooled sandboxes included).
suite_pool() {
	[[ $(id -u) == 0 ]] || die "the pool suite needs root (paddock serve)"
	run_node_suite_env "pool" pool.test.mjs PADDOCK_BIN="$bin" PADDOCK_SDK_OUT="$out"
}

# ---- isolation and robustness (issue 3, checks 2 and 3) --------------------
# Their own `paddock serve` (data dir, port, bridge and /24 of their own),
# which the tests start, SIGKILL and restart themselves (lib/host.mjs): it
# listens on 0.0.0.0 so "the control-plane port is unreachable from a
# sandbox" is checked against a port that is really open. This step gives
# both files the same environment and afterwards stops anything left, checks
# the host and removes the bridge, nftables table and data dir.

host_work=
host_bridge=pdh$((run_id % 100000))

suite_host() {
	[[ $(id -u) == 0 ]] || die "the host suites need root (paddock serve, /proc, /sys, network namespaces)"
	[[ -x $bin ]] || die "$bin not found: run 'make build' first"
	mkdir -p "$out"
	host_work=$(mktemp -d /tmp/paddock-sdk-host.XXXXXX)
	chmod 711 "$host_work"
	local port subnet rc=0
	port=$(node "$here/lib/serve-host.mjs" free-port) || return 2
	subnet=$(node "$here/lib/serve-host.mjs" pick-subnet "$((run_id + 1))") || return 2
	local envs=(PADDOCK_BIN="$bin" PADDOCK_HOST_WORK="$host_work" PADDOCK_HOST_PORT="$port"
		PADDOCK_HOST_BRIDGE="$host_bridge" PADDOCK_HOST_SUBNET="$subnet")
	log "host suites: their own paddock serve on 0.0.0.0:$port, bridge $host_bridge, subnet $subnet, data $host_work/data"
	run_node_suite_env "isolation" isolation.test.mjs "${envs[@]}" || rc=1
	run_node_suite_env "robustness" robustness.test.mjs "${envs[@]}" || rc=1
	host_cleanup || rc=1
	return "$rc"
}

host_cleanup() {
	[[ -n $host_work ]] || return 0
	local rc=0
	cp "$host_work/serve.log" "$out/host-serve.log" 2>/dev/null || true
	env PADDOCK_BIN="$bin" PADDOCK_HOST_WORK="$host_work" PADDOCK_HOST_BRIDGE="$host_bridge" \
		PADDOCK_HOST_PORT="$(node "$here/lib/serve-host.mjs" free-port)" PADDOCK_HOST_SUBNET=unused \
		node "$here/lib/host.mjs" cleanup >&2 || rc=1
	node "$here/lib/serve-host.mjs" check-host "$host_work/data" "$host_bridge" >&2 || rc=1
	node "$here/lib/serve-host.mjs" teardown-network "$host_bridge" >&2 || rc=1
	if grep -qF " $host_work/" /proc/self/mountinfo; then
		log "error: mounts remain under $host_work; leaving it in place"
		rc=1
	else
		rm -rf "$host_work"
	fi
	host_work=
	return "$rc"
}

# ---- main ----------------------------------------------------------------

all_suites=(envd codeinterp ingress serve quickstart pool templates pause host)
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
	serve) suite_serve || status=1 ;;
	quickstart) suite_quickstart || status=1 ;;
	pool) suite_pool || status=1 ;;
	pause) suite_pause || status=1 ;;
	templates) suite_templates || status=1 ;;
	host) suite_host || status=1 ;;
	codeinterp) suite_codeinterp || status=1 ;;
	bench) bench_envd || status=1 ;;
	bench-serve) bench_serve || status=1 ;;
	*) die "unknown suite '$s' (known: ${all_suites[*]} bench bench-serve)" ;;
	esac
done
exit "$status"
