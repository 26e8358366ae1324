package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/tlsca"
)

// upstreams maps sandbox ID → port → test server.
type fakeSandboxes struct {
	ports map[string]map[int]*httptest.Server
	token map[string]string
	mask  map[string]string
	envd  map[string]string // envd access tokens of secure sandboxes
	gate  chan struct{}     // releases the upstreams' /stream
}

func (f *fakeSandboxes) Signers(ctx context.Context) ([]Signer, error) {
	var out []Signer
	for id, tok := range f.envd {
		if _, ok := f.ports[id]; ok {
			out = append(out, Signer{ID: id, EnvdToken: tok})
		}
	}
	return out, nil
}

func (f *fakeSandboxes) Route(ctx context.Context, id string) (Route, error) {
	ports, ok := f.ports[id]
	if !ok {
		return Route{}, fmt.Errorf("%w: %s", ErrGone, id)
	}
	return Route{
		Dial: func(ctx context.Context, port int) (net.Conn, error) {
			srv, ok := ports[port]
			if !ok {
				return nil, fmt.Errorf("dial port %d: connection refused", port)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
		},
		TrafficToken:    f.token[id],
		MaskRequestHost: f.mask[id],
	}, nil
}

// echo is an upstream named name; its /stream holds after the first chunk
// until gate is closed.
func echo(name string, gate <-chan struct{}) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Token", r.Header.Get(HeaderTrafficToken))
		if r.URL.Path == "/stream" {
			fl := w.(http.Flusher)
			fmt.Fprint(w, "chunk0\n")
			fl.Flush()
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
			fmt.Fprint(w, "chunk1\nchunk2\n")
			return
		}
		if r.Header.Get("Upgrade") == "websocket" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Upstream: " + name + "\r\n\r\n")
			brw.Flush()
			io.Copy(conn, brw) // echo until the client closes
			return
		}
		if r.URL.Path == "/files" {
			fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.URL.Path, r.URL.RawQuery)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.URL.Path, len(body))
	}))
}

func setup(t *testing.T) (*httptest.Server, *fakeSandboxes) {
	t.Helper()
	gate := make(chan struct{})
	a49983, a8000, b49983 := echo("a-envd", gate), echo("a-8000", gate), echo("b-envd", gate)
	t.Cleanup(func() { a49983.Close(); a8000.Close(); b49983.Close() })
	f := &fakeSandboxes{
		ports: map[string]map[int]*httptest.Server{
			"isba": {EnvdPort: a49983, 8000: a8000},
			"isbb": {EnvdPort: b49983},
		},
		token: map[string]string{"isbb": "secret-token"},
		mask:  map[string]string{"isba": "masked-${PORT}.example"},
		envd:  map[string]string{"isba": "tok-a", "isbb": "tok-123", "igone": "tok-gone"},
		gate:  gate,
	}
	p := New(Config{Domain: "paddock.test", Sandboxes: f})
	t.Cleanup(p.Close)
	srv, _ := serveProxy(t, p, false)
	return srv, f
}

// serveProxy serves p as paddock serve does: requests the proxy matches go
// to it, others to an API (here one that answers 418). With front, through
// p's Front on the server's listener.
func serveProxy(t *testing.T, p *Proxy, front bool) (*httptest.Server, *Front) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.Match(r) {
			http.Error(w, "api", http.StatusTeapot)
			return
		}
		p.ServeHTTP(w, r)
	}))
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protocols
	var fr *Front
	if front {
		fr = p.Front(srv.Listener, FrontConfig{IdleTimeout: time.Minute, ReadHeaderTimeout: 10 * time.Second})
		srv.Listener = fr
		srv.Config.ConnContext = fr.ConnContext
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		if fr != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := fr.Shutdown(ctx); err != nil {
				t.Errorf("front shutdown: %v", err)
			}
		}
	})
	return srv, fr
}

// forModes runs test against the proxy served by net/http alone and
// through its Front (as paddock serve does); through the Front, the
// requests test makes to envd must have been served by the Front itself
// when wantServed.
func forModes(t *testing.T, wantServed bool, test func(t *testing.T, srv *httptest.Server, f *fakeSandboxes)) {
	for _, front := range []bool{false, true} {
		name := "net-http"
		if front {
			name = "front"
		}
		t.Run(name, func(t *testing.T) {
			_, f := setup(t)
			p := New(Config{Domain: "paddock.test", Sandboxes: f})
			t.Cleanup(p.Close)
			srv, fr := serveProxy(t, p, front)
			test(t, srv, f)
			if front && wantServed && fr.served.Load() == 0 {
				t.Fatalf("the Front served no request (handed %d connections over)", fr.handed.Load())
			}
		})
	}
}

func do(t *testing.T, srv *httptest.Server, method, host, path string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestRoutesByHostAndHeaders(t *testing.T) {
	forModes(t, true, func(t *testing.T, srv *httptest.Server, f *fakeSandboxes) {
		_, body := do(t, srv, "POST", "49983-isba.paddock.test", "/process.Process/List", nil, "xyz")
		if body != "a-envd POST /process.Process/List 3" {
			t.Fatalf("host routing: %q", body)
		}
		_, body = do(t, srv, "GET", "", "/health", map[string]string{HeaderSandboxID: "isbb", HeaderSandboxPort: "49983"}, "")
		if body != "b-envd GET /health 0" {
			t.Fatalf("header routing: %q", body)
		}
		// Per-sandbox hosts ignore routing headers (no spoofing into another sandbox).
		_, body = do(t, srv, "GET", "49983-isba.paddock.test", "/x", map[string]string{HeaderSandboxID: "isbb", HeaderSandboxPort: "49983"}, "")
		if !strings.HasPrefix(body, "a-envd") {
			t.Fatalf("headers overrode the host: %q", body)
		}
		// Not a sandbox request: left to the API.
		res, _ := do(t, srv, "GET", "api.paddock.test", "/v2/sandboxes", nil, "")
		if res.StatusCode != http.StatusTeapot {
			t.Fatalf("API request matched the proxy: %d", res.StatusCode)
		}
	})
}

func TestErrorsAreE2BShaped(t *testing.T) {
	forModes(t, false, func(t *testing.T, srv *httptest.Server, f *fakeSandboxes) {
		check := func(res *http.Response, body string, status int, msg string) {
			t.Helper()
			if res.StatusCode != status {
				t.Fatalf("status %d, want %d (%s)", res.StatusCode, status, body)
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body not JSON: %q", body)
			}
			if int(e["code"].(float64)) != status || !strings.Contains(e["message"].(string), msg) {
				t.Fatalf("body %v", e)
			}
		}
		res, body := do(t, srv, "GET", "49983-igone.paddock.test", "/health", nil, "")
		check(res, body, 502, "sandbox was not found")
		res, body = do(t, srv, "GET", "9999-isba.paddock.test", "/", nil, "")
		check(res, body, 502, "port is not open")
		res, body = do(t, srv, "POST", "", "/init", map[string]string{HeaderSandboxID: "isba", HeaderSandboxPort: "49983"}, "{}")
		check(res, body, 404, "not found")
		res, body = do(t, srv, "GET", "", "/health", map[string]string{HeaderSandboxID: "isba", HeaderSandboxPort: "nan"}, "")
		check(res, body, 400, "E2b-Sandbox-Port")
		res, body = do(t, srv, "GET", "49983-igone.paddock.test", "/", map[string]string{"Accept": "text/html"}, "")
		if res.StatusCode != 502 || !strings.Contains(body, "<html>") {
			t.Fatalf("browser error page: %d %q", res.StatusCode, body)
		}
	})
}

func TestTrafficTokenAndMask(t *testing.T) {
	forModes(t, true, func(t *testing.T, srv *httptest.Server, f *fakeSandboxes) {
		f.ports["isbb"][8000] = f.ports["isba"][8000]
		res, _ := do(t, srv, "GET", "8000-isbb.paddock.test", "/", nil, "")
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("missing traffic token: %d", res.StatusCode)
		}
		res, _ = do(t, srv, "GET", "8000-isbb.paddock.test", "/", map[string]string{HeaderTrafficToken: "wrong"}, "")
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("wrong traffic token: %d", res.StatusCode)
		}
		res, _ = do(t, srv, "GET", "8000-isbb.paddock.test", "/", map[string]string{HeaderTrafficToken: "secret-token"}, "")
		if res.StatusCode != 200 || res.Header.Get("X-Seen-Token") != "" {
			t.Fatalf("token: %d, forwarded token %q", res.StatusCode, res.Header.Get("X-Seen-Token"))
		}
		// envd's port needs no traffic token (envd has its own).
		res, _ = do(t, srv, "GET", "49983-isbb.paddock.test", "/", nil, "")
		if res.StatusCode != 200 {
			t.Fatalf("envd port refused without traffic token: %d", res.StatusCode)
		}
		res, _ = do(t, srv, "GET", "8000-isba.paddock.test", "/", nil, "")
		if res.Header.Get("X-Seen-Host") != "masked-8000.example" {
			t.Fatalf("mask: %q", res.Header.Get("X-Seen-Host"))
		}
	})
}

func TestStreamsAreNotBuffered(t *testing.T) {
	forModes(t, true, func(t *testing.T, srv *httptest.Server, f *fakeSandboxes) {
		req, _ := http.NewRequest("GET", srv.URL+"/stream", nil)
		req.Host = "49983-isba.paddock.test"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		r := bufio.NewReader(res.Body)
		// The upstream holds the rest until the first chunk has arrived here, so
		// a proxy buffering the response would block forever.
		line, err := r.ReadString('\n')
		if err != nil || line != "chunk0\n" {
			t.Fatalf("first chunk: %q %v", line, err)
		}
		close(f.gate)
		rest, _ := io.ReadAll(r)
		if string(rest) != "chunk1\nchunk2\n" {
			t.Fatalf("rest: %q", rest)
		}
	})
}

func TestHostParsing(t *testing.T) {
	p := New(Config{Domain: "paddock.test"})
	cases := []struct {
		host string
		id   string
		port int
		ok   bool
	}{
		{"49983-iabc.paddock.test", "iabc", 49983, true},
		{"8000-iabc.paddock.test:443", "iabc", 8000, true},
		{"8000-iabc.other.test", "", 0, false},
		{"api.paddock.test", "", 0, false},
		{"x-iabc.paddock.test", "", 0, false},
		{"8000-iA.paddock.test", "", 0, false},
		{"70000-iabc.paddock.test", "", 0, false},
		{"127.0.0.1:3000", "", 0, false},
	}
	for _, c := range cases {
		id, port, ok := p.hostTarget(c.host)
		if id != c.id || port != c.port || ok != c.ok {
			t.Errorf("%s: got %q %d %v", c.host, id, port, ok)
		}
	}
}

// The signature algorithm matches the E2B SDK's: vectors from e2b 2.51.0's
// downloadUrl/uploadUrl with envdAccessToken "tok-123".
func TestFileSignatureMatchesSDK(t *testing.T) {
	if got := FileSignature("/home/user/a b.txt", "read", "user", "tok-123", nil); got != "v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg" {
		t.Fatalf("read signature %s", got)
	}
	if got := FileSignature("/tmp/x.bin", "write", "", "tok-123", nil); got != "v1_fzapeZftWmvlkT8kPQJlWts43+FBIu7KGbahcVpmXck" {
		t.Fatalf("write signature %s", got)
	}
}

// Signed /files links on a shared host (E2B_SANDBOX_URL mode) carry no
// routing headers: they go to the sandbox whose token verifies them.
func TestSignedFilesOnSharedHost(t *testing.T) {
	forModes(t, true, func(t *testing.T, srv *httptest.Server, f *fakeSandboxes) {
		get := func(method, rawQuery string, hdr map[string]string) (*http.Response, string) {
			t.Helper()
			return do(t, srv, method, "", "/files?"+rawQuery, hdr, "")
		}
		// The SDK's own link for sandbox isbb (token tok-123).
		res, body := get("GET", "username=user&path=%2Fhome%2Fuser%2Fa+b.txt&signature=v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg", nil)
		if res.StatusCode != 200 || !strings.HasPrefix(body, "b-envd GET /files ") {
			t.Fatalf("signed download: %d %q", res.StatusCode, body)
		}
		res, body = get("POST", "path=%2Ftmp%2Fx.bin&signature=v1_fzapeZftWmvlkT8kPQJlWts43%2BFBIu7KGbahcVpmXck", nil)
		if res.StatusCode != 200 || !strings.HasPrefix(body, "b-envd POST /files ") {
			t.Fatalf("signed upload: %d %q", res.StatusCode, body)
		}
		// Another sandbox's link goes there, expiration included.
		exp := time.Now().Add(time.Hour).Unix()
		sig := url.QueryEscape(FileSignature("/x", "read", "", "tok-a", &exp))
		q := fmt.Sprintf("path=%%2Fx&signature=%s&signature_expiration=%d", sig, exp)
		res, body = get("GET", q, nil)
		if res.StatusCode != 200 || !strings.HasPrefix(body, "a-envd GET /files ") {
			t.Fatalf("signed download with expiration: %d %q", res.StatusCode, body)
		}
		// HEAD is a read.
		if res, _ = get("HEAD", q, nil); res.StatusCode != 200 || res.Header.Get("X-Upstream") != "a-envd" {
			t.Fatalf("HEAD: %d %q", res.StatusCode, res.Header.Get("X-Upstream"))
		}

		rejected := []struct {
			name, method, query string
			status              int
			msg                 string
		}{
			{"read signature used to write", "POST", "username=user&path=%2Fhome%2Fuser%2Fa+b.txt&signature=v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg", 401, "matches no running sandbox"},
			{"path changed", "GET", "username=user&path=%2Fetc%2Fshadow&signature=v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg", 401, "matches no running sandbox"},
			{"user changed", "GET", "username=root&path=%2Fhome%2Fuser%2Fa+b.txt&signature=v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg", 401, "matches no running sandbox"},
			{"expiration changed", "GET", fmt.Sprintf("path=%%2Fx&signature=%s&signature_expiration=%d", sig, exp+1), 401, "matches no running sandbox"},
			{"garbage signature", "GET", "path=%2Fx&signature=v1_AAAA", 401, "matches no running sandbox"},
			{"gone sandbox's token", "GET", "path=%2Fx&signature=" + url.QueryEscape(FileSignature("/x", "read", "", "tok-gone", nil)), 401, "matches no running sandbox"},
			{"no signature", "GET", "path=%2Fx", 401, "signed URL"},
			{"bad expiration", "GET", "path=%2Fx&signature=" + sig + "&signature_expiration=soon", 400, "signature_expiration"},
			{"method", "PUT", "path=%2Fx&signature=" + sig, 405, "not allowed"},
		}
		for _, c := range rejected {
			res, body := get(c.method, c.query, nil)
			var e map[string]any
			if res.StatusCode != c.status || json.Unmarshal([]byte(body), &e) != nil || int(e["code"].(float64)) != c.status ||
				!strings.Contains(e["message"].(string), c.msg) {
				t.Errorf("%s: %d %q, want %d with %q", c.name, res.StatusCode, body, c.status, c.msg)
			}
		}

		// Routing headers win over the signature on a shared host...
		res, body = get("GET", "username=user&path=%2Fhome%2Fuser%2Fa+b.txt&signature=v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg",
			map[string]string{HeaderSandboxID: "isba", HeaderSandboxPort: "49983"})
		if !strings.HasPrefix(body, "a-envd GET /files") {
			t.Fatalf("headers on a shared host: %q", body)
		}
		// ...and a per-sandbox host wins over both.
		res, body = do(t, srv, "GET", "49983-isba.paddock.test", "/files?path=%2Fx&signature=v1_958VKGxAthIp4hdibQj6kfpnipti0CE4ph5Px9zF8Hg", nil, "")
		if res.StatusCode != 200 || !strings.HasPrefix(body, "a-envd GET /files") {
			t.Fatalf("per-sandbox host: %d %q", res.StatusCode, body)
		}
	})
}

// Through a TLS listener with the local CA's certificate: HTTP/2 by ALPN for
// requests, HTTP/1.1 upgrades (WebSockets) passed through both ways.
func TestThroughTLS(t *testing.T) {
	_, f := setup(t)
	m, err := tlsca.New(tlsca.Config{Domain: "paddock.test", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{Domain: "paddock.test", Sandboxes: f})
	srv := httptest.NewUnstartedServer(p)
	srv.EnableHTTP2 = true
	srv.TLS = m.TLSConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(mustRead(t, m.CAPath())) {
		t.Fatal("no CA")
	}
	addr := srv.Listener.Addr().String()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	res, err := (&http.Client{Transport: tr}).Post("https://49983-isba.paddock.test/process.Process/List", "application/json", strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || string(body) != "a-envd POST /process.Process/List 3" {
		t.Fatalf("over TLS: %s %q", res.Proto, body)
	}

	// A WebSocket handshake on HTTP/1.1 (as browsers and Node's ws do).
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "8000-isba.paddock.test", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: 8000-isba.paddock.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	up, err := http.ReadResponse(br, nil)
	if err != nil || up.StatusCode != http.StatusSwitchingProtocols || up.Header.Get("X-Upstream") != "a-8000" {
		t.Fatalf("upgrade: %v %v", up, err)
	}
	for _, msg := range []string{"ping\n", "second message\n"} {
		fmt.Fprint(conn, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo through the upgraded connection: %q %v", got, err)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkSignedFilesTarget: the cost of routing a shared-host signed link
// with 500 candidate sandboxes (the match is the last one tried).
func BenchmarkSignedFilesTarget(b *testing.B) {
	f := &fakeSandboxes{ports: map[string]map[int]*httptest.Server{}, envd: map[string]string{}}
	for i := 0; i < 500; i++ {
		id := fmt.Sprintf("i%020d", i)
		f.ports[id] = nil
		f.envd[id] = fmt.Sprintf("%064x", i)
	}
	p := New(Config{Domain: "paddock.test", Sandboxes: f})
	sig := FileSignature("/x", "read", "", fmt.Sprintf("%064x", 499), nil)
	r := httptest.NewRequest("GET", "/files?path=%2Fx&signature="+url.QueryEscape(sig), nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if id, _, msg := p.signedFilesTarget(r); id != fmt.Sprintf("i%020d", 499) {
			b.Fatalf("routed to %q (%s)", id, msg)
		}
	}
}
