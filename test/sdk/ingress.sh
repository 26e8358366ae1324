#!/usr/bin/env bash
# The ingress suite (test/sdk/run.sh ingress): `paddock serve --domain D`
# with its HTTPS listener, local CA and DNS responder, and the official SDK
# run in a network namespace whose only resolver is that DNS, with nothing
# but E2B_DOMAIN, E2B_API_KEY and NODE_EXTRA_CA_CERTS set:
#
#   1. ingress.test.mjs (envd suites over https://49983-<id>.D, then the
#      ingress checks), 2. restart of the server on the same data dir,
#   3. ingress-restart.test.mjs (same CA and certificate, old sandbox
#      reachable, new ones work).
#
# The namespace is joined to the host by a veth pair; the server listens on
# the host end (HTTPS :443, DNS :53, plain HTTP :3000), so nothing of the
# host's own ports or DNS is touched. Everything made here (namespace, veth,
# bridge, nftables table, sandboxes, data dir) is removed on exit.
#
# Environment: PADDOCK_BIN (default bin/paddock), SDK_TEST_PATTERN,
# PADDOCK_INGRESS_DOMAIN (default paddock.test). Logs: test/sdk/.out/ingress/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${PADDOCK_BIN:-$root/bin/paddock}
out=$here/.out/ingress
domain=${PADDOCK_INGRESS_DOMAIN:-paddock.test}
run_id=${PADDOCK_SDK_RUN_ID:-$$}
tag=$$
ns=pdking$tag
veth_host=pdki${tag}h
veth_ns=pdki${tag}n
bridge=pdkib$tag
data=$out/data
tls_dir=$data/tls/$domain
plain_port=3000
serve_pid=
host_ip=
ns_ip=
subnet=

log() { printf '[ingress.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

[[ $(id -u) == 0 ]] || die "the ingress suite needs root (network namespace, port 443 and 53, sandboxes)"
[[ -x $bin ]] || die "$bin not found: run 'make build' first"
command -v ip >/dev/null || die "iproute2 (ip) is missing"
command -v nft >/dev/null || die "nft is missing"
command -v curl >/dev/null || die "curl is missing"

# used_ipv4 prints every IPv4 address and route prefix of the host.
used_ipv4() {
	{ ip -4 -o addr show; ip -4 -o route show table all; } | grep -oE '\b[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+' || true
}

# pick_nets chooses a /30 for the veth pair (10.251.N.0) and a /24 for the
# sandboxes (10.250.M.0) that no address or route of this host uses yet.
pick_nets() {
	local used i n
	used=$(used_ipv4)
	for ((i = 0; i < 256; i++)); do
		n=$(((tag + i) % 256))
		if ! grep -q "^10\.251\.$n\." <<<"$used"; then
			host_ip=10.251.$n.1 ns_ip=10.251.$n.2
			break
		fi
	done
	for ((i = 0; i < 256; i++)); do
		n=$(((tag * 7 + i) % 256))
		if ! grep -q "^10\.250\.$n\." <<<"$used"; then
			subnet=10.250.$n.0/24
			break
		fi
	done
	[[ -n $host_ip && -n $subnet ]] || die "no free 10.251.x.0/30 or 10.250.x.0/24 on this host"
}

make_namespace() {
	ip netns add "$ns"
	ip link add "$veth_host" type veth peer name "$veth_ns" netns "$ns"
	ip addr add "$host_ip/30" dev "$veth_host"
	ip link set "$veth_host" up
	ip -n "$ns" addr add "$ns_ip/30" dev "$veth_ns"
	ip -n "$ns" link set "$veth_ns" up
	ip -n "$ns" link set lo up
	# `ip netns exec` bind-mounts this over /etc/resolv.conf: Paddock's DNS is
	# the namespace's only resolver.
	mkdir -p "/etc/netns/$ns"
	printf 'nameserver %s\n' "$host_ip" >"/etc/netns/$ns/resolv.conf"
	log "namespace $ns: $ns_ip, server on $host_ip (veth $veth_host), sandboxes in $subnet (bridge $bridge)"
}

start_serve() {
	"$bin" serve --data-dir "$data" --listen "$host_ip:$plain_port" \
		--domain "$domain" --tls-listen "$host_ip:443" --dns "$host_ip:53" \
		--bridge "$bridge" --subnet "$subnet" >"$out/serve.out" 2>>"$out/serve.log" &
	serve_pid=$!
	local i
	for ((i = 0; i < 6000; i++)); do
		if ! kill -0 "$serve_pid" 2>/dev/null; then
			serve_pid=
			tail -n 30 "$out/serve.log" >&2 || true
			die "paddock serve exited during startup (log: $out/serve.log)"
		fi
		if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$host_ip:$plain_port/health" 2>/dev/null) == 200 ]]; then
			log "paddock serve up (pid $serve_pid): http://$host_ip:$plain_port, https on $host_ip:443, dns on $host_ip:53"
			return
		fi
		sleep 0.1
	done
	die "paddock serve did not become healthy within 600 s (log: $out/serve.log)"
}

stop_serve() {
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

# kill_sandboxes deletes every sandbox the server lists (the tests kill
# theirs; this catches what a failed test left).
kill_sandboxes() {
	[[ -n $serve_pid && -f $data/initial-api-key ]] || return 0
	local key id ids pass
	key=$(<"$data/initial-api-key")
	for ((pass = 0; pass < 5; pass++)); do
		ids=$(curl -s -H "X-API-KEY: $key" "http://$host_ip:$plain_port/v2/sandboxes?limit=100" |
			grep -oE '"sandboxID":"[a-z0-9]+"' | cut -d'"' -f4 || true)
		[[ -n $ids ]] || return 0
		for id in $ids; do
			curl -s -o /dev/null -X DELETE -H "X-API-KEY: $key" "http://$host_ip:$plain_port/sandboxes/$id" || true
		done
	done
	log "warning: sandboxes still listed after cleanup: $ids"
}

cleanup() {
	local rc=$?
	kill_sandboxes
	stop_serve
	ip link del "$bridge" 2>/dev/null || true
	nft delete table inet "paddock_$bridge" 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	ip link del "$veth_host" 2>/dev/null || true
	rm -rf "/etc/netns/$ns"
	if grep -qF " $data/" /proc/self/mountinfo; then
		log "warning: mounts remain under $data; leaving it in place"
	else
		rm -rf "$data"
	fi
	exit "$rc"
}

# run_phase <label> <file> <ca file>: the node test runner inside the
# namespace, with a clean environment: only the domain, the key and the CA
# for the SDK, plus what the test file needs to know about the host.
run_phase() {
	local label=$1 file=$2 ca=$3 rc=0
	local summary=$out/${label// /-}.summary
	local args=(--test --test-concurrency=1
		--test-reporter=spec --test-reporter-destination=stdout
		--test-reporter="$here/lib/summary-reporter.mjs" --test-reporter-destination="$summary")
	node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' || args=(--experimental-websocket "${args[@]}")
	[[ -n ${SDK_TEST_PATTERN:-} ]] && args+=(--test-name-pattern="$SDK_TEST_PATTERN")
	(cd "$here" && ip netns exec "$ns" env -i \
		PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 \
		E2B_DOMAIN="$domain" E2B_API_KEY="$(<"$data/initial-api-key")" NODE_EXTRA_CA_CERTS="$ca" \
		PADDOCK_SDK_SUITE="$label" PADDOCK_SDK_RUN_ID="$run_id" PADDOCK_SDK_IDS_FILE="$out/ids" \
		PADDOCK_INGRESS_ADDR="$host_ip" PADDOCK_INGRESS_TLS_DIR="$tls_dir" \
		PADDOCK_INGRESS_PLAIN_URL="http://$host_ip:$plain_port" \
		PADDOCK_INGRESS_KEEP_FILE="$out/kept.json" PADDOCK_INGRESS_SAVED_DIR="$out/saved" \
		node "${args[@]}" "$file") || rc=$?
	echo
	cat "$summary" 2>/dev/null || echo "$label: no summary (the runner failed before reporting; status $rc)"
	return "$rc"
}

# ---- main ----------------------------------------------------------------

rm -rf "$out"
mkdir -p "$out/saved"
pick_nets
trap cleanup EXIT
trap 'exit 130' INT TERM
make_namespace
start_serve

# The banner gives the one export the SDK needs and the CA to trust.
grep -qxF "  export E2B_DOMAIN=$domain" "$out/serve.out" || die "the banner lacks 'export E2B_DOMAIN=$domain' (see $out/serve.out)"
ca=$(sed -n 's/^  export NODE_EXTRA_CA_CERTS=\([^ ]*\).*/\1/p' "$out/serve.out")
[[ $ca == "$tls_dir/ca.crt" ]] || die "the banner's NODE_EXTRA_CA_CERTS is '$ca', want $tls_dir/ca.crt"

status=0
run_phase "ingress" ingress.test.mjs "$ca" || status=1

[[ -f $out/kept.json ]] || die "phase 1 did not record a sandbox for the restart phase"
cp "$tls_dir/ca.crt" "$tls_dir/server.crt" "$out/saved/"
log "restarting paddock serve on the same data dir"
stop_serve
start_serve
run_phase "ingress restart" ingress-restart.test.mjs "$out/saved/ca.crt" || status=1
exit "$status"
