package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// oneSandbox routes every sandbox ID to one upstream server. It embeds the
// interface so it keeps satisfying it; only Route is used here.
type oneSandbox struct {
	Sandboxes
	upstream *httptest.Server
}

func (o oneSandbox) Route(ctx context.Context, id string) (Route, error) {
	return Route{Dial: func(ctx context.Context, port int) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", o.upstream.Listener.Addr().String())
	}}, nil
}

// TestStreamsResponseWhileRequestBodyIsOpen: an HTTP/1.1 server on a
// sandbox port that sends its response headers before it has read the
// request body (a streaming server answering as soon as it has a message)
// must reach the client while the client still holds back the end of the
// body. (Requests to envd's port with a small body are read whole first:
// envd's API is request then response.) A proxy that
// is not full duplex drains the body before writing the headers: the request
// then deadlocks here, and with a fast client the transport's end-of-body
// check races that drain and cuts streamed responses short.
func TestStreamsResponseWhileRequestBodyIsOpen(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			t.Errorf("upstream: enable full duplex: %v", err)
		}
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "headers-first\n")
		w.(http.Flusher).Flush()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream: read body: %v", err)
		}
		fmt.Fprintf(w, "got %q\n", body)
	}))
	defer upstream.Close()
	p := New(Config{Sandboxes: oneSandbox{upstream: upstream}})
	defer p.Close()
	srv := httptest.NewServer(p)
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Half of a 10-byte body, then wait for the response to start.
	fmt.Fprintf(conn, "POST /stream HTTP/1.1\r\nHost: proxy\r\n%s: isbx\r\n%s: %d\r\nContent-Length: 10\r\n\r\nhello",
		HeaderSandboxID, HeaderSandboxPort, 8080)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response headers while the request body is still open: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	rb := bufio.NewReader(res.Body)
	first, err := rb.ReadString('\n')
	if err != nil || first != "headers-first\n" {
		t.Fatalf("first line %q (%v), want %q", first, err, "headers-first\n")
	}
	if _, err := io.WriteString(conn, "world"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rb)
	if err != nil {
		t.Fatalf("rest of the response: %v (got %q)", err, rest)
	}
	if want := `got "helloworld"`; !strings.Contains(string(rest), want) {
		t.Fatalf("rest of the response %q, want %q", rest, want)
	}
}
