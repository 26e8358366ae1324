package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// countingSandboxes routes every known sandbox's envd to one test server
// and counts the dials.
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
	return Route{Dial: func(ctx context.Context, port int) (net.Conn, error) {
		c.dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", c.addr)
	}}, nil
}

// idleConns counts the proxy's idle upstream connections to id's envd.
func idleConns(p *Proxy, id string) int {
	p.up.mu.Lock()
	defer p.up.mu.Unlock()
	return len(p.up.idle[id+":"+strconv.Itoa(EnvdPort)])
}

// Preconnect opens the connection the first request to a sandbox's envd
// then uses: one dial and one connection at envd in all; a sandbox the
// service does not route is not dialled, and after Close nothing is.
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

	p.Preconnect("isba")
	p.Preconnect("igone") // not routed: no dial
	deadline := time.Now().Add(5 * time.Second)
	for idleConns(p, "isba") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no idle connection to isba's envd 5 s after Preconnect")
		}
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		res, body := do(t, srv, "GET", "49983-isba.paddock.test", "/health", nil, "")
		if res.StatusCode != http.StatusOK || body != "envd /health" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if n := sbx.dials.Load(); n != 1 {
		t.Fatalf("%d dials for a preconnect and three requests, want 1", n)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("envd accepted %d connections, want 1 (the preconnected one)", n)
	}

	p.Close()
	p.Preconnect("isba")
	time.Sleep(50 * time.Millisecond)
	if n := sbx.dials.Load(); n != 1 {
		t.Fatalf("Preconnect after Close dialled (%d dials)", n)
	}
}
