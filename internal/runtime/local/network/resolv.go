package network

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
)

// FallbackNameservers replace host nameservers a sandbox cannot reach.
var FallbackNameservers = []string{"1.1.1.1", "8.8.8.8"}

// sandboxResolvConf turns the host's resolv.conf into the sandboxes' one:
// nameserver lines a sandbox can use (IPv4, not loopback, not link-local,
// which the egress rules block) are kept, as are search, domain and options
// lines. Without any usable nameserver, FallbackNameservers are used.
func sandboxResolvConf(host []byte) []byte {
	var servers, other []string
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			a, err := netip.ParseAddr(fields[1])
			if err != nil || !a.Is4() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
				continue
			}
			servers = append(servers, "nameserver "+a.String())
		case "search", "domain", "options":
			other = append(other, strings.Join(fields, " "))
		}
	}
	if len(servers) == 0 {
		for _, s := range FallbackNameservers {
			servers = append(servers, "nameserver "+s)
		}
	}
	var b bytes.Buffer
	for _, l := range append(servers, other...) {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
