package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
	"github.com/paddockhq/paddock/internal/runtime"
)

func init() {
	subcommands["envd"] = subcommand{"envd in one sandbox directly (dial in its netns) vs through paddock's proxy: /health, commands, stdout stream", runEnvd}
}

// apiClient is a small client of the Platform API (create, kill).
type apiClient struct {
	base, key string
	http      *http.Client
}

type createdSandbox struct {
	SandboxID       string `json:"sandboxID"`
	EnvdAccessToken string `json:"envdAccessToken"`
}

func (a *apiClient) create(ctx context.Context) (createdSandbox, error) {
	var out createdSandbox
	body := []byte(`{"templateID":"base","timeout":900}`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/sandboxes", bytes.NewReader(body))
	req.Header.Set("X-API-KEY", a.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := a.http.Do(req)
	if err != nil {
		return out, fmt.Errorf("create sandbox: %w", err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		return out, fmt.Errorf("create sandbox: status %d: %s", res.StatusCode, bytes.TrimSpace(raw))
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.SandboxID == "" {
		return out, fmt.Errorf("create sandbox: bad response %q: %v", raw, err)
	}
	return out, nil
}

func (a *apiClient) kill(ctx context.Context, id string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, a.base+"/sandboxes/"+id, nil)
	req.Header.Set("X-API-KEY", a.key)
	res, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("kill sandbox %s: %w", id, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusOK {
		return fmt.Errorf("kill sandbox %s: status %d", id, res.StatusCode)
	}
	return nil
}

// dialInNetns connects to addr from inside the network namespace at path,
// as Paddock's proxy does (a socket made by a thread that joined the
// namespace belongs to it).
func dialInNetns(ctx context.Context, path, addr string) (net.Conn, error) {
	ns, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer unix.Close(ns)
	goruntime.LockOSThread()
	host, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		goruntime.UnlockOSThread()
		return nil, err
	}
	defer unix.Close(host)
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		goruntime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", path, err)
	}
	var d net.Dialer
	conn, derr := d.DialContext(ctx, "tcp4", addr)
	if err := unix.Setns(host, unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime discards it when the
		// goroutine ends rather than reuse a thread in the wrong namespace.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("setns back: %w", err)
	}
	goruntime.UnlockOSThread()
	return conn, derr
}

// headerTransport sets fixed headers on every request.
type headerTransport struct {
	base    http.RoundTripper
	headers http.Header
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header[k] = v
	}
	return t.base.RoundTrip(r)
}

// envdPath is one way to reach envd: its base URL and HTTP client.
type envdPath struct {
	name string
	base string
	http *http.Client
	proc processconnect.ProcessClient
}

func newEnvdPath(name, base string, dial func(ctx context.Context) (net.Conn, error), headers http.Header) *envdPath {
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConnsPerHost: 4,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	c := &http.Client{Transport: headerTransport{base: tr, headers: headers}}
	return &envdPath{
		name: name, base: base, http: c,
		// The SDK speaks Connect with JSON (useBinaryFormat: false).
		proc: processconnect.NewProcessClient(c, base, connect.WithProtoJSON(), connect.WithAcceptCompression("gzip", nil, nil)), // as the SDKs: no compression
	}
}

func (p *envdPath) health(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/health", nil)
	res, err := p.http.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		return fmt.Errorf("%s /health: status %d", p.name, res.StatusCode)
	}
	return nil
}

// run runs `bash -l -c cmd` as the SDK's commands.run does and returns the
// bytes of stdout it streamed.
func (p *envdPath) run(ctx context.Context, cmd string) (int64, error) {
	return p.start(ctx, &process.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", cmd}})
}

// exec runs cmd itself (no shell) and waits for its end event.
func (p *envdPath) exec(ctx context.Context, cmd string) error {
	_, err := p.start(ctx, &process.ProcessConfig{Cmd: cmd})
	return err
}

// start starts a process, reads its stream to the end and returns the bytes
// of stdout; the process must exit 0.
func (p *envdPath) start(ctx context.Context, proc *process.ProcessConfig) (int64, error) {
	name := strings.Join(append([]string{proc.Cmd}, proc.Args...), " ")
	stdin := false
	req := connect.NewRequest(&process.StartRequest{Process: proc, Stdin: &stdin})
	req.Header().Set("Keepalive-Ping-Interval", "50")
	stream, err := p.proc.Start(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("%s: start %q: %w", p.name, name, err)
	}
	defer stream.Close()
	var n int64
	ended := false
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil {
			n += int64(len(d.GetStdout()))
		}
		if e := ev.GetEnd(); e != nil {
			ended = true
			if !e.GetExited() || e.GetExitCode() != 0 {
				return n, fmt.Errorf("%s: %q ended: exit %d %s", p.name, name, e.GetExitCode(), e.GetError())
			}
		}
	}
	if err := stream.Err(); err != nil {
		return n, fmt.Errorf("%s: %q: %w", p.name, name, err)
	}
	if !ended {
		return n, fmt.Errorf("%s: %q: stream ended without an end event", p.name, name)
	}
	return n, nil
}

func runEnvd(args []string) (*result, error) {
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	api := fs.String("api", "", "paddock serve base URL, e.g. http://127.0.0.1:3000")
	key := fs.String("key", os.Getenv("PADDOCK_API_KEY"), "API key (default $PADDOCK_API_KEY)")
	netnsDir := fs.String("netns-dir", "/run/paddock/netns", "where paddock's network manager keeps namespace files")
	n := fs.Int("n", 200, "runs of each request kind per path")
	streamMiB := fs.Int("stream-mib", 64, "MiB streamed per stdout run")
	streamRuns := fs.Int("stream-runs", 3, "stdout stream runs per path")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *api == "" || *key == "" {
		return nil, errors.New("--api and --key are required")
	}
	ctx := context.Background()
	a := &apiClient{base: *api, key: *key, http: &http.Client{Timeout: time.Minute}}
	sb, err := a.create(ctx)
	if err != nil {
		return nil, err
	}
	defer a.kill(context.Background(), sb.SandboxID)

	nsPath := filepath.Join(*netnsDir, sb.SandboxID)
	if _, err := os.Stat(nsPath); err != nil {
		return nil, fmt.Errorf("sandbox network namespace: %w", err)
	}
	envdAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(runtime.EnvdPort))
	tok := http.Header{"X-Access-Token": {sb.EnvdAccessToken}}
	direct := newEnvdPath("direct", "http://"+envdAddr,
		func(ctx context.Context) (net.Conn, error) { return dialInNetns(ctx, nsPath, envdAddr) }, tok)
	proxied := tok.Clone()
	proxied.Set("E2b-Sandbox-Id", sb.SandboxID)
	proxied.Set("E2b-Sandbox-Port", strconv.Itoa(runtime.EnvdPort))
	var d net.Dialer
	apiAddr := (*api)[len("http://"):]
	proxy := newEnvdPath("proxy", *api,
		func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", apiAddr) }, proxied)
	// The floor of any proxy: a plain TCP relay on the host (no HTTP, the
	// kernel splices the bytes) in front of the same netns dial.
	rl, err := startRelay(func(ctx context.Context) (net.Conn, error) { return dialInNetns(ctx, nsPath, envdAddr) })
	if err != nil {
		return nil, err
	}
	defer rl.Close()
	relayAddr := rl.Addr().String()
	relay := newEnvdPath("relay", "http://"+relayAddr,
		func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", relayAddr) }, tok)
	paths := []*envdPath{direct, relay, proxy}

	res := newResult()
	res.Values["sandbox_created"] = 1
	// Interleave the two paths so drift in machine load hits both alike.
	for i := -10; i < *n; i++ {
		for _, p := range paths {
			t0 := time.Now()
			if err := p.health(ctx); err != nil {
				return nil, err
			}
			if i >= 0 {
				res.add("health_"+p.name, time.Since(t0))
			}
		}
	}
	for i := -10; i < *n; i++ {
		for _, p := range paths {
			t0 := time.Now()
			if _, err := p.run(ctx, "true"); err != nil {
				return nil, err
			}
			if i >= 0 {
				res.add("run_true_"+p.name, time.Since(t0))
			}
		}
	}
	// The proxy's cost without a shell's variance: a unary RPC, and a
	// streamed one (process.Start of /bin/true itself: start and end events).
	for i := -10; i < *n; i++ {
		for _, p := range paths {
			t0 := time.Now()
			if _, err := p.proc.List(ctx, connect.NewRequest(&process.ListRequest{})); err != nil {
				return nil, fmt.Errorf("%s: process.List: %w", p.name, err)
			}
			if i >= 0 {
				res.add("list_"+p.name, time.Since(t0))
			}
			t0 = time.Now()
			if err := p.exec(ctx, "/bin/true"); err != nil {
				return nil, err
			}
			if i >= 0 {
				res.add("exec_true_"+p.name, time.Since(t0))
			}
		}
	}
	size := int64(*streamMiB) << 20
	for i := -1; i < *streamRuns; i++ {
		for _, p := range paths {
			t0 := time.Now()
			got, err := p.run(ctx, fmt.Sprintf("head -c %d /dev/zero", size))
			if err != nil {
				return nil, err
			}
			if got != size {
				return nil, fmt.Errorf("%s: streamed %d bytes, want %d", p.name, got, size)
			}
			if i >= 0 {
				res.add("stream_"+p.name, time.Since(t0))
			}
		}
	}
	res.Values["stream_bytes"] = float64(size)
	res.note("Go client (connect-go, Connect JSON as the SDK, HTTP/1.1 keep-alive); direct = socket made inside the sandbox's netns to envd on 127.0.0.1 (what the proxy dials), proxy = paddock serve's listener with E2b-Sandbox-Id/Port headers, relay = a bare TCP relay on the host in front of the direct dial (io.Copy both ways, spliced by the kernel): what any proxy process costs at least")
	return res, nil
}

// startRelay listens on loopback and relays every accepted connection, byte
// for byte, to a connection from dial. Close stops it.
func startRelay(dial func(ctx context.Context) (net.Conn, error)) (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed
			}
			go func() {
				defer c.Close()
				up, err := dial(context.Background())
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return l, nil
}
