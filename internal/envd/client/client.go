// Package client is the control plane's Go client of envd, the daemon inside
// every sandbox: health, /init, file uploads and running commands through
// the process.Process Connect service. It reaches envd through any dialer
// (normally runtime.Runtime.Dial) and imports nothing of the control plane.
package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"

	pb "github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
)

// Dialer opens a connection to envd's port in the sandbox.
type Dialer func(ctx context.Context) (net.Conn, error)

// Client talks to one sandbox's envd. Close releases its connections.
type Client struct {
	http  *http.Client
	tr    *http.Transport
	proc  processconnect.ProcessClient
	token string
}

// baseURL is a placeholder host: every connection goes through the dialer.
const baseURL = "http://envd"

// New returns a client that reaches envd through dial. token, if not
// empty, is sent as X-Access-Token.
func New(dial Dialer, token string) *Client {
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	c := &Client{http: &http.Client{Transport: tr}, tr: tr, token: token}
	// JSON and no compression, as the SDKs use envd.
	c.proc = processconnect.NewProcessClient(c.http, baseURL, connect.WithProtoJSON(), connect.WithAcceptCompression("gzip", nil, nil))
	return c
}

// Close drops the client's idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

func (c *Client) header(h http.Header, user string) {
	if c.token != "" {
		h.Set("X-Access-Token", c.token)
	}
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
}

// WaitHealthy polls GET /health until envd answers 204 or ctx ends.
func (c *Client) WaitHealthy(ctx context.Context) error {
	delay := time.Millisecond
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/health", nil)
		res, err := c.http.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd did not become healthy: %w (last: %v)", ctx.Err(), last)
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay += delay/2 + 1
		}
	}
}

// Init is envd's POST /init body.
type Init struct {
	EnvVars        map[string]string `json:"envVars"`
	AccessToken    *string           `json:"accessToken,omitempty"`
	Timestamp      time.Time         `json:"timestamp"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
}

// Init posts /init.
func (c *Client) Init(ctx context.Context, in Init) error {
	raw, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/init", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	c.header(req.Header, "")
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("envd /init: %w", err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusOK {
		return fmt.Errorf("envd /init: status %d: %s", res.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// Upload writes body (size bytes) to path in the sandbox as user (parent
// directories are created, owned by the user).
func (c *Client) Upload(ctx context.Context, path, user string, body io.Reader, size int64) error {
	q := url.Values{"path": {path}}
	if user != "" {
		q.Set("username", user)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/files?"+q.Encode(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	c.header(req.Header, "")
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("upload %s: status %d: %s", path, res.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// Command is a process to run in the sandbox.
type Command struct {
	// Cmd and Args are the program and its arguments (no shell).
	Cmd  string
	Args []string
	// User runs the process; empty means envd's default user.
	User string
	// Cwd is the working directory; empty means envd's default.
	Cwd string
	// Env is added to the process's environment.
	Env map[string]string
	// Tag names the process in envd's process list.
	Tag string
}

// Shell returns a Command running script with `/bin/bash -l -c`, as the
// SDKs' commands.run does.
func Shell(script, user, cwd string, env map[string]string) Command {
	return Command{Cmd: "/bin/bash", Args: []string{"-l", "-c", script}, User: user, Cwd: cwd, Env: env}
}

// Output receives a process's output chunks; stderr tells which stream.
type Output func(data []byte, stderr bool)

// ExitError is a process that ended with a non-zero status.
type ExitError struct {
	Code   int
	Status string
}

func (e *ExitError) Error() string {
	if e.Status != "" {
		return fmt.Sprintf("exited with code %d (%s)", e.Code, e.Status)
	}
	return fmt.Sprintf("exited with code %d", e.Code)
}

// Process is a started process whose events are being received.
type Process struct {
	PID    uint32
	stream *connect.ServerStreamForClient[pb.StartResponse]
	cancel context.CancelFunc
}

// Start starts cmd and returns once envd reported it running. The process
// is tied to ctx only through the stream: cancelling ctx (or Detach) drops
// the stream and the process keeps running. A deadline on ctx is sent to
// envd, which kills the process when it passes; use a context without one
// for background processes.
func (c *Client) Start(ctx context.Context, cmd Command) (*Process, error) {
	ctx, cancel := context.WithCancel(ctx)
	stdin := false
	req := connect.NewRequest(&pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: cmd.Cmd, Args: cmd.Args, Envs: cmd.Env},
		Stdin:   &stdin,
	})
	if cmd.Cwd != "" {
		req.Msg.Process.Cwd = &cmd.Cwd
	}
	if cmd.Tag != "" {
		req.Msg.Tag = &cmd.Tag
	}
	c.header(req.Header(), cmd.User)
	stream, err := c.proc.Start(ctx, req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", cmd.Cmd, err)
	}
	if !stream.Receive() {
		err := stream.Err()
		stream.Close()
		cancel()
		if err == nil {
			err = errors.New("stream ended before the start event")
		}
		return nil, fmt.Errorf("start %s: %w", cmd.Cmd, err)
	}
	start := stream.Msg().GetEvent().GetStart()
	if start == nil {
		stream.Close()
		cancel()
		return nil, fmt.Errorf("start %s: first event is not a start event", cmd.Cmd)
	}
	return &Process{PID: start.GetPid(), stream: stream, cancel: cancel}, nil
}

// Wait receives the process's output (passed to out, which may be nil)
// until it ends; a non-zero exit is an *ExitError.
func (p *Process) Wait(out Output) error {
	defer p.Detach()
	for p.stream.Receive() {
		ev := p.stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil && out != nil {
			if b := d.GetStdout(); len(b) > 0 {
				out(b, false)
			}
			if b := d.GetStderr(); len(b) > 0 {
				out(b, true)
			}
		}
		if end := ev.GetEnd(); end != nil {
			if end.GetError() != "" && !end.GetExited() {
				return fmt.Errorf("process %d: %s", p.PID, end.GetError())
			}
			if end.GetExitCode() != 0 {
				return &ExitError{Code: int(end.GetExitCode()), Status: end.GetStatus()}
			}
			return nil
		}
	}
	if err := p.stream.Err(); err != nil {
		return fmt.Errorf("process %d: %w", p.PID, err)
	}
	return fmt.Errorf("process %d: stream ended without an end event", p.PID)
}

// Detach drops the event stream; the process keeps running.
func (p *Process) Detach() {
	p.cancel()
	p.stream.Close()
}

// Run starts cmd and waits for it to end.
func (c *Client) Run(ctx context.Context, cmd Command, out Output) error {
	p, err := c.Start(ctx, cmd)
	if err != nil {
		return err
	}
	return p.Wait(out)
}

// StartSpec is a sandbox's start command and the ready command that tells
// when it is up (E2B's startCmd and readyCmd).
type StartSpec struct {
	Start, Ready  string
	User, Workdir string
	// Interval between ready command attempts (default 100 ms).
	Interval time.Duration
	// Output, if not nil, receives the start command's output lines.
	Output func(line string)
}

// StartAndWait starts s.Start in the background (it keeps running after
// the call) and runs s.Ready until it exits 0, until ctx ends (the error
// then says what the ready command last did), or until the start command
// fails. Both run through `/bin/bash -l -c` as s.User.
func (c *Client) StartAndWait(ctx context.Context, s StartSpec) error {
	if s.Interval <= 0 {
		s.Interval = 100 * time.Millisecond
	}
	ended := make(chan error, 1)
	if s.Start != "" {
		// No deadline: envd would kill the process when it passed.
		bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
		p, err := c.Start(bg, Shell(s.Start, s.User, s.Workdir, nil))
		if err != nil {
			cancel()
			return fmt.Errorf("start command %q: %w", s.Start, err)
		}
		var lw lineBuffer
		go func() { // ends when the process ends or the stream is dropped below
			err := p.Wait(func(b []byte, _ bool) { lw.write(b, s.Output) })
			lw.flush(s.Output)
			ended <- err
		}()
		defer func() {
			cancel()
			p.Detach()
		}()
	}
	if s.Ready == "" {
		return nil
	}
	var last string
	for attempt := 1; ; attempt++ {
		var out bytes.Buffer
		err := c.Run(ctx, Shell(s.Ready, s.User, s.Workdir, nil), func(b []byte, _ bool) {
			if out.Len() < 4096 {
				out.Write(b)
			}
		})
		if err == nil {
			return nil
		}
		last = fmt.Sprintf("attempt %d: %v", attempt, err)
		if o := bytes.TrimSpace(out.Bytes()); len(o) > 0 {
			last += ": " + string(o)
		}
		select {
		case err := <-ended:
			if err != nil {
				return fmt.Errorf("start command %q failed before the ready command %q passed: %w", s.Start, s.Ready, err)
			}
			ended = nil // it exited 0 (daemonised, say): keep waiting for readiness
		default:
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ready command %q did not succeed in time (%v); last %s", s.Ready, ctx.Err(), last)
		case <-time.After(s.Interval):
		}
	}
}

// lineBuffer splits output chunks into lines.
type lineBuffer struct{ buf bytes.Buffer }

func (l *lineBuffer) write(b []byte, emit func(string)) {
	if emit == nil {
		return
	}
	l.buf.Write(b)
	for {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			return
		}
		emit(string(bytes.TrimRight(l.buf.Next(i+1), "\r\n")))
	}
}

func (l *lineBuffer) flush(emit func(string)) {
	if emit != nil && l.buf.Len() > 0 {
		emit(l.buf.String())
		l.buf.Reset()
	}
}
