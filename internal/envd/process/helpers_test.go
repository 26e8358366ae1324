package process

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	pb "github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

func TestMain(m *testing.M) {
	if os.Getenv(pid1Env) == "1" {
		os.Exit(pid1Main())
	}
	os.Exit(m.Run())
}

// requireRoot fails the test when not root: these tests switch users and
// signal process groups as envd does in a sandbox.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test must run as root (envd runs as root in sandboxes; CI runs tests as root)")
	}
}

// fixture is one service served over two transports: HTTP/1.1 with the JSON
// codec (as the JS SDK speaks it) and HTTP/2 over TLS with the binary codec.
type fixture struct {
	svc   *Service
	state *identity.State
	plain *httptest.Server
	tls   *httptest.Server
	codec int // index into codecs() of the codec under test
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	state := identity.NewState()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svc := NewService(state, log)
	path, h := processconnect.NewProcessHandler(svc)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	f := &fixture{svc: svc, state: state}
	f.plain = httptest.NewServer(mux)
	f.tls = httptest.NewUnstartedServer(mux)
	f.tls.EnableHTTP2 = true
	f.tls.StartTLS()
	t.Cleanup(func() {
		f.plain.Close()
		f.tls.Close()
		svc.Close()
	})
	return f
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// codec is one way of talking to the service.
type codec struct {
	name   string
	client processconnect.ProcessClient
}

func (f *fixture) codecs() []codec {
	return []codec{
		{"json-http1", processconnect.NewProcessClient(f.plain.Client(), f.plain.URL, connect.WithProtoJSON())},
		{"proto-http2", processconnect.NewProcessClient(f.tls.Client(), f.tls.URL)},
	}
}

// stingyClients returns clients like codecs, whose connections buffer little
// (small TCP receive buffer, small HTTP/2 windows), so that a client that
// stops reading stalls its stream quickly, as over a real network, instead
// of loopback autotuning swallowing tens of MiB.
func (f *fixture) stingyClients() []codec {
	dialer := &net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 32<<10)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	plain := &http.Transport{DialContext: dialer.DialContext}
	tlsCfg := f.tls.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	h2 := &http.Transport{
		DialContext:       dialer.DialContext,
		TLSClientConfig:   tlsCfg,
		ForceAttemptHTTP2: true,
		HTTP2:             &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10},
	}
	return []codec{
		{"json-http1", processconnect.NewProcessClient(&http.Client{Transport: plain}, f.plain.URL, connect.WithProtoJSON())},
		{"proto-http2", processconnect.NewProcessClient(&http.Client{Transport: h2}, f.tls.URL)},
	}
}

// eachCodec runs fn once per codec, each against a fresh service.
func eachCodec(t *testing.T, fn func(t *testing.T, f *fixture, c processconnect.ProcessClient)) {
	for i := range 2 {
		f := newFixture(t)
		f.codec = i
		c := f.codecs()[i]
		t.Run(c.name, func(t *testing.T) { fn(t, f, c.client) })
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// shell is a Start request running script with bash, as the SDK does but
// without -l: a login shell would run this host's profile scripts, which are
// not under test (and, for root here, hang in "pyenv rehash").
func shell(script string) *pb.StartRequest {
	return &pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}},
		Stdin:   proto.Bool(false),
	}
}

func basicUser(name string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"))
}

// result is what one Start/Connect stream delivered.
type result struct {
	pid        uint32
	stdout     bytes.Buffer
	stderr     bytes.Buffer
	pty        bytes.Buffer
	end        *pb.ProcessEvent_EndEvent
	keepalives int
	data       []*pb.ProcessEvent_DataEvent
}

type eventMsg interface{ GetEvent() *pb.ProcessEvent }

// events reads a stream event by event and checks the stream contract:
// start first, exactly one end, nothing after the end.
type events[T any, PT interface {
	*T
	eventMsg
}] struct {
	t      *testing.T
	stream *connect.ServerStreamForClient[T]
	res    result
	n      int
}

func newEvents[T any, PT interface {
	*T
	eventMsg
}](t *testing.T, s *connect.ServerStreamForClient[T]) *events[T, PT] {
	return &events[T, PT]{t: t, stream: s}
}

// next returns the next event, or nil at the end of the stream (err set if
// the stream ended with an error).
func (e *events[T, PT]) next() (*pb.ProcessEvent, error) {
	e.t.Helper()
	if !e.stream.Receive() {
		return nil, e.stream.Err()
	}
	ev := PT(e.stream.Msg()).GetEvent()
	if ev == nil {
		e.t.Fatalf("event %d: message without event", e.n)
	}
	if e.n == 0 && ev.GetStart() == nil {
		e.t.Fatalf("first event is %v, want start", ev)
	}
	if e.n > 0 && ev.GetStart() != nil {
		e.t.Fatalf("event %d: second start event %v", e.n, ev)
	}
	if e.res.end != nil {
		e.t.Fatalf("event %d after the end event: %v", e.n, ev)
	}
	e.n++
	switch v := ev.GetEvent().(type) {
	case *pb.ProcessEvent_Start:
		e.res.pid = v.Start.GetPid()
	case *pb.ProcessEvent_Data:
		e.res.data = append(e.res.data, v.Data)
		e.res.stdout.Write(v.Data.GetStdout())
		e.res.stderr.Write(v.Data.GetStderr())
		e.res.pty.Write(v.Data.GetPty())
	case *pb.ProcessEvent_End:
		e.res.end = v.End
	case *pb.ProcessEvent_Keepalive:
		e.res.keepalives++
	default:
		e.t.Fatalf("event %d has no payload", e.n)
	}
	return ev, nil
}

// until reads events until cond holds (fails the test if the stream ends).
func (e *events[T, PT]) until(what string, cond func(*result) bool) {
	e.t.Helper()
	for !cond(&e.res) {
		ev, err := e.next()
		if ev == nil {
			e.t.Fatalf("stream ended (err %v) before %s; stdout %q stderr %q pty %q", err, what,
				e.res.stdout.String(), e.res.stderr.String(), e.res.pty.String())
		}
	}
}

// finish reads to the end and requires a clean close after one end event.
func (e *events[T, PT]) finish() *result {
	e.t.Helper()
	for {
		ev, err := e.next()
		if ev != nil {
			continue
		}
		if err != nil {
			e.t.Fatalf("stream failed: %v (stdout %q stderr %q)", err, e.res.stdout.String(), e.res.stderr.String())
		}
		break
	}
	if e.res.end == nil {
		e.t.Fatal("stream closed without an end event")
	}
	return &e.res
}

// run starts req and reads its stream to the end.
func run(t *testing.T, c processconnect.ProcessClient, req *pb.StartRequest) *result {
	t.Helper()
	s, err := c.Start(testCtx(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer s.Close()
	return newEvents(t, s).finish()
}

// startErr starts req and returns the stream's error (nil if it succeeded).
func startErr(t *testing.T, c processconnect.ProcessClient, req *connect.Request[pb.StartRequest]) error {
	t.Helper()
	s, err := c.Start(testCtx(t), req)
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
	}
	return s.Err()
}

// wantCode fails unless err is a connect error with code and a message
// containing msg.
func wantCode(t *testing.T, err error, code connect.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %q", code, msg)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a connect error", err, err)
	}
	if ce.Code() != code {
		t.Fatalf("code = %v (%v), want %v", ce.Code(), err, code)
	}
	if !strings.Contains(ce.Message(), msg) {
		t.Fatalf("message %q does not contain %q", ce.Message(), msg)
	}
}

func pidSel(pid uint32) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
}

func tagSel(tag string) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: tag}}
}

// waitGone polls until pid no longer runs (gone or a zombie of someone else).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running: %s", pid, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listed reports whether pid is in List.
func listed(t *testing.T, c processconnect.ProcessClient, pid uint32) *pb.ProcessInfo {
	t.Helper()
	resp, err := c.List(testCtx(t), connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, p := range resp.Msg.GetProcesses() {
		if p.GetPid() == pid {
			return p
		}
	}
	return nil
}

// waitUnlisted polls List until pid leaves it.
func waitUnlisted(t *testing.T, c processconnect.ProcessClient, pid uint32) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for listed(t, c, pid) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still listed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func kill(t *testing.T, c processconnect.ProcessClient, pid uint32) {
	t.Helper()
	_, _ = c.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{
		Process: pidSel(pid), Signal: pb.Signal_SIGNAL_SIGKILL,
	}))
}
