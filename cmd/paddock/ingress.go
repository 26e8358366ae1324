package main

// The HTTPS listener and DNS responder of `paddock serve --domain D`: what
// lets an SDK configured with nothing but E2B_DOMAIN reach the API at
// https://api.D and every sandbox port at https://<port>-<id>.D.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paddockhq/paddock/internal/nameserver"
	"github.com/paddockhq/paddock/internal/tlsca"
)

// ingressFlags are serve's TLS and DNS flags.
type ingressFlags struct {
	tlsListen string
	tlsCert   string
	tlsKey    string
	dns       string
	publicIP  string
}

const tlsOff = "off"

func (f *ingressFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tlsListen, "tls-listen", "", "HTTPS address for api.<domain>, <domain> and *.<domain> (HTTP/2 and HTTP/1.1) when --domain is set; default: the host of --listen, port 443; \"off\" for plain HTTP only")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "certificate chain (PEM) for <domain>, api.<domain> and *.<domain>; default: one from a local CA kept in <data-dir>/tls/<domain>/ (reloaded when the file changes)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert")
	fs.StringVar(&f.dns, "dns", "", "serve DNS for <domain> and *.<domain> on this address (UDP and TCP), e.g. 127.0.0.1:53; refuses other names; off when empty")
	fs.StringVar(&f.publicIP, "public-ip", "", "address(es), comma-separated, the --dns responder answers with; default: the host of --tls-listen, else of --dns, when it is a specific address")
}

// ingress is the TLS side of serve: certificates, the HTTPS listener and
// the DNS responder. A zero domain makes every method a no-op.
type ingress struct {
	domain    string // bare sandbox domain
	sdkDomain string // E2B_DOMAIN for SDKs: the domain, with :port when HTTPS is not on 443
	log       *slog.Logger
	certs     *tlsca.Manager
	tlsL      net.Listener
	srv       *http.Server
	dns       *nameserver.Server
	answers   []netip.Addr
}

// newIngress checks the flags, prepares certificates and binds the HTTPS
// and DNS sockets, so mistakes and busy ports show before anything starts.
// Call close when done (it is safe after serve).
func newIngress(f ingressFlags, domain, listen, dataDir string, log *slog.Logger) (*ingress, error) {
	in := &ingress{domain: strings.TrimSuffix(strings.ToLower(domain), "."), log: log}
	in.sdkDomain = in.domain
	if in.domain == "" {
		if f.tlsListen != "" || f.tlsCert != "" || f.tlsKey != "" || f.dns != "" || f.publicIP != "" {
			return nil, errors.New("--tls-listen, --tls-cert, --tls-key, --dns and --public-ip need --domain")
		}
		return in, nil
	}
	if strings.Contains(in.domain, ":") || strings.Contains(in.domain, "/") {
		return nil, fmt.Errorf("--domain %q: give a bare DNS name (the HTTPS port comes from --tls-listen)", domain)
	}
	ok := false
	defer func() {
		if !ok {
			in.close()
		}
	}()
	tlsOn := f.tlsListen != tlsOff
	if !tlsOn && (f.tlsCert != "" || f.tlsKey != "") {
		return nil, errors.New("--tls-cert and --tls-key need HTTPS: drop --tls-listen off")
	}
	if tlsOn {
		addr := f.tlsListen
		if addr == "" {
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return nil, fmt.Errorf("--listen %q: %w", listen, err)
			}
			addr = net.JoinHostPort(host, "443")
		}
		certs, err := tlsca.New(tlsca.Config{
			Domain: in.domain, Dir: filepath.Join(dataDir, "tls", in.domain),
			CertFile: f.tlsCert, KeyFile: f.tlsKey, Logger: log.With("component", "tls"),
		})
		if err != nil {
			return nil, fmt.Errorf("TLS for %s: %w", in.domain, err)
		}
		in.certs = certs
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s (--tls-listen): %w", addr, err)
		}
		in.tlsL = l
		if _, port, _ := net.SplitHostPort(l.Addr().String()); port != "443" {
			in.sdkDomain = in.domain + ":" + port
		}
	}
	if f.dns != "" {
		answers, err := in.dnsAnswers(f)
		if err != nil {
			return nil, err
		}
		in.answers = answers
		d, err := nameserver.New(nameserver.Config{
			Addr: f.dns, Domain: in.domain, Addrs: answers, Logger: log.With("component", "dns"),
		})
		if err != nil {
			return nil, fmt.Errorf("--dns: %w", err)
		}
		in.dns = d
	}
	ok = true
	return in, nil
}

// dnsAnswers picks the addresses the DNS responder hands out.
func (in *ingress) dnsAnswers(f ingressFlags) ([]netip.Addr, error) {
	if f.publicIP != "" {
		var out []netip.Addr
		for _, s := range strings.Split(f.publicIP, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil || a.IsUnspecified() {
				return nil, fmt.Errorf("--public-ip %q: want IP addresses, comma-separated", f.publicIP)
			}
			out = append(out, a)
		}
		return out, nil
	}
	var candidates []string
	if in.tlsL != nil {
		candidates = append(candidates, in.tlsL.Addr().String())
	}
	candidates = append(candidates, f.dns)
	for _, c := range candidates {
		host, _, err := net.SplitHostPort(c)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			return []netip.Addr{a.Unmap()}, nil
		}
	}
	return nil, errors.New("--dns: cannot tell which address to answer with (HTTPS and DNS listen on all addresses): give --public-ip")
}

// serve starts the HTTPS server and the DNS responder; their errors go to
// errc (nil after a clean stop), and wg tracks them.
func (in *ingress) serve(handler http.Handler, wg *sync.WaitGroup, errc chan<- error) {
	if in.tlsL != nil {
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
		in.srv = &http.Server{
			Handler: handler, Protocols: &protocols, TLSConfig: in.certs.TLSConfig(),
			ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 640 * time.Second, MaxHeaderBytes: 1 << 20,
			ErrorLog: slog.NewLogLogger(in.log.Handler(), slog.LevelDebug),
		}
		wg.Add(1)
		go func() { defer wg.Done(); errc <- ignoreClosed(in.srv.ServeTLS(in.tlsL, "", "")) }()
		in.log.Info("paddock serving HTTPS", "addr", in.tlsL.Addr().String(), "domain", in.domain)
	}
	if in.dns != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- in.dns.Serve() }()
		in.log.Info("paddock serving DNS", "addr", in.dns.Addr(), "domain", in.domain, "answers", in.answers)
	}
}

// shutdown stops what serve started (in-flight HTTPS requests get until
// ctx ends).
func (in *ingress) shutdown(ctx context.Context) {
	if in.srv != nil {
		_ = in.srv.Shutdown(ctx)
	}
	in.close()
}

// close releases the sockets.
func (in *ingress) close() {
	if in.tlsL != nil {
		in.tlsL.Close()
	}
	if in.dns != nil {
		in.dns.Close()
	}
}

// httpsOn reports whether the HTTPS listener is configured.
func (in *ingress) httpsOn() bool { return in.tlsL != nil }

// printBanner tells how to use the domain: E2B_DOMAIN, the CA to trust,
// and the DNS responder.
func (in *ingress) printBanner(w io.Writer) {
	if in.tlsL == nil {
		return
	}
	fmt.Fprintf(w, "Or with only the domain (HTTPS on %s: https://api.%s, sandbox ports at https://<port>-<sandboxID>.%s):\n\n",
		in.tlsL.Addr().String(), in.sdkDomain, in.sdkDomain)
	fmt.Fprintf(w, "  export E2B_DOMAIN=%s\n", in.sdkDomain)
	if ca := in.certs.CAPath(); ca != "" {
		fmt.Fprintf(w, "  export NODE_EXTRA_CA_CERTS=%s   # Node; Python: SSL_CERT_FILE=%s (replaces the default bundle)\n", ca, ca)
		fmt.Fprintf(w, "  # or trust it machine-wide: cp %s /usr/local/share/ca-certificates/paddock-%s.crt && update-ca-certificates\n", ca, in.domain)
		fmt.Fprintf(w, "  # CA sha256 fingerprint %s (valid for %s and its subdomains only)\n", in.certs.CAFingerprint(), in.domain)
	}
	if in.dns != nil {
		ans := make([]string, len(in.answers))
		for i, a := range in.answers {
			ans[i] = a.String()
		}
		host, port, _ := net.SplitHostPort(in.dns.Addr())
		fmt.Fprintf(w, "\nDNS on %s (UDP, TCP) answers %s and *.%s with %s and refuses other names. Send %s there, e.g.\n",
			in.dns.Addr(), in.domain, in.domain, strings.Join(ans, ", "), in.domain)
		fmt.Fprintf(w, "  systemd-resolved: resolvectl dns <link> %s && resolvectl domain <link> '~%s'\n", resolverAddr(host, port), in.domain)
		fmt.Fprintf(w, "  network namespace: echo 'nameserver %s' > /etc/netns/<ns>/resolv.conf (used by ip netns exec)\n", host)
	} else {
		fmt.Fprintf(w, "  # %s and *.%s must resolve to this host (wildcard DNS record, or paddock serve --dns)\n", in.domain, in.domain)
	}
	fmt.Fprintln(w)
}

// resolverAddr writes host:port as resolvectl takes it (port only when not 53).
func resolverAddr(host, port string) string {
	if port == "53" {
		return host
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	if _, err := strconv.Atoi(port); err != nil {
		return host
	}
	return host + ":" + port
}
