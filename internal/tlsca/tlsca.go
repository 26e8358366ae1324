// Package tlsca owns Paddock's TLS identity for a sandbox domain D: a local
// certificate authority created once under the data dir (name-constrained
// to D, so trusting it vouches for nothing else), the server certificate it
// issues for D, api.D and *.D and renews before expiry while serving, or a
// certificate pair the operator supplies instead (reloaded when the files
// change).
package tlsca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names under Config.Dir, and their modes.
const (
	CAFile     = "ca.crt"     // the CA certificate users trust (0644)
	CAKeyFile  = "ca.key"     // the CA private key (0600)
	CertFile   = "server.crt" // the issued server certificate chain (0644)
	KeyFile    = "server.key" // its private key (0600)
	publicMode = 0o644
	secretMode = 0o600
	dirMode    = 0o755
)

// Lifetimes of what the local CA makes.
const (
	// CAValidity is how long the local CA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// CertValidity is how long an issued server certificate is valid.
	CertValidity = 90 * 24 * time.Hour
	// RenewBefore: a server certificate this close to expiry is replaced.
	RenewBefore = 30 * 24 * time.Hour
	// backdate covers clock skew between Paddock and its clients.
	backdate = time.Hour
	// reloadEvery bounds how often user-given files are checked for changes.
	reloadEvery = time.Minute
)

// Config configures a Manager.
type Config struct {
	// Domain is the sandbox domain D (no port). Required.
	Domain string
	// Dir holds the local CA and the certificates it issues (created 0755).
	// Unused when CertFile and KeyFile are given.
	Dir string
	// CertFile and KeyFile, when both set, are the operator's certificate
	// chain and key (PEM) used instead of the local CA.
	CertFile, KeyFile string
	// Now is the clock (tests); nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Manager serves the certificate for a domain through GetCertificate.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	ca      *x509.Certificate // nil with user-given files
	caKey   crypto.Signer
	cert    *tls.Certificate
	checked time.Time // user-given files: last look at their mtimes; local CA: last failed renewal
	stamp   string    // user-given files: mtimes and sizes last loaded
}

// Names returns the DNS names the server certificate covers for domain:
// the domain itself, api.<domain> and *.<domain>.
func Names(domain string) []string {
	return []string{domain, "api." + domain, "*." + domain}
}

// New loads or creates what the configuration calls for: the operator's
// certificate pair, or the local CA (created on first use) and a current
// server certificate from it.
func New(cfg Config) (*Manager, error) {
	cfg.Domain = strings.TrimSuffix(strings.ToLower(cfg.Domain), ".")
	if err := checkDomain(cfg.Domain); err != nil {
		return nil, err
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("a TLS certificate and its key go together: give both files or neither")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{cfg: cfg, log: cfg.Logger}
	if cfg.CertFile != "" {
		if err := m.loadUser(); err != nil {
			return nil, err
		}
		return m, nil
	}
	if cfg.Dir == "" {
		return nil, errors.New("tls: no directory for the local CA")
	}
	if err := os.MkdirAll(cfg.Dir, dirMode); err != nil {
		return nil, fmt.Errorf("create TLS directory: %w", err)
	}
	if err := m.loadOrCreateCA(); err != nil {
		return nil, err
	}
	if err := m.loadOrIssue(); err != nil {
		return nil, err
	}
	return m, nil
}

// checkDomain accepts a DNS name of at least two labels.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("tls: a domain is required")
	}
	if len(d) > 240 || !strings.Contains(d, ".") {
		return fmt.Errorf("domain %q: want a DNS name such as sandbox.example.com", d)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("domain %q: bad label %q", d, label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("domain %q: character %q is not allowed", d, c)
			}
		}
	}
	return nil
}

// CAPath is the local CA certificate to trust (NODE_EXTRA_CA_CERTS,
// SSL_CERT_FILE, the system store), or "" with user-given files.
func (m *Manager) CAPath() string {
	if m.ca == nil {
		return ""
	}
	return filepath.Join(m.cfg.Dir, CAFile)
}

// CAFingerprint is the SHA-256 of the local CA certificate (hex), or "".
func (m *Manager) CAFingerprint() string {
	if m.ca == nil {
		return ""
	}
	sum := sha256.Sum256(m.ca.Raw)
	return hex.EncodeToString(sum[:])
}

// TLSConfig returns a server configuration using GetCertificate, offering
// HTTP/2 and HTTP/1.1 through ALPN.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: m.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// GetCertificate returns the current certificate, renewing the local CA's
// certificate when it is close to expiry and reloading user-given files
// when they changed. On a failed renewal or reload the previous
// certificate keeps being served (and the failure is logged).
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	if m.ca == nil {
		if now.Sub(m.checked) >= reloadEvery {
			m.checked = now
			if stamp, err := fileStamp(m.cfg.CertFile, m.cfg.KeyFile); err == nil && stamp != m.stamp {
				if err := m.loadUserLocked(); err != nil {
					m.log.Error("reload TLS certificate; keeping the previous one", "cert", m.cfg.CertFile, "err", err)
				} else {
					m.log.Info("reloaded TLS certificate", "cert", m.cfg.CertFile)
				}
			}
		}
		return m.cert, nil
	}
	if m.due(m.cert.Leaf, now) && now.Sub(m.checked) >= reloadEvery {
		if err := m.issue(); err != nil {
			m.checked = now // retry a minute later, not at every handshake
			m.log.Error("renew TLS certificate; keeping the previous one", "err", err)
		} else {
			m.log.Info("renewed TLS certificate", "names", Names(m.cfg.Domain), "notAfter", m.cert.Leaf.NotAfter)
		}
	}
	return m.cert, nil
}

// Current returns the certificate being served (no renewal check).
func (m *Manager) Current() *tls.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cert
}

// ---- the local CA --------------------------------------------------------

func (m *Manager) loadOrCreateCA() error {
	certPath := filepath.Join(m.cfg.Dir, CAFile)
	keyPath := filepath.Join(m.cfg.Dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A key without a certificate was never handed out: start over.
		return m.createCA(certPath, keyPath)
	case err != nil:
		return fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("read CA key %s (the CA certificate %s exists; remove both to make a new CA, then trust the new one): %w", keyPath, certPath, err)
	}
	ca, err := parseCert(certPEM)
	if err != nil {
		return fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	if !samePublicKey(ca.PublicKey, key.Public()) {
		return fmt.Errorf("CA key %s does not match the CA certificate %s", keyPath, certPath)
	}
	if !ca.IsCA {
		return fmt.Errorf("%s is not a CA certificate", certPath)
	}
	if !permits(ca, m.cfg.Domain) {
		return fmt.Errorf("the local CA in %s was made for another domain (%s); use another data dir or remove that directory to make a new CA for %s",
			m.cfg.Dir, strings.Join(ca.PermittedDNSDomains, ", "), m.cfg.Domain)
	}
	if m.cfg.Now().After(ca.NotAfter) {
		return fmt.Errorf("the local CA %s expired on %s; remove %s to make a new one, then trust the new one", certPath, ca.NotAfter.Format(time.DateOnly), m.cfg.Dir)
	}
	if m.cfg.Now().Add(RenewBefore).After(ca.NotAfter) {
		m.log.Warn("the local CA expires soon; remove its directory to make a new one, then trust the new one", "cert", certPath, "notAfter", ca.NotAfter)
	}
	// Modes may have been loosened by hand; the key must stay private.
	if err := os.Chmod(keyPath, secretMode); err != nil {
		return fmt.Errorf("chmod CA key: %w", err)
	}
	m.ca, m.caKey = ca, key
	return nil
}

func (m *Manager) createCA(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := m.cfg.Now()
	host, _ := os.Hostname()
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"Paddock"},
			CommonName:   "Paddock local CA for " + m.cfg.Domain,
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// Trusting this CA vouches for the sandbox domain only.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{m.cfg.Domain},
	}
	if host != "" {
		tpl.Subject.OrganizationalUnit = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first: a key without a certificate is remade at the next start.
	if err := writeAtomic(keyPath, pemBlock("PRIVATE KEY", keyDER), secretMode); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	if err := writeAtomic(certPath, pemBlock("CERTIFICATE", der), publicMode); err != nil {
		return fmt.Errorf("write CA certificate: %w", err)
	}
	m.ca, m.caKey = ca, key
	m.log.Info("created a local CA", "cert", certPath, "domain", m.cfg.Domain)
	return nil
}

// loadOrIssue loads the server certificate from disk when it is from this
// CA, covers the domain and is not due for renewal; otherwise it issues one.
func (m *Manager) loadOrIssue() error {
	certPEM, err1 := os.ReadFile(filepath.Join(m.cfg.Dir, CertFile))
	keyPEM, err2 := os.ReadFile(filepath.Join(m.cfg.Dir, KeyFile))
	if err1 == nil && err2 == nil {
		if c, err := tls.X509KeyPair(certPEM, keyPEM); err == nil && m.usable(c.Leaf) {
			if err := os.Chmod(filepath.Join(m.cfg.Dir, KeyFile), secretMode); err != nil {
				return fmt.Errorf("chmod TLS key: %w", err)
			}
			m.cert = &c
			return nil
		}
	}
	return m.issue()
}

// usable says whether leaf was issued by our CA for our names and is not
// yet due for renewal.
func (m *Manager) usable(leaf *x509.Certificate) bool {
	if leaf == nil || leaf.CheckSignatureFrom(m.ca) != nil {
		return false
	}
	now := m.cfg.Now()
	if now.Before(leaf.NotBefore) || m.due(leaf, now) {
		return false
	}
	for _, n := range Names(m.cfg.Domain) {
		if leaf.VerifyHostname(strings.Replace(n, "*", "x", 1)) != nil {
			return false
		}
	}
	return true
}

// due says whether leaf should be replaced: it ends within RenewBefore and
// a new one would end later (near the CA's own end it cannot).
func (m *Manager) due(leaf *x509.Certificate, now time.Time) bool {
	return now.Add(RenewBefore).After(leaf.NotAfter) && leaf.NotAfter.Before(m.ca.NotAfter)
}

// issue makes a fresh key and server certificate, writes them and serves
// them. The caller holds m.mu or has exclusive access.
func (m *Manager) issue() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := m.cfg.Now()
	notAfter := now.Add(CertValidity)
	if notAfter.After(m.ca.NotAfter) {
		notAfter = m.ca.NotAfter
	}
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Paddock"}, CommonName: m.cfg.Domain},
		DNSNames:     Names(m.cfg.Domain),
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, m.ca, key.Public(), m.caKey)
	if err != nil {
		return fmt.Errorf("issue TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The chain carries the CA too, for clients that like to see it.
	certPEM := append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", m.ca.Raw)...)
	keyPEM := pemBlock("PRIVATE KEY", keyDER)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(m.cfg.Dir, KeyFile), keyPEM, secretMode); err != nil {
		return fmt.Errorf("write TLS key: %w", err)
	}
	if err := writeAtomic(filepath.Join(m.cfg.Dir, CertFile), certPEM, publicMode); err != nil {
		return fmt.Errorf("write TLS certificate: %w", err)
	}
	m.cert = &c
	return nil
}

// ---- user-given files ----------------------------------------------------

func (m *Manager) loadUser() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checked = m.cfg.Now()
	return m.loadUserLocked()
}

func (m *Manager) loadUserLocked() error {
	stamp, err := fileStamp(m.cfg.CertFile, m.cfg.KeyFile)
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(m.cfg.CertFile, m.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", m.cfg.CertFile, m.cfg.KeyFile, err)
	}
	var missing []string
	for _, n := range Names(m.cfg.Domain) {
		if c.Leaf.VerifyHostname(strings.Replace(n, "*", "x", 1)) != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		// Not fatal: a certificate for api.D only still serves the API.
		m.log.Warn("the TLS certificate does not cover every name the SDK uses", "cert", m.cfg.CertFile, "missing", missing)
	}
	if m.cfg.Now().After(c.Leaf.NotAfter) {
		m.log.Warn("the TLS certificate has expired", "cert", m.cfg.CertFile, "notAfter", c.Leaf.NotAfter)
	}
	m.cert, m.stamp = &c, stamp
	return nil
}

// fileStamp identifies the current contents of files by size and mtime.
func fileStamp(paths ...string) (string, error) {
	var b strings.Builder
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("TLS file: %w", err)
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

// ---- helpers -------------------------------------------------------------

func permits(ca *x509.Certificate, domain string) bool {
	for _, d := range ca.PermittedDNSDomains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func parseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, err1 := x509.MarshalPKIXPublicKey(a)
	kb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ka, kb)
}

// writeAtomic replaces path with data (mode perm) through a synced
// temporary file in the same directory, so readers never see half a file.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}
