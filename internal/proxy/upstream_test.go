package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingDialer dials one address and counts the connections it made.
type countingDialer struct {
	addr  string
	dials atomic.Int32
}

func (d *countingDialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	d.dials.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.addr)
}

func newTestUpstream(t *testing.T, h http.Handler) (*upstream, *countingDialer) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	d := &countingDialer{addr: srv.Listener.Addr().String()}
	u := newUpstream(d.dial)
	t.Cleanup(func() { u.closeIdle(true) })
	return u, d
}

func roundTrip(t *testing.T, u *upstream, method, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://isbx:49983/x", rd)
	if err != nil {
		t.Fatal(err)
	}
	if !u.takes(req) {
		t.Fatalf("%s: an ordinary request not taken", method)
	}
	res, err := u.send(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s: read body: %v", method, err)
	}
	return res.StatusCode, string(b)
}

// Sequential requests of every shape share one connection, and bodies
// arrive whole.
func TestUpstreamKeepsConnectionsAlive(t *testing.T) {
	u, d := newTestUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case r.Method == http.MethodHead:
			w.Header().Set("Content-Length", "5")
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodPost:
			w.(http.Flusher).Flush() // chunked
			fmt.Fprintf(w, "got %s", b)
		default:
			fmt.Fprint(w, "hello")
		}
	}))
	for i := 0; i < 3; i++ {
		if code, body := roundTrip(t, u, http.MethodGet, ""); code != 200 || body != "hello" {
			t.Fatalf("GET: %d %q", code, body)
		}
		if code, body := roundTrip(t, u, http.MethodPost, "payload"); code != 200 || body != "got payload" {
			t.Fatalf("POST: %d %q", code, body)
		}
		if code, body := roundTrip(t, u, http.MethodHead, ""); code != 200 || body != "" {
			t.Fatalf("HEAD: %d %q", code, body)
		}
		if code, body := roundTrip(t, u, http.MethodDelete, ""); code != 204 || body != "" {
			t.Fatalf("DELETE: %d %q", code, body)
		}
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("%d connections for 12 sequential requests, want 1", n)
	}
}

// Upgrades, Expect: 100-continue and large or unsized bodies are not
// upstream's: send refuses them without dialling (the proxy gives them to
// the ReverseProxy: TestEnvdRequestsUpstreamDoesNotTake).
func TestUpstreamTakes(t *testing.T) {
	u, d := newTestUpstream(t, http.NotFoundHandler())
	reqs := []*http.Request{}
	r, _ := http.NewRequest(http.MethodGet, "http://isbx:49983/ws", nil)
	r.Header.Set("Upgrade", "websocket")
	reqs = append(reqs, r)
	r, _ = http.NewRequest(http.MethodPost, "http://isbx:49983/files", strings.NewReader(strings.Repeat("x", inlineBodyMax+1)))
	reqs = append(reqs, r)
	r, _ = http.NewRequest(http.MethodPost, "http://isbx:49983/files", io.NopCloser(strings.NewReader("unsized")))
	r.ContentLength = -1
	reqs = append(reqs, r)
	r, _ = http.NewRequest(http.MethodPost, "http://isbx:49983/files", strings.NewReader("x"))
	r.Header.Set("Expect", "100-continue")
	reqs = append(reqs, r)
	for _, r := range reqs {
		if u.takes(r) {
			t.Fatalf("%s %s %v: taken", r.Method, r.URL, r.Header)
		}
		if _, err := u.send(r); err == nil || !strings.Contains(err.Error(), "not a request it carries") {
			t.Fatalf("%s %s: err %v, want a refusal", r.Method, r.URL, err)
		}
	}
	if n := d.dials.Load(); n != 0 {
		t.Fatalf("%d dials for requests upstream does not take, want 0", n)
	}
}

// Requests to envd that upstream does not take still reach envd, through
// the ReverseProxy: a body larger than inlineBodyMax and one of unknown
// length (streamed, chunked).
func TestEnvdRequestsUpstreamDoesNotTake(t *testing.T) {
	srv, _ := setup(t)
	big := strings.Repeat("x", inlineBodyMax+1)
	res, body := do(t, srv, http.MethodPost, "49983-isba.paddock.test", "/big", nil, big)
	if want := fmt.Sprintf("a-envd POST /big %d", len(big)); res.StatusCode != 200 || body != want {
		t.Fatalf("large body: %d %q, want %q", res.StatusCode, body, want)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/unsized", io.NopCloser(strings.NewReader("unsized")))
	req.Host = "49983-isba.paddock.test"
	req.ContentLength = -1
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := "a-envd POST /unsized 7"; res.StatusCode != 200 || string(b) != want {
		t.Fatalf("unsized body: %d %q, want %q", res.StatusCode, b, want)
	}
}

// A kept connection the server closed is noticed before use, and a request
// whose connection is reset before any response is sent again once when
// that is safe.
func TestUpstreamStaleConnections(t *testing.T) {
	var closeNext atomic.Bool
	u, d := newTestUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if closeNext.Swap(false) {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprint(w, "ok")
	}))
	// The server closes after this response: the next request dials anew.
	closeNext.Store(true)
	roundTrip(t, u, http.MethodGet, "")
	roundTrip(t, u, http.MethodGet, "")
	if n := d.dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2 (Connection: close is not kept)", n)
	}
	// Close the kept connection under upstream's feet: get sees it dead
	// (it checks connections idle for checkAliveAfter or more).
	u.mu.Lock()
	for _, list := range u.idle {
		for _, c := range list {
			c.conn.(*net.TCPConn).CloseRead()
		}
	}
	u.mu.Unlock()
	time.Sleep(checkAliveAfter)
	if code, body := roundTrip(t, u, http.MethodPost, "x"); code != 200 || body != "ok" {
		t.Fatalf("POST after a dead idle connection: %d %q", code, body)
	}
	if n := d.dials.Load(); n != 3 {
		t.Fatalf("%d dials, want 3", n)
	}
}

// A GET on a kept connection that the server resets before answering is
// sent again on a new connection; a POST is not (it may have been taken).
func TestUpstreamRetriesOnlyReplayableAfterReset(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Serves one response per connection, keeping it open, then closes the
	// connection when the second request arrives, without answering.
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if i == 1 {
						return
					}
					fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}(c)
		}
	}()
	d := &countingDialer{addr: l.Addr().String()}
	u := newUpstream(d.dial)
	defer u.closeIdle(true)
	// alive() cannot see the close (it happens after the request is sent),
	// so the retry is what saves the GET.
	roundTrip(t, u, http.MethodGet, "")
	if code, body := roundTrip(t, u, http.MethodGet, ""); code != 200 || body != "ok" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if n := d.dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://isbx:49983/x", strings.NewReader("x"))
	_, err = u.send(req) // the second request on the new connection
	var nr *noResponse
	if !errors.As(err, &nr) {
		t.Fatalf("POST on a connection closed before the answer: err %v, want noResponse (not retried)", err)
	}
}

// Closing an unfinished endless response returns at once and gives up its
// connection; cancelling the request unblocks a read waiting on the
// server.
func TestUpstreamAbandonedStreams(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	u, d := newTestUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-stop:
				return
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
			if r.URL.Path == "/quiet" {
				continue
			}
			if _, err := fmt.Fprint(w, "data\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	req, _ := http.NewRequest(http.MethodGet, "http://isbx:49983/endless", nil)
	res, err := u.send(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- res.Body.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("closing an unfinished stream blocked")
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://isbx:49983/quiet", nil)
	res, err = u.send(req)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var readErr error
	go func() {
		defer wg.Done()
		_, readErr = io.ReadAll(res.Body)
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	wg.Wait()
	if readErr == nil {
		t.Fatal("read of a cancelled request's body ended without an error")
	}
	res.Body.Close()
	u.mu.Lock()
	idle := len(u.idle)
	u.mu.Unlock()
	if idle != 0 {
		t.Fatalf("%d hosts with idle connections after two abandoned streams, want 0", idle)
	}
	if n := d.dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
}

// The sweeper closes idle connections the server closed, and closeIdle
// stops it.
func TestUpstreamSweeper(t *testing.T) {
	idleConns := make(chan net.Conn, 4)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateIdle {
			idleConns <- c
		}
	}
	srv.Start()
	defer srv.Close()
	d := &countingDialer{addr: srv.Listener.Addr().String()}
	u := newUpstream(d.dial)
	roundTrip(t, u, http.MethodGet, "")
	(<-idleConns).Close()
	deadline := time.Now().Add(3 * sweepEvery)
	for {
		u.mu.Lock()
		n := len(u.idle)
		u.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper kept a connection the server closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	u.closeIdle(true)
	select {
	case <-u.swept:
	default:
		t.Fatal("closeIdle(true) returned with the sweeper running")
	}
	// After the final close, connections are not kept.
	roundTrip(t, u, http.MethodGet, "")
	u.mu.Lock()
	n := len(u.idle)
	u.mu.Unlock()
	if n != 0 {
		t.Fatal("a connection was kept after closeIdle(true)")
	}
}

// Requests to envd go through forwardEnvd: hop-by-hop headers (those the
// Connection header names too) stay on their side of the proxy, "TE:
// trailers" and end-to-end headers cross, trailers reach the client, and a
// body the sandbox cuts short reaches the client as an error, never as a
// whole response.
func TestForwardEnvdHeadersTrailersAndTruncation(t *testing.T) {
	var seen http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		switch r.URL.Path {
		case "/cut": // streamed (chunked), then the connection drops
			w.Write([]byte("only part"))
			w.(http.Flusher).Flush()
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		case "/trailer":
			w.Header().Set("Trailer", "X-Checksum")
			w.Header().Set("Connection", "X-Private")
			w.Header().Set("X-Private", "hop")
			w.Header().Set("X-End", "end")
			w.Write([]byte("body"))
			w.Header().Set("X-Checksum", "abc")
		}
	}))
	defer upstream.Close()
	for _, front := range []bool{false, true} {
		t.Run(fmt.Sprintf("front=%v", front), func(t *testing.T) {
			p := New(Config{Sandboxes: oneSandbox{upstream: upstream}})
			defer p.Close()
			srv, fr := serveProxy(t, p, front)

			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/trailer", strings.NewReader("{}"))
			req.Header.Set(HeaderSandboxID, "isbx")
			req.Header.Set(HeaderSandboxPort, fmt.Sprint(EnvdPort))
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "drop me")
			req.Header.Set("Te", "trailers")
			req.Header.Set("X-Keep", "keep me")
			req.Header.Set("X-Forwarded-For", "10.9.9.9")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || string(body) != "body" {
				t.Fatalf("body %q %v", body, err)
			}
			if seen.Get("X-Hop") != "" || seen.Get("X-Keep") != "keep me" || seen.Get("Te") != "trailers" || seen.Get("X-Forwarded-For") != "" {
				t.Fatalf("envd saw headers %v", seen)
			}
			if res.Header.Get("X-Private") != "" || res.Header.Get("X-End") != "end" {
				t.Fatalf("client got headers %v", res.Header)
			}
			if got := res.Trailer.Get("X-Checksum"); got != "abc" {
				t.Fatalf("trailer X-Checksum %q, want abc (trailers %v)", got, res.Trailer)
			}
			// It went through upstream, which keeps the connection for the next one.
			p.up.mu.Lock()
			kept := len(p.up.idle)
			p.up.mu.Unlock()
			if kept != 1 {
				t.Fatalf("upstream keeps connections to %d hosts after a request to envd, want 1 (not forwarded by upstream?)", kept)
			}

			req, _ = http.NewRequest(http.MethodGet, srv.URL+"/cut", nil)
			req.Header.Set(HeaderSandboxID, "isbx")
			req.Header.Set(HeaderSandboxPort, fmt.Sprint(EnvdPort))
			res, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err = io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil {
				t.Fatalf("a body the sandbox cut short read as whole: %q", body)
			}
			if front && fr.served.Load() != 2 {
				t.Fatalf("the Front served %d requests, want 2", fr.served.Load())
			}
		})
	}
}
