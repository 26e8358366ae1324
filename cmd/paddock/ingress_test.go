package main

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIngressFlags(t *testing.T) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	dir := t.TempDir()
	bad := []struct {
		name   string
		f      ingressFlags
		domain string
		want   string
	}{
		{"dns without domain", ingressFlags{dns: "127.0.0.1:0"}, "", "need --domain"},
		{"tls without domain", ingressFlags{tlsListen: "127.0.0.1:0"}, "", "need --domain"},
		{"domain with port", ingressFlags{}, "paddock.test:8443", "bare DNS name"},
		{"cert with tls off", ingressFlags{tlsListen: "off", tlsCert: "a", tlsKey: "b"}, "paddock.test", "need HTTPS"},
		{"half a pair", ingressFlags{tlsListen: "127.0.0.1:0", tlsCert: "a"}, "paddock.test", "give both"},
		{"bad public ip", ingressFlags{tlsListen: "off", dns: "127.0.0.1:0", publicIP: "nope"}, "paddock.test", "--public-ip"},
		{"no answer address", ingressFlags{tlsListen: "off", dns: ":0"}, "paddock.test", "--public-ip"},
	}
	for _, c := range bad {
		in, err := newIngress(c.f, c.domain, "127.0.0.1:3000", dir, log)
		if err == nil {
			in.close()
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}

	// No domain: nothing to do.
	in, err := newIngress(ingressFlags{}, "", "127.0.0.1:3000", dir, log)
	if err != nil || in.httpsOn() || in.sdkDomain != "" {
		t.Fatalf("no domain: %v %v %q", err, in.httpsOn(), in.sdkDomain)
	}

	// HTTPS on a port other than 443: SDKs get the port in the domain. DNS
	// answers with the HTTPS host.
	in, err = newIngress(ingressFlags{tlsListen: "127.0.0.1:0", dns: "127.0.0.1:0"}, "Paddock.Test", "127.0.0.1:3000", dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	_, port, _ := net.SplitHostPort(in.tlsL.Addr().String())
	if in.sdkDomain != "paddock.test:"+port {
		t.Errorf("sdkDomain %q, want paddock.test:%s", in.sdkDomain, port)
	}
	if len(in.answers) != 1 || in.answers[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("answers %v", in.answers)
	}
	for _, name := range []string{"ca.crt", "ca.key", "server.crt", "server.key"} {
		if _, err := os.Stat(filepath.Join(dir, "tls", "paddock.test", name)); err != nil {
			t.Error(err)
		}
	}
	var b bytes.Buffer
	in.printBanner(&b)
	for _, want := range []string{
		"export E2B_DOMAIN=paddock.test:" + port + "\n",
		"export NODE_EXTRA_CA_CERTS=" + filepath.Join(dir, "tls", "paddock.test", "ca.crt") + " ",
		"answers paddock.test and *.paddock.test with 127.0.0.1",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}

	// --public-ip wins; plain HTTP only keeps the bare domain.
	in2, err := newIngress(ingressFlags{tlsListen: "off", dns: "127.0.0.1:0", publicIP: "192.0.2.7, 2001:db8::7"}, "paddock.test", "127.0.0.1:3000", dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer in2.close()
	if in2.httpsOn() || in2.sdkDomain != "paddock.test" || len(in2.answers) != 2 || in2.answers[1] != netip.MustParseAddr("2001:db8::7") {
		t.Errorf("tls off: https %v, sdkDomain %q, answers %v", in2.httpsOn(), in2.sdkDomain, in2.answers)
	}
}

func TestIngressUserCertificate(t *testing.T) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	// An operator's pair for the domain (made here by a throwaway local CA).
	issuer, err := newIngress(ingressFlags{tlsListen: "127.0.0.1:0"}, "paddock.test", "127.0.0.1:3000", t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	issuerDir := filepath.Dir(issuer.certs.CAPath())
	issuer.close()

	dir := t.TempDir()
	in, err := newIngress(ingressFlags{
		tlsListen: "127.0.0.1:0",
		tlsCert:   filepath.Join(issuerDir, "server.crt"), tlsKey: filepath.Join(issuerDir, "server.key"),
	}, "paddock.test", "127.0.0.1:3000", dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	if !in.httpsOn() || in.certs.CAPath() != "" {
		t.Fatalf("https %v, CA %q", in.httpsOn(), in.certs.CAPath())
	}
	if _, err := os.Stat(filepath.Join(dir, "tls")); !os.IsNotExist(err) {
		t.Errorf("a local CA was made although a certificate was given: %v", err)
	}
	var b bytes.Buffer
	in.printBanner(&b)
	if strings.Contains(b.String(), "NODE_EXTRA_CA_CERTS") || !strings.Contains(b.String(), "export E2B_DOMAIN=paddock.test:") {
		t.Errorf("banner with a given certificate:\n%s", b.String())
	}
	// A missing file is a clear start-up error.
	if _, err := newIngress(ingressFlags{tlsListen: "127.0.0.1:0", tlsCert: "/nonexistent.crt", tlsKey: "/nonexistent.key"},
		"paddock.test", "127.0.0.1:3000", dir, log); err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("missing certificate file: %v", err)
	}
}
