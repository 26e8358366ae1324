package codeinterp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Languages a context can run.
const (
	langPython     = "python"
	langJavaScript = "javascript"
	langTypeScript = "typescript"
	langBash       = "bash"
)

// normalizeLanguage maps a requested language to the one a context runs,
// as E2B's server does: lower-cased and trimmed, empty means python, js and
// ts are aliases.
func normalizeLanguage(l string) (string, error) {
	switch l = strings.ToLower(strings.TrimSpace(l)); l {
	case "", langPython:
		return langPython, nil
	case "js", langJavaScript:
		return langJavaScript, nil
	case "ts", langTypeScript:
		return langTypeScript, nil
	case langBash:
		return langBash, nil
	}
	return "", fmt.Errorf("language %q is not supported (python, javascript, typescript, bash)", l)
}

// kernel is one running interpreter behind a context. Its execute and
// setup are called by one goroutine at a time (the context's queue
// serialises them); close may come from anywhere.
type kernel interface {
	// execute runs code, handing its outputs to out in order, and returns
	// when the kernel is idle again or gone. out is never called after
	// execute returns. When ctx ends first (the client went away), the code
	// is interrupted like with Ctrl-C, and the kernel killed if it does not
	// stop. A *endError tells why the kernel went away.
	execute(ctx context.Context, code string, out func(event)) error
	// setup runs code for its side effects only: no output, no execution
	// count. It fails when the code raised an error.
	setup(ctx context.Context, code string) error
	// close kills the kernel; an execution in flight ends with reason.
	close(reason *endError)
	// done is closed once the kernel is gone (closed or crashed).
	done() <-chan struct{}
	// setEnvCode and unsetEnvCode are the code setting and removing
	// environment variables in this kernel's language.
	setEnvCode(vars map[string]string) string
	unsetEnvCode(keys []string) string
}

// endError ends an execution with an error event when its kernel goes away.
type endError struct {
	name, value string
}

func (e *endError) Error() string { return e.name + ": " + e.value }

var (
	errRestarting = &endError{"ContextRestarting", "Context was restarted"}
	errRemoved    = &endError{"UnexpectedEndOfExecution", "Connection to the execution was closed before the execution was finished"}
	errStuck      = &endError{"ContextRestarting", "Context was restarted: the execution did not stop when interrupted"}
)

// asEndError turns any error of an execution into the error event's name and
// value.
func asEndError(err error) *endError {
	var e *endError
	if errors.As(err, &e) {
		return e
	}
	return &endError{"UnexpectedEndOfExecution", err.Error()}
}

// interruptGrace is how long an interrupted execution may take to stop
// before its kernel is killed (and restarted on the next execution).
var interruptGrace = 10 * time.Second

// guard calls interrupt when ctx ends before the execution does, and kill
// when the interrupt is not obeyed within interruptGrace. The returned
// function ends the watch; call it when the execution returns.
func guard(ctx context.Context, log *slog.Logger, interrupt, kill func()) (stop func()) {
	var (
		mu       sync.Mutex
		finished bool
		timer    *time.Timer
	)
	stopAfter := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return
		}
		log.Info("client went away during an execution: interrupting it")
		interrupt()
		timer = time.AfterFunc(interruptGrace, func() {
			log.Warn("execution did not stop when interrupted: killing the kernel")
			kill()
		})
	})
	return func() {
		stopAfter()
		mu.Lock()
		finished = true
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
	}
}

// killGroup sends sig to the process group led by pid (kernels are started
// as group leaders, so their children get the signal too).
func killGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

// kernelSysProcAttr starts a kernel as the leader of its own process group,
// killed when the server dies.
func kernelSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// tailWriter keeps the last bytes a kernel wrote to its own stdout/stderr
// (for the error when it fails to start) and logs them at debug level.
type tailWriter struct {
	mu   sync.Mutex
	buf  []byte
	log  *slog.Logger
	size int
}

func newTailWriter(log *slog.Logger) *tailWriter { return &tailWriter{log: log, size: 4096} }

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.size {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.size:]...)
	}
	w.mu.Unlock()
	w.log.Debug("kernel output", "text", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(string(w.buf))
}

var _ io.Writer = (*tailWriter)(nil)

// kernelEnv is the environment a kernel process starts with: the server's,
// plus extra (which wins).
func kernelEnv(extra ...string) []string {
	env := os.Environ()
	keys := map[string]bool{}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	out := make([]string, 0, len(env)+len(extra))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !keys[k] {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}
