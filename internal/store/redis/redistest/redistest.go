// Package redistest runs a throwaway redis-server for tests: its own port,
// its own temp directory, no persistence, stopped when the test ends. Tests
// that need Redis use a real server through it, never a fake.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is one running redis-server.
type Server struct {
	// URL reaches the server, e.g. redis://127.0.0.1:41234/0.
	URL string
	// Addr is its host:port.
	Addr string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	log  *syncBuffer
}

// Start starts a redis-server and registers its stop with t.Cleanup. It
// fails the test (never skips) when the binary is missing or the server
// does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is required for this test and was not found in PATH (install the Debian package redis-server; scripts/setup.sh does): %v", err)
	}
	dir := t.TempDir()
	var lastLog string
	for attempt := 0; attempt < 5; attempt++ {
		s, err := start(bin, dir)
		if err == nil {
			t.Cleanup(func() {
				if err := s.stop(); err != nil {
					t.Errorf("stop redis-server: %v\n%s", err, s.log.String())
				}
			})
			return s
		}
		lastLog = err.Error()
		if !strings.Contains(lastLog, "Address already in use") {
			break
		}
	}
	t.Fatalf("start redis-server: %s", lastLog)
	return nil
}

func start(bin, dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{
		URL:  "redis://" + addr + "/0",
		Addr: addr,
		done: make(chan struct{}),
		log:  &syncBuffer{},
	}
	s.cmd = exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
		"--logfile", "",
	)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	// The server dies with the test binary even if cleanup never runs.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ping(addr) == nil {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("redis-server on %s exited: %s\n%s", addr, s.cmd.ProcessState, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer PING within 15s:\n%s", addr, s.log.String())
		}
	}
}

// Log returns what the server printed so far.
func (s *Server) Log() string { return s.log.String() }

// stop sends SIGTERM and waits for the exit, killing after 10 s.
func (s *Server) stop() error {
	select {
	case <-s.done:
		return nil // already gone
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal pid %d: %w", s.cmd.Process.Pid, err)
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("pid %d ignored SIGTERM for 10s and was killed", s.cmd.Process.Pid)
	}
}

// ping sends one RESP PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer is a bytes.Buffer safe for the writers exec gives it and a
// concurrent reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
