package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// frontSetup serves setup's sandboxes (plus isbc, whose envd port is
// closed) through a Front.
func frontSetup(t *testing.T) (*httptest.Server, *Front, *Proxy, *fakeSandboxes) {
	t.Helper()
	_, f := setup(t)
	f.ports["isbc"] = map[int]*httptest.Server{}
	p := New(Config{Domain: "paddock.test", Sandboxes: f})
	t.Cleanup(p.Close)
	srv, fr := serveProxy(t, p, true)
	return srv, fr, p, f
}

// rawConn is a client connection that writes raw requests and reads
// responses in order.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, srv *httptest.Server) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) read(method string) (*http.Response, string) {
	c.t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		c.t.Fatalf("read body: %v", err)
	}
	return res, string(b)
}

func envdGet(path, id string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: 49983-" + id + ".paddock.test\r\n\r\n"
}

func envdPost(path, id, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: 49983-%s.paddock.test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, id, len(body), body)
}

// A connection that carries only requests to envd stays with the Front,
// which answers them itself: bodies, HEAD, errors of the sandbox's port in
// E2B's shape, Connection: close.
func TestFrontServesEnvdConnectionsItself(t *testing.T) {
	srv, fr, p, _ := frontSetup(t)
	c := dialRaw(t, srv)
	c.send(envdPost("/process.Process/List", "isba", "xyz"))
	if res, body := c.read("POST"); res.StatusCode != 200 || body != "a-envd POST /process.Process/List 3" ||
		res.Header.Get("X-Upstream") != "a-envd" || res.ContentLength != int64(len(body)) {
		t.Fatalf("POST: %d %q %v", res.StatusCode, body, res.Header)
	}
	c.send("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nE2b-Sandbox-Id: isbb\r\nE2b-Sandbox-Port: 49983\r\n\r\n")
	if _, body := c.read("GET"); body != "b-envd GET /health 0" {
		t.Fatalf("routing headers: %q", body)
	}
	c.send("HEAD /health HTTP/1.1\r\nHost: 49983-isba.paddock.test\r\n\r\n")
	if res, body := c.read("HEAD"); res.StatusCode != 200 || body != "" || res.Header.Get("X-Upstream") != "a-envd" {
		t.Fatalf("HEAD: %d %q", res.StatusCode, body)
	}
	// Requests pipelined in one write are answered in order.
	c.send(envdPost("/one", "isba", "1") + envdGet("/two", "isbb"))
	if _, body := c.read("POST"); body != "a-envd POST /one 1" {
		t.Fatalf("pipelined first: %q", body)
	}
	if _, body := c.read("GET"); body != "b-envd GET /two 0" {
		t.Fatalf("pipelined second: %q", body)
	}
	// A head that arrives in pieces.
	c.send("GET /slow HTTP/1.1\r\nHost: 49983-is")
	time.Sleep(50 * time.Millisecond)
	c.send("ba.paddock.test\r\n\r\n")
	if _, body := c.read("GET"); body != "a-envd GET /slow 0" {
		t.Fatalf("head in pieces: %q", body)
	}
	// envd's port closed: 502 in E2B's shape, and the connection goes on.
	c.send(envdGet("/health", "isbc"))
	res, body := c.read("GET")
	var e map[string]any
	if res.StatusCode != 502 || json.Unmarshal([]byte(body), &e) != nil || e["message"] != "The sandbox is running but port is not open" ||
		e["sandboxId"] != "isbc" || int(e["code"].(float64)) != 502 {
		t.Fatalf("closed port: %d %q", res.StatusCode, body)
	}
	c.send("GET /last HTTP/1.1\r\nHost: 49983-isba.paddock.test\r\nConnection: close\r\n\r\n")
	res, body = c.read("GET")
	if body != "a-envd GET /last 0" || !res.Close {
		t.Fatalf("Connection: close: %q close=%v", body, res.Close)
	}
	if n, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection open after Connection: close: %v %v", n, err)
	}
	if fr.served.Load() != 8 || fr.handed.Load() != 0 {
		t.Fatalf("served %d, handed %d connections over; want 8 and 0", fr.served.Load(), fr.handed.Load())
	}
	p.up.mu.Lock()
	kept := len(p.up.idle)
	p.up.mu.Unlock()
	if kept != 2 {
		t.Fatalf("upstream keeps connections to %d hosts, want 2", kept)
	}
}

// The first request the Front does not serve hands the connection to
// net/http with every byte read so far; the next request to envd takes it
// back. Pipelined requests, large heads and chunked bodies come through.
func TestFrontHandsOverAndTakesBack(t *testing.T) {
	srv, fr, _, _ := frontSetup(t)
	c := dialRaw(t, srv)
	c.send(envdGet("/health", "isba"))
	if _, body := c.read("GET"); body != "a-envd GET /health 0" {
		t.Fatalf("first: %q", body)
	}
	// An API request with two requests to envd behind it, in one write.
	c.send("GET /v2/sandboxes HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + envdPost("/x", "isba", "hello") + envdGet("/y", "isbb"))
	if res, body := c.read("GET"); res.StatusCode != http.StatusTeapot || body != "api\n" {
		t.Fatalf("API request: %d %q", res.StatusCode, body)
	}
	if _, body := c.read("POST"); body != "a-envd POST /x 5" {
		t.Fatalf("after the API request: %q", body)
	}
	if _, body := c.read("GET"); body != "b-envd GET /y 0" {
		t.Fatalf("pipelined behind it: %q", body)
	}
	if fr.handed.Load() != 1 || fr.adopted.Load() != 1 || fr.served.Load() != 3 {
		t.Fatalf("handed %d, adopted %d, served %d; want 1, 1, 3", fr.handed.Load(), fr.adopted.Load(), fr.served.Load())
	}
	// A head larger than the Front's buffer, and a chunked body: net/http's.
	big := strings.Repeat("b", 2*frontBufSize)
	c.send("GET /big HTTP/1.1\r\nHost: 49983-isba.paddock.test\r\nX-Big: " + big + "\r\n\r\n")
	if _, body := c.read("GET"); body != "a-envd GET /big 0" {
		t.Fatalf("large head: %q", body)
	}
	c.send("POST /chunked HTTP/1.1\r\nHost: 49983-isba.paddock.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
	if _, body := c.read("POST"); body != "a-envd POST /chunked 8" {
		t.Fatalf("chunked body: %q", body)
	}
	c.send(envdGet("/z", "isba"))
	if _, body := c.read("GET"); body != "a-envd GET /z 0" {
		t.Fatalf("after the chunked body: %q", body)
	}
	if fr.handed.Load() != 3 {
		t.Fatalf("handed %d connections over, want 3 (API, large head, chunked body)", fr.handed.Load())
	}
}

// HTTP/2 without TLS (prior knowledge) is net/http's.
func TestFrontLeavesH2CToNetHTTP(t *testing.T) {
	srv, fr, _, _ := frontSetup(t)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	t.Cleanup(tr.CloseIdleConnections)
	req, _ := http.NewRequest("GET", srv.URL+"/health", nil)
	req.Host = "49983-isba.paddock.test"
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || string(body) != "a-envd GET /health 0" {
		t.Fatalf("h2c: %s %q", res.Proto, body)
	}
	if fr.handed.Load() != 1 || fr.served.Load() != 0 {
		t.Fatalf("handed %d, served %d; want 1 and 0", fr.handed.Load(), fr.served.Load())
	}
}

// holdUpstream answers "ok", but on /hold streams "started\n", then holds
// the response open until the request ends, which it reports on ended.
func holdUpstream(t *testing.T) (*httptest.Server, chan struct{}) {
	ended := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hold" {
			fmt.Fprint(w, "ok")
			return
		}
		fmt.Fprint(w, "started\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		ended <- struct{}{}
	}))
	t.Cleanup(up.Close)
	return up, ended
}

// hold sends req, a request to holdUpstream's /hold, and returns the body
// of its response once "started" has come.
func (c *rawConn) hold(req string) *bufio.Reader {
	c.t.Helper()
	c.send(req)
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	rb := bufio.NewReader(res.Body)
	if line, err := rb.ReadString('\n'); err != nil || line != "started\n" {
		c.t.Fatalf("stream: %q %v", line, err)
	}
	return rb
}

// A client that goes away in the middle of a silent stream from envd ends
// the request to envd (the Front checks every clientCheckEvery).
func TestFrontClientGoneEndsTheUpstreamRequest(t *testing.T) {
	up, ended := holdUpstream(t)
	p := New(Config{Sandboxes: oneSandbox{upstream: up}})
	t.Cleanup(p.Close)
	srv, fr := serveProxy(t, p, true)
	c := dialRaw(t, srv)
	c.hold("POST /hold HTTP/1.1\r\nHost: 49983-isbx.paddock.test\r\nContent-Length: 2\r\n\r\n{}")
	c.conn.Close()
	select {
	case <-ended:
	case <-time.After(3 * clientCheckEvery):
		t.Fatal("the request to envd still open 3 s after its client left")
	}
	if fr.served.Load() != 1 {
		t.Fatalf("served %d, want 1", fr.served.Load())
	}
}

// Shutdown closes idle connections at once and cuts requests still in
// flight when its context ends; Accept then reports the listener closed.
func TestFrontShutdown(t *testing.T) {
	up, ended := holdUpstream(t)
	p := New(Config{Sandboxes: oneSandbox{upstream: up}})
	t.Cleanup(p.Close)
	srv, fr := serveProxy(t, p, true)

	idle := dialRaw(t, srv)
	idle.send("GET /health HTTP/1.1\r\nHost: 49983-isbx.paddock.test\r\n\r\n")
	if res, _ := idle.read("GET"); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	busy := dialRaw(t, srv)
	rb := busy.hold("GET /hold HTTP/1.1\r\nHost: 49983-isbx.paddock.test\r\n\r\n")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if err := fr.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown with a stream in flight: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if _, err := idle.br.ReadByte(); err == nil {
		t.Fatal("idle connection still open")
	}
	if _, err := io.ReadAll(rb); err == nil {
		t.Fatal("stream ended cleanly after a cut")
	}
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		t.Fatal("the request to envd still open after shutdown")
	}
	if _, err := fr.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after shutdown: %v", err)
	}
}

// headEnd finds the empty line that ends a head, CRLF or bare LF.
func TestHeadEnd(t *testing.T) {
	cases := map[string]int{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody": 27,
		"GET / HTTP/1.1\nHost: a\n\nbody":       24,
		"GET / HTTP/1.1\r\nHost: a\r\n":         0,
		"GET / HTTP/1.1\r\nHost: a\r\n\r":       0,
	}
	for in, want := range cases {
		if got := headEnd([]byte(in)); got != want {
			t.Errorf("headEnd(%q) = %d, want %d", in, got, want)
		}
	}
	if n := hostFields([]byte("GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\nX-Host: c\r\n\r\n")); n != 2 {
		t.Errorf("hostFields = %d, want 2", n)
	}
}

// panicky routes sandbox "ipanic" by panicking; others like oneSandbox.
type panicky struct{ oneSandbox }

func (p panicky) Route(ctx context.Context, id string) (Route, error) {
	if id == "ipanic" {
		panic("route exploded")
	}
	return p.oneSandbox.Route(ctx, id)
}

// A panic while the Front serves a request ends that connection only.
func TestFrontSurvivesAPanic(t *testing.T) {
	up, _ := holdUpstream(t)
	p := New(Config{Sandboxes: panicky{oneSandbox{upstream: up}}})
	t.Cleanup(p.Close)
	srv, _ := serveProxy(t, p, true)
	c := dialRaw(t, srv)
	c.send(envdGet("/health", "ipanic"))
	if _, err := c.br.ReadByte(); err == nil {
		t.Fatal("an answer from a request that panicked")
	}
	c = dialRaw(t, srv)
	c.send(envdGet("/health", "isbx"))
	if res, body := c.read("GET"); res.StatusCode != 200 || body != "ok" {
		t.Fatalf("after the panic: %d %q", res.StatusCode, body)
	}
}
