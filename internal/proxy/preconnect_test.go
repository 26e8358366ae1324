package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// countingSandboxes routes every known sandbox's envd to one test server
// and counts the dials (Route's and Preconnect's).
type countingSandboxes struct {
	addr  string
	known map[string]bool
	dials atomic.Int32
}

func (c *countingSandboxes) Signers(context.Context) ([]Signer, error) { return nil, nil }

func (c *countingSandboxes) Route(ctx context.Context, id string) (Route, error) {
	if !c.known[id] {
		return Route{}, fmt.Errorf("%w: %s", ErrGone, id)
	}
	return Route{Dial: c.dialer(id)}, nil
}

// dialer dials envd of sandbox id, as the runtime would; an unknown
// sandbox refuses.
func (c *countingSandboxes) dialer(id string) func(ctx context.Context, port int) (net.Conn, error) {
	return func(ctx context.Context, port int) (net.Conn, error) {
		c.dials.Add(1)
		if !c.known[id] {
			return nil, fmt.Errorf("dial %s: no such sandbox", id)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", c.addr)
	}
}

// idleConns counts the proxy's idle upstream connections to id's envd.
func idleConns(p *Proxy, id string) int {
	p.up.mu.Lock()
	defer p.up.mu.Unlock()
	return len(p.up.idle[upstreamHost(id, EnvdPort)])
}

// Preconnect opens the connection the first request to a sandbox's envd
// then uses: one dial and one connection at envd in all; a failed dial
// leaves nothing, and after Close nothing is dialled.
func TestPreconnect(t *testing.T) {
	var accepted atomic.Int32
	envd := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "envd ", r.URL.Path)
	}))
	envd.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	envd.Start()
	defer envd.Close()
	sbx := &countingSandboxes{addr: envd.Listener.Addr().String(), known: map[string]bool{"isba": true}}
	p := New(Config{Domain: "paddock.test", Sandboxes: sbx})
	srv, _ := serveProxy(t, p, false)

	p.Preconnect("igone", sbx.dialer("igone")) // refused: nothing kept
	p.Preconnect("isba", sbx.dialer("isba"))
	deadline := time.Now().Add(5 * time.Second)
	for idleConns(p, "isba") == 0 || sbx.dials.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after two Preconnects: %d dials, %d idle connections to isba's envd", sbx.dials.Load(), idleConns(p, "isba"))
		}
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		res, body := do(t, srv, "GET", "49983-isba.paddock.test", "/health", nil, "")
		if res.StatusCode != http.StatusOK || body != "envd /health" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if n := sbx.dials.Load(); n != 2 {
		t.Fatalf("%d dials for two preconnects and three requests, want 2", n)
	}
	if n := idleConns(p, "igone"); n != 0 {
		t.Fatalf("%d idle connections to a sandbox whose dial failed", n)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("envd accepted %d connections, want 1 (the preconnected one)", n)
	}

	p.Close()
	p.Preconnect("isba", sbx.dialer("isba"))
	if n := sbx.dials.Load(); n != 2 {
		t.Fatalf("Preconnect after Close dialled (%d dials)", n)
	}
}
