package client_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/envd"
	"github.com/paddockhq/paddock/internal/envd/client"
)

// newEnvd serves a real envd on a loopback port (it runs processes on this
// host and switches users: the tests need root) and returns a client of it.
// Login shells run as nobody: root's dotfiles on a developer host may
// block (a pyenv rehash lock, say).
func newEnvd(t *testing.T) *client.Client {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the envd client tests need root (envd switches users)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := envd.New(envd.Config{})
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Close(ctx)
		<-done
	})
	c := client.New(func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
	}, "")
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRunOutputAndExitCode(t *testing.T) {
	c := newEnvd(t)
	ctx := context.Background()
	var mu sync.Mutex
	var out, errOut strings.Builder
	err := c.Run(ctx, client.Shell("echo out; echo err >&2; echo $GREETING", shellUser, "/", map[string]string{"GREETING": "hi"}), func(b []byte, stderr bool) {
		mu.Lock()
		defer mu.Unlock()
		if stderr {
			errOut.Write(b)
		} else {
			out.Write(b)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "out\nhi\n" || errOut.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errOut.String())
	}
	err = c.Run(ctx, client.Shell("exit 7", shellUser, "/", nil), nil)
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.Code != 7 {
		t.Errorf("exit 7: %v, want ExitError code 7", err)
	}
	if err := c.Run(ctx, client.Command{Cmd: "/nonexistent/binary", User: "root"}, nil); err == nil {
		t.Errorf("starting a missing binary succeeded")
	}
}

func TestUploadAndInit(t *testing.T) {
	c := newEnvd(t)
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "f.txt")
	if err := c.Upload(ctx, p, "root", strings.NewReader("content"), 7); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "content" {
		t.Errorf("uploaded file: %q, %v", b, err)
	}
	if err := c.Init(ctx, client.Init{EnvVars: map[string]string{"FROM_INIT": "yes"}, Timestamp: time.Now(), DefaultUser: "root", DefaultWorkdir: dir}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := c.Run(ctx, client.Command{Cmd: "/bin/sh", Args: []string{"-c", "echo $FROM_INIT; pwd"}}, func(b []byte, _ bool) { out.Write(b) }); err != nil {
		t.Fatal(err)
	}
	if out.String() != "yes\n"+dir+"\n" {
		t.Errorf("after /init: %q", out.String())
	}
}

// shellUser runs the login shells of the tests.
const shellUser = "nobody"

// sharedDir is a temporary directory shellUser may write to.
func sharedDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "envd-client-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestStartAndWait(t *testing.T) {
	c := newEnvd(t)
	dir := sharedDir(t)
	flag := filepath.Join(dir, "ready")

	// Ready once the start command created the file; the start command keeps running.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var lines []string
	var mu sync.Mutex
	err := c.StartAndWait(ctx, client.StartSpec{
		Start: "echo starting; sleep 0.3; touch " + flag + "; echo $$ > " + dir + "/pid; exec sleep 60",
		Ready: "test -f " + flag, User: shellUser, Workdir: dir,
		Output: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() },
	})
	if err != nil {
		t.Fatalf("StartAndWait: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	pid, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strings.TrimSpace(string(pid))); err != nil {
		t.Errorf("the start command does not run after StartAndWait returned: %v", err)
	}
	mu.Lock()
	if len(lines) == 0 || lines[0] != "starting" {
		t.Errorf("start command output lines: %q", lines)
	}
	mu.Unlock()

	// A start command that fails before readiness fails the wait at once.
	t0 := time.Now()
	err = c.StartAndWait(ctx, client.StartSpec{Start: "exit 4", Ready: "false", User: shellUser, Workdir: dir})
	if err == nil || !strings.Contains(err.Error(), "start command") || !strings.Contains(err.Error(), "code 4") {
		t.Errorf("failing start command: %v", err)
	}
	if time.Since(t0) > 10*time.Second {
		t.Errorf("a failed start command was noticed after %v", time.Since(t0))
	}

	// A ready command that never passes ends with the deadline and says why.
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	err = c.StartAndWait(short, client.StartSpec{Ready: "echo not yet; exit 1", User: shellUser, Workdir: dir})
	if err == nil || !strings.Contains(err.Error(), "did not succeed in time") || !strings.Contains(err.Error(), "not yet") {
		t.Errorf("ready command never passing: %v", err)
	}
}
