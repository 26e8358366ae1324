package nameserver

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var (
	v4 = netip.MustParseAddr("192.0.2.10")
	v6 = netip.MustParseAddr("2001:db8::1")
)

func start(t *testing.T, addrs ...netip.Addr) *Server {
	t.Helper()
	s, err := New(Config{Addr: "127.0.0.1:0", Domain: "Paddock.Test", Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return s
}

func query(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	if r.Id != m.Id || !r.Response {
		t.Fatalf("reply id %d response %v", r.Id, r.Response)
	}
	return r
}

func addrsOf(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	return out
}

func TestAnswersInZone(t *testing.T) {
	s := start(t, v4, v6)
	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"paddock.test.", "api.paddock.test.", "49983-iabc0123456789abcdefg.paddock.test.", "a.b.paddock.test.", "API.PADDOCK.test."} {
			r := query(t, s, network, name, dns.TypeA)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
				t.Fatalf("%s A %s: rcode %s aa %v", network, name, dns.RcodeToString[r.Rcode], r.Authoritative)
			}
			if got := strings.Join(addrsOf(r), ","); got != v4.String() {
				t.Fatalf("%s A %s = %q, want %s", network, name, got, v4)
			}
			if r.Answer[0].Header().Name != name {
				t.Errorf("answer owner %q, want the question's spelling %q", r.Answer[0].Header().Name, name)
			}
			if r.Answer[0].Header().Ttl != uint32(DefaultTTL/time.Second) {
				t.Errorf("TTL %d", r.Answer[0].Header().Ttl)
			}
			r = query(t, s, network, name, dns.TypeAAAA)
			if got := strings.Join(addrsOf(r), ","); r.Rcode != dns.RcodeSuccess || got != v6.String() {
				t.Fatalf("%s AAAA %s = %q (%s), want %s", network, name, got, dns.RcodeToString[r.Rcode], v6)
			}
		}
	}
}

func TestNoDataCarriesSOA(t *testing.T) {
	s := start(t, v4) // no IPv6 address
	for _, network := range []string{"udp", "tcp"} {
		for _, qt := range []uint16{dns.TypeAAAA, dns.TypeMX, dns.TypeTXT} {
			r := query(t, s, network, "api.paddock.test.", qt)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
				t.Fatalf("%s %s: rcode %s, %d answers, %d authority", network, dns.TypeToString[qt], dns.RcodeToString[r.Rcode], len(r.Answer), len(r.Ns))
			}
			if soa, ok := r.Ns[0].(*dns.SOA); !ok || soa.Hdr.Name != "paddock.test." {
				t.Fatalf("authority %v", r.Ns[0])
			}
		}
	}
	r := query(t, s, "udp", "paddock.test.", dns.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("SOA at the apex: %v", r.Answer)
	}
	r = query(t, s, "udp", "paddock.test.", dns.TypeNS)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ns.paddock.test." {
		t.Fatalf("NS at the apex: %v", r.Answer)
	}
}

func TestRefusesOutsideZone(t *testing.T) {
	s := start(t, v4)
	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"example.com.", "test.", "xpaddock.test.", "paddock.test.evil.", "."} {
			for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeNS} {
				r := query(t, s, network, name, qt)
				if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 || r.Authoritative {
					t.Fatalf("%s %s %s: rcode %s, %d answers, aa %v; want REFUSED", network, name, dns.TypeToString[qt], dns.RcodeToString[r.Rcode], len(r.Answer), r.Authoritative)
				}
			}
		}
	}
	// Another class is refused too.
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("api.paddock.test.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("CHAOS class: %v %v", r, err)
	}
}

func TestEDNSAndMalformed(t *testing.T) {
	s := start(t, v4)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("api.paddock.test.", dns.TypeA)
	m.SetEdns0(4096, false)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if r.IsEdns0() == nil || len(r.Answer) != 1 {
		t.Fatalf("EDNS query: opt %v, answers %d", r.IsEdns0(), len(r.Answer))
	}
	// Unknown EDNS version: BADVERS.
	m.IsEdns0().SetVersion(1)
	r, _, err = c.Exchange(m, s.Addr())
	if err != nil || r.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: %v rcode %v", err, r)
	}
	// Two questions: FORMERR.
	m = new(dns.Msg)
	m.SetQuestion("api.paddock.test.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	r, _, err = c.Exchange(m, s.Addr())
	if err != nil || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("two questions: %v %v", err, r)
	}
	// Garbage does not stop the server.
	conn, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	conn.Write([]byte("x"))
	conn.Close()
	if r := query(t, s, "udp", "api.paddock.test.", dns.TypeA); len(r.Answer) != 1 {
		t.Fatal("no answer after malformed packets")
	}
}

func TestBadConfigAndAddressInUse(t *testing.T) {
	for _, cfg := range []Config{
		{Addr: "127.0.0.1:0", Domain: "", Addrs: []netip.Addr{v4}},
		{Addr: "127.0.0.1:0", Domain: "paddock.test"},
		{Addr: "127.0.0.1:0", Domain: "paddock.test", Addrs: []netip.Addr{netip.IPv4Unspecified()}},
		{Addr: "not an address", Domain: "paddock.test", Addrs: []netip.Addr{v4}},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("config %+v accepted", cfg)
		}
	}
	s := start(t, v4)
	if s2, err := New(Config{Addr: s.Addr(), Domain: "paddock.test", Addrs: []netip.Addr{v4}}); err == nil {
		s2.Close()
		t.Fatal("a second server bound the same address")
	}
}

func TestCloseBeforeServe(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Domain: "paddock.test", Addrs: []netip.Addr{v4}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve after Close did not return")
	}
}
