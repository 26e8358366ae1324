// Package nameserver owns Paddock's built-in DNS responder: an
// authoritative server for one sandbox domain D that answers every name in
// it (D, api.D, <port>-<sandboxID>.D, ...) with Paddock's own addresses and
// refuses every name outside it, over UDP and TCP. It lets a host or a
// network namespace resolve the names the E2B SDKs build from E2B_DOMAIN
// without touching any other DNS.
package nameserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of answers when Config.TTL is zero.
const DefaultTTL = 60 * time.Second

// Config configures a Server.
type Config struct {
	// Addr is the UDP and TCP address to listen on, e.g. 127.0.0.1:53.
	Addr string
	// Domain is the zone served (no port, no trailing dot).
	Domain string
	// Addrs answer A (IPv4) and AAAA (IPv6) queries. At least one.
	Addrs []netip.Addr
	// TTL of answers (and of negative answers); DefaultTTL when zero.
	TTL    time.Duration
	Logger *slog.Logger
}

// Server is a running DNS responder. Create it with New (which binds the
// sockets), run it with Serve, stop it with Close.
type Server struct {
	zone   string // lower-case FQDN with the trailing dot
	a      []net.IP
	aaaa   []net.IP
	ttl    uint32
	serial uint32
	log    *slog.Logger

	pc  net.PacketConn
	ln  net.Listener
	udp *dns.Server
	tcp *dns.Server

	mu     sync.Mutex
	closed bool
}

// New validates cfg and binds the UDP and TCP sockets, so an address in
// use is reported here rather than later.
func New(cfg Config) (*Server, error) {
	zone := strings.TrimSuffix(strings.ToLower(cfg.Domain), ".")
	if zone == "" {
		return nil, errors.New("dns: a domain is required")
	}
	if _, ok := dns.IsDomainName(zone); !ok {
		return nil, fmt.Errorf("dns: %q is not a domain name", cfg.Domain)
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("dns: no address to answer with")
	}
	s := &Server{
		zone:   dns.Fqdn(zone),
		ttl:    uint32(DefaultTTL / time.Second),
		serial: uint32(time.Now().Unix()),
		log:    cfg.Logger,
	}
	if cfg.TTL > 0 {
		s.ttl = uint32(cfg.TTL / time.Second)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	for _, a := range cfg.Addrs {
		a = a.Unmap()
		switch {
		case !a.IsValid() || a.IsUnspecified():
			return nil, fmt.Errorf("dns: %s cannot be an answer", a)
		case a.Is4():
			s.a = append(s.a, net.IP(a.AsSlice()))
		default:
			s.aaaa = append(s.aaaa, net.IP(a.AsSlice()))
		}
	}
	pc, err := net.ListenPacket("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("dns: listen on udp %s: %w", cfg.Addr, err)
	}
	// TCP on the very port UDP got (matters when cfg.Addr has port 0).
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns: listen on tcp %s: %w", cfg.Addr, err)
	}
	s.pc, s.ln = pc, ln
	h := dns.HandlerFunc(s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	return s, nil
}

// Addr is the address the server listens on (UDP and TCP).
func (s *Server) Addr() string { return s.pc.LocalAddr().String() }

// Serve answers queries until Close. It returns nil after Close, or the
// error that stopped either socket (and then stops the other).
func (s *Server) Serve() error {
	errc := make(chan error, 2)
	go func() { errc <- s.udp.ActivateAndServe() }()
	go func() { errc <- s.tcp.ActivateAndServe() }()
	first := <-errc
	stopped := s.isClosed() // Close was called: whatever the sockets said is moot
	if !stopped {
		s.Close()
	}
	<-errc
	if stopped || first == nil {
		return nil
	}
	return fmt.Errorf("dns server on %s: %w", s.Addr(), first)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the server and releases its sockets. It is safe to call more
// than once and before Serve.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	// Shutdown fails harmlessly when Serve has not started a socket yet;
	// closing the sockets then makes a late start return at once.
	_ = s.udp.Shutdown()
	_ = s.tcp.Shutdown()
	s.pc.Close()
	s.ln.Close()
	return nil
}

// inZone reports whether the lower-case FQDN name is the zone or under it.
func (s *Server) inZone(name string) bool {
	return name == s.zone || strings.HasSuffix(name, "."+s.zone)
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false
	q := req.Question[0] // the accept function let through exactly one
	name := strings.ToLower(q.Name)
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY, !s.inZone(name):
		m.Rcode = dns.RcodeRefused
	default:
		m.Authoritative = true
		m.Answer = s.answer(q.Name, name, q.Qtype)
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{s.soa()} // NODATA, cacheable for the SOA minimum
		}
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		if opt.Version() != 0 {
			m.Answer, m.Ns = nil, nil
			m.Rcode = dns.RcodeBadVers
		}
		m.SetEdns0(1232, false)
		if int(opt.UDPSize()) > size {
			size = min(int(opt.UDPSize()), 1232)
		}
	}
	if w.LocalAddr().Network() == "udp" {
		m.Truncate(size)
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns: write answer", "remote", w.RemoteAddr().String(), "err", err)
	}
}

// answer returns the records for an in-zone question; qname keeps the
// asker's spelling (0x20 case randomisation), lname is its lower case.
func (s *Server) answer(qname, lname string, qtype uint16) []dns.RR {
	var out []dns.RR
	addA := func() {
		for _, ip := range s.a {
			out = append(out, &dns.A{Hdr: s.hdr(qname, dns.TypeA), A: ip})
		}
	}
	addAAAA := func() {
		for _, ip := range s.aaaa {
			out = append(out, &dns.AAAA{Hdr: s.hdr(qname, dns.TypeAAAA), AAAA: ip})
		}
	}
	switch qtype {
	case dns.TypeA:
		addA()
	case dns.TypeAAAA:
		addAAAA()
	case dns.TypeANY:
		addA()
		addAAAA()
	case dns.TypeSOA:
		if lname == s.zone {
			out = append(out, s.soa())
		}
	case dns.TypeNS:
		if lname == s.zone {
			out = append(out, &dns.NS{Hdr: s.hdr(s.zone, dns.TypeNS), Ns: "ns." + s.zone})
		}
	}
	return out
}

func (s *Server) hdr(name string, typ uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: typ, Class: dns.ClassINET, Ttl: s.ttl}
}

func (s *Server) soa() dns.RR {
	return &dns.SOA{
		Hdr: s.hdr(s.zone, dns.TypeSOA),
		Ns:  "ns." + s.zone, Mbox: "hostmaster." + s.zone,
		Serial: s.serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: s.ttl,
	}
}
