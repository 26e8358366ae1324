package tlsca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const domain = "paddock.test"

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)} }

func newManager(t *testing.T, dir string, c *clock) *Manager {
	t.Helper()
	m, err := New(Config{Domain: domain, Dir: dir, Now: c.now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func pool(t *testing.T, m *Manager) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(m.CAPath())
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(data) {
		t.Fatal("CA file holds no certificate")
	}
	return p
}

func leaf(t *testing.T, m *Manager) *x509.Certificate {
	t.Helper()
	c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "api." + domain})
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf == nil {
		t.Fatal("certificate has no parsed leaf")
	}
	return c.Leaf
}

func TestCreatesFilesWithModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	m := newManager(t, dir, newClock())
	if got, want := m.CAPath(), filepath.Join(dir, CAFile); got != want {
		t.Fatalf("CAPath = %q, want %q", got, want)
	}
	for name, want := range map[string]os.FileMode{CAFile: 0o644, CAKeyFile: 0o600, CertFile: 0o644, KeyFile: 0o600} {
		if got := mode(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s mode %o, want %o", name, got, want)
		}
	}
	if got := mode(t, dir); got != 0o755 {
		t.Errorf("dir mode %o, want 755", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("dir holds %d entries, want 4 (no temporary files left)", len(entries))
	}
	if len(m.CAFingerprint()) != 64 {
		t.Errorf("fingerprint %q", m.CAFingerprint())
	}
}

func TestCertificateNamesAndChain(t *testing.T) {
	c := newClock()
	m := newManager(t, t.TempDir(), c)
	l := leaf(t, m)
	want := []string{domain, "api." + domain, "*." + domain}
	if strings.Join(l.DNSNames, ",") != strings.Join(want, ",") {
		t.Fatalf("SANs %v, want %v", l.DNSNames, want)
	}
	pub, ok := l.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("leaf key %T, want ECDSA P-256", l.PublicKey)
	}
	opts := x509.VerifyOptions{Roots: pool(t, m), CurrentTime: c.now()}
	for _, host := range []string{domain, "api." + domain, "49983-iabc123." + domain, "8000-i0123456789abcdefghij." + domain} {
		opts.DNSName = host
		if _, err := l.Verify(opts); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	for _, host := range []string{"example.com", "a.b." + domain, "evil" + domain} {
		opts.DNSName = host
		if _, err := l.Verify(opts); err == nil {
			t.Errorf("certificate verified for %s", host)
		}
	}
	if l.NotAfter.Sub(c.now()) > CertValidity || l.NotAfter.Sub(c.now()) < CertValidity-time.Minute {
		t.Errorf("leaf valid until %s", l.NotAfter)
	}
}

// The CA is name-constrained: even with its key, a certificate for another
// domain does not verify.
func TestCAIsNameConstrained(t *testing.T) {
	c := newClock()
	m := newManager(t, t.TempDir(), c)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: newSerialT(t), Subject: pkix.Name{CommonName: "example.com"},
		DNSNames:  []string{"example.com"},
		NotBefore: c.now().Add(-time.Hour), NotAfter: c.now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, m.ca, key.Public(), m.caKey)
	if err != nil {
		t.Fatal(err)
	}
	evil, _ := x509.ParseCertificate(der)
	_, err = evil.Verify(x509.VerifyOptions{Roots: pool(t, m), DNSName: "example.com", CurrentTime: c.now()})
	var cie x509.CertificateInvalidError
	if !errors.As(err, &cie) || cie.Reason != x509.CANotAuthorizedForThisName {
		t.Fatalf("certificate for example.com from the local CA: err %v, want CANotAuthorizedForThisName", err)
	}
}

func newSerialT(t *testing.T) *big.Int {
	n, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReloadAfterRestart(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	m1 := newManager(t, dir, c)
	caBefore, _ := os.ReadFile(filepath.Join(dir, CAFile))
	certBefore, _ := os.ReadFile(filepath.Join(dir, CertFile))
	serial := leaf(t, m1).SerialNumber

	c.add(24 * time.Hour)
	m2 := newManager(t, dir, c)
	caAfter, _ := os.ReadFile(filepath.Join(dir, CAFile))
	certAfter, _ := os.ReadFile(filepath.Join(dir, CertFile))
	if string(caAfter) != string(caBefore) || m2.CAFingerprint() != m1.CAFingerprint() {
		t.Fatal("the CA changed across a restart")
	}
	if string(certAfter) != string(certBefore) || leaf(t, m2).SerialNumber.Cmp(serial) != 0 {
		t.Fatal("a still-valid certificate was reissued at restart")
	}
}

func TestRenewsBeforeExpiryWhileServing(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	m := newManager(t, dir, c)
	first := leaf(t, m)

	c.add(CertValidity - RenewBefore - time.Hour) // not yet due
	if leaf(t, m).SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("renewed too early")
	}
	c.add(2 * time.Hour) // now within RenewBefore of expiry
	second := leaf(t, m)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("not renewed within RenewBefore of expiry")
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate ends %s, before the old one %s", second.NotAfter, first.NotAfter)
	}
	if _, err := second.Verify(x509.VerifyOptions{Roots: pool(t, m), DNSName: "api." + domain, CurrentTime: c.now()}); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
	// The renewed pair is on disk, with the same modes, and a restart keeps it.
	if mode(t, filepath.Join(dir, KeyFile)) != 0o600 || mode(t, filepath.Join(dir, CertFile)) != 0o644 {
		t.Fatal("modes changed by renewal")
	}
	m2 := newManager(t, dir, c)
	if leaf(t, m2).SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatal("restart after renewal did not load the renewed certificate")
	}
}

func TestExpiredCertificateReissuedAtStart(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	first := leaf(t, newManager(t, dir, c))
	c.add(CertValidity + time.Hour)
	l := leaf(t, newManager(t, dir, c))
	if l.SerialNumber.Cmp(first.SerialNumber) == 0 || !c.now().Before(l.NotAfter) {
		t.Fatal("an expired certificate was loaded instead of reissued")
	}
}

func TestKeyModeRestored(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	newManager(t, dir, c)
	for _, f := range []string{CAKeyFile, KeyFile} {
		if err := os.Chmod(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	newManager(t, dir, c)
	for _, f := range []string{CAKeyFile, KeyFile} {
		if got := mode(t, filepath.Join(dir, f)); got != 0o600 {
			t.Errorf("%s mode %o after restart, want 600", f, got)
		}
	}
}

func TestBadStates(t *testing.T) {
	c := newClock()
	t.Run("other domain", func(t *testing.T) {
		dir := t.TempDir()
		newManager(t, dir, c)
		_, err := New(Config{Domain: "other.test", Dir: dir, Now: c.now})
		if err == nil || !strings.Contains(err.Error(), "another domain") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("CA key missing", func(t *testing.T) {
		dir := t.TempDir()
		newManager(t, dir, c)
		os.Remove(filepath.Join(dir, CAKeyFile))
		if _, err := New(Config{Domain: domain, Dir: dir, Now: c.now}); err == nil || !strings.Contains(err.Error(), "CA key") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("CA key of another CA", func(t *testing.T) {
		dir, other := t.TempDir(), t.TempDir()
		newManager(t, dir, c)
		newManager(t, other, c)
		data, _ := os.ReadFile(filepath.Join(other, CAKeyFile))
		os.WriteFile(filepath.Join(dir, CAKeyFile), data, 0o600)
		if _, err := New(Config{Domain: domain, Dir: dir, Now: c.now}); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("garbage server pair is reissued", func(t *testing.T) {
		dir := t.TempDir()
		newManager(t, dir, c)
		os.WriteFile(filepath.Join(dir, CertFile), []byte("junk"), 0o644)
		m := newManager(t, dir, c)
		if _, err := leaf(t, m).Verify(x509.VerifyOptions{Roots: pool(t, m), DNSName: domain, CurrentTime: c.now()}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad domains", func(t *testing.T) {
		for _, d := range []string{"", "localhost", "a..b", "-a.b", "a_b.c", "a.b:443"} {
			if _, err := New(Config{Domain: d, Dir: t.TempDir()}); err == nil {
				t.Errorf("domain %q accepted", d)
			}
		}
	})
	t.Run("half a user pair", func(t *testing.T) {
		if _, err := New(Config{Domain: domain, CertFile: "/x.crt"}); err == nil {
			t.Fatal("a certificate without a key was accepted")
		}
	})
}

// A user-given pair is served as is (no CA) and reloaded when it changes.
func TestUserCertificate(t *testing.T) {
	c := newClock()
	issuer := newManager(t, t.TempDir(), c) // stands in for the operator's own CA
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "my.crt"), filepath.Join(dir, "my.key")
	copyPair := func() {
		for src, dst := range map[string]string{filepath.Join(issuer.cfg.Dir, CertFile): certPath, filepath.Join(issuer.cfg.Dir, KeyFile): keyPath} {
			in, _ := os.Open(src)
			out, _ := os.Create(dst)
			io.Copy(out, in)
			in.Close()
			out.Close()
		}
	}
	copyPair()
	m, err := New(Config{Domain: domain, CertFile: certPath, KeyFile: keyPath, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if m.CAPath() != "" || m.CAFingerprint() != "" {
		t.Fatal("a CA is reported with user-given files")
	}
	first := leaf(t, m)
	if first.SerialNumber.Cmp(leaf(t, issuer).SerialNumber) != 0 {
		t.Fatal("not serving the given certificate")
	}
	// The operator renews: a new pair appears; it is served after the next check.
	c.add(CertValidity - RenewBefore + time.Hour)
	leaf(t, issuer) // renews the issuer's files
	copyPair()
	future := c.now().Add(time.Hour)
	os.Chtimes(certPath, future, future)
	second := leaf(t, m)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("a changed certificate file was not reloaded")
	}
	// A broken file keeps the current certificate.
	os.WriteFile(certPath, []byte("junk"), 0o644)
	c.add(2 * reloadEvery)
	if got := leaf(t, m); got.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatal("a broken certificate file replaced the one being served")
	}
	if _, err := New(Config{Domain: domain, CertFile: certPath, KeyFile: keyPath, Now: c.now}); err == nil {
		t.Fatal("a broken certificate file was accepted at start")
	}
}

func TestTLSConfigNegotiatesHTTP2(t *testing.T) {
	c := newClock()
	c.t = time.Now()
	m := newManager(t, t.TempDir(), c)
	l, err := tls.Listen("tcp", "127.0.0.1:0", m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err == nil {
			err = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
		done <- err
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
		RootCAs: pool(t, m), ServerName: "49983-iabc." + domain, NextProtos: []string{"h2", "http/1.1"},
	})
	if err != nil {
		t.Fatalf("TLS handshake with the local CA trusted: %v", err)
	}
	proto := conn.ConnectionState().NegotiatedProtocol
	conn.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if proto != "h2" {
		t.Fatalf("ALPN chose %q, want h2", proto)
	}
}

// Near the CA's own end a certificate cannot outlive it: it is issued up to
// the CA's end and not reissued at every handshake.
func TestNoRenewalLoopNearCAExpiry(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	m := newManager(t, dir, c)
	c.add(CAValidity - 10*24*time.Hour)
	first := leaf(t, m)
	if !first.NotAfter.Equal(m.ca.NotAfter) {
		t.Fatalf("certificate ends %s, CA %s", first.NotAfter, m.ca.NotAfter)
	}
	c.add(2 * reloadEvery)
	if leaf(t, m).SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("reissued although a new certificate could not end later")
	}
	if leaf(t, newManager(t, dir, c)).SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("reissued at restart")
	}
}
