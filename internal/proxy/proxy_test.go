package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// upstreams maps sandbox ID → port → test server.
type fakeSandboxes struct {
	ports map[string]map[int]*httptest.Server
	token map[string]string
	mask  map[string]string
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

func echo(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Token", r.Header.Get(HeaderTrafficToken))
		if r.URL.Path == "/stream" {
			fl := w.(http.Flusher)
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, "chunk%d\n", i)
				fl.Flush()
				time.Sleep(50 * time.Millisecond)
			}
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.URL.Path, len(body))
	}))
}

func setup(t *testing.T) (*httptest.Server, *fakeSandboxes) {
	t.Helper()
	a49983, a8000, b49983 := echo("a-envd"), echo("a-8000"), echo("b-envd")
	t.Cleanup(func() { a49983.Close(); a8000.Close(); b49983.Close() })
	f := &fakeSandboxes{
		ports: map[string]map[int]*httptest.Server{
			"isba": {EnvdPort: a49983, 8000: a8000},
			"isbb": {EnvdPort: b49983},
		},
		token: map[string]string{"isbb": "secret-token"},
		mask:  map[string]string{"isba": "masked-${PORT}.example"},
	}
	p := New(Config{Domain: "paddock.test", Sandboxes: f})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.Match(r) {
			http.Error(w, "api", http.StatusTeapot)
			return
		}
		p.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, f
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
	srv, _ := setup(t)
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
}

func TestErrorsAreE2BShaped(t *testing.T) {
	srv, _ := setup(t)
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
}

func TestTrafficTokenAndMask(t *testing.T) {
	srv, f := setup(t)
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
}

func TestStreamsAreNotBuffered(t *testing.T) {
	srv, _ := setup(t)
	req, _ := http.NewRequest("GET", srv.URL+"/stream", nil)
	req.Host = "49983-isba.paddock.test"
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	start := time.Now()
	line, err := r.ReadString('\n')
	if err != nil || line != "chunk0\n" {
		t.Fatalf("first chunk: %q %v", line, err)
	}
	// The first chunk arrives before the upstream finished (it takes 150 ms).
	rest, _ := io.ReadAll(r)
	if string(rest) != "chunk1\nchunk2\n" {
		t.Fatalf("rest: %q", rest)
	}
	if time.Since(start) < 80*time.Millisecond {
		t.Fatalf("chunks were not streamed separately")
	}
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
