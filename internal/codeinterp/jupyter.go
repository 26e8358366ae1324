package codeinterp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/google/uuid"
)

// jupyterKernel is a Jupyter kernel process (ipykernel) and the client side
// of its shell and iopub channels. The kernel binds its sockets on ipc
// endpoints in a private directory; there is no TCP port to guard. Control,
// stdin and heartbeat are not connected: interrupts and shutdowns go to the
// process group as signals, executions never allow stdin (like E2B), and
// liveness comes from waiting on the process.
type jupyterKernel struct {
	log     *slog.Logger
	sign    signer
	session string
	dir     string
	cmd     *exec.Cmd
	output  *tailWriter

	shell, iopub zmq4.Socket

	mu      sync.Mutex
	pending map[string]*jpending

	// The execution in flight, for interrupts: SIGINT only reaches the code
	// once the kernel handles the request (it ignores SIGINT when idle).
	imu         sync.Mutex
	running     bool // an execute_request is in flight
	started     bool // the kernel said busy for it
	interrupted bool // an interrupt was asked for

	exited    chan struct{} // the process has been reaped
	gone      chan struct{} // closed by close (or when the process exits)
	goneOnce  sync.Once
	goneErr   *endError
	readers   sync.WaitGroup
	closeOnce sync.Once
}

// jpending collects the messages whose parent is one request.
type jpending struct {
	ch   chan jmessage
	done chan struct{}
}

// jupyterStartTimeout bounds how long a kernel may take to answer its first
// kernel_info_request.
var jupyterStartTimeout = 60 * time.Second

// startJupyter starts python -m ipykernel_launcher in cwd and connects to it.
func startJupyter(ctx context.Context, python, runtimeDir, cwd string, log *slog.Logger) (_ *jupyterKernel, err error) {
	dir, err := os.MkdirTemp(runtimeDir, "py-")
	if err != nil {
		return nil, fmt.Errorf("create kernel directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	keyBytes := make([]byte, 32)
	if _, err := rand.Read(keyBytes); err != nil {
		return nil, fmt.Errorf("generate kernel key: %w", err)
	}
	key := hex.EncodeToString(keyBytes)
	base := filepath.Join(dir, "k")
	conn, err := json.Marshal(map[string]any{
		"transport":        "ipc",
		"ip":               base,
		"shell_port":       1,
		"iopub_port":       2,
		"stdin_port":       3,
		"control_port":     4,
		"hb_port":          5,
		"key":              key,
		"signature_scheme": "hmac-sha256",
		"kernel_name":      "python3",
	})
	if err != nil {
		return nil, fmt.Errorf("encode connection file: %w", err)
	}
	connFile := filepath.Join(dir, "kernel.json")
	if err := os.WriteFile(connFile, conn, 0o600); err != nil {
		return nil, fmt.Errorf("write connection file: %w", err)
	}

	k := &jupyterKernel{
		log:     log,
		sign:    signer{key: []byte(key)},
		session: uuid.NewString(),
		dir:     dir,
		output:  newTailWriter(log),
		pending: map[string]*jpending{},
		exited:  make(chan struct{}),
		gone:    make(chan struct{}),
	}
	k.cmd = exec.Command(python, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", connFile,
		"--InteractiveShell.colors=NoColor", "--HistoryManager.hist_file=:memory:")
	k.cmd.Dir = cwd
	k.cmd.Env = kernelEnv(
		"MPLBACKEND=module://matplotlib_inline.backend_inline",
		"PYDEVD_DISABLE_FILE_VALIDATION=1",
	)
	k.cmd.Stdout, k.cmd.Stderr = k.output, k.output
	k.cmd.SysProcAttr = kernelSysProcAttr()
	if err := k.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", python, err)
	}
	go func() {
		_ = k.cmd.Wait()
		close(k.exited)
		k.setGone(errRestarting)
	}()
	defer func() {
		if err != nil {
			k.close(errRemoved)
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, jupyterStartTimeout)
	defer cancel()
	if err := k.connect(ctx, base); err != nil {
		return nil, err
	}
	if err := k.waitReady(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// failed explains a start failure, with what the kernel printed.
func (k *jupyterKernel) failed(what string, err error) error {
	select {
	case <-k.exited:
		return fmt.Errorf("%s: python kernel exited (%s): %s", what, k.cmd.ProcessState, k.output)
	default:
	}
	return fmt.Errorf("%s: %w", what, err)
}

// connect waits for the kernel to bind its sockets, then dials them.
func (k *jupyterKernel) connect(ctx context.Context, base string) error {
	shellPath, iopubPath := base+"-1", base+"-2"
	for {
		_, err1 := os.Stat(shellPath)
		_, err2 := os.Stat(iopubPath)
		if err1 == nil && err2 == nil {
			break
		}
		select {
		case <-k.exited:
			return k.failed("wait for kernel sockets", errors.New("exited"))
		case <-ctx.Done():
			return k.failed("wait for kernel sockets", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	// The sockets live as long as the kernel, not the request that started it.
	quiet := zmq4.WithLogger(log.New(io.Discard, "", 0))
	opts := []zmq4.Option{quiet, zmq4.WithDialerRetry(20 * time.Millisecond), zmq4.WithDialerMaxRetries(100)}
	k.shell = zmq4.NewDealer(context.Background(), opts...)
	k.iopub = zmq4.NewSub(context.Background(), opts...)
	if err := k.shell.Dial("ipc://" + shellPath); err != nil {
		return k.failed("connect to the shell channel", err)
	}
	if err := k.iopub.Dial("ipc://" + iopubPath); err != nil {
		return k.failed("connect to the iopub channel", err)
	}
	if err := k.iopub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		return k.failed("subscribe to iopub", err)
	}
	k.readers.Add(2)
	go k.read(k.shell)
	go k.read(k.iopub)
	return nil
}

// waitReady sends kernel_info_request until the kernel answers it on the
// shell channel and its status shows on iopub, which proves the iopub
// subscription is in place (a PUB socket drops what it sends before).
func (k *jupyterKernel) waitReady(ctx context.Context) error {
	for {
		p, msgID, err := k.request("kernel_info_request", struct{}{})
		if err != nil {
			return k.failed("send kernel_info_request", err)
		}
		replied, seen := false, false
		deadline := time.NewTimer(250 * time.Millisecond)
	wait:
		for {
			select {
			case m := <-p.ch:
				switch m.Header.MsgType {
				case "kernel_info_reply":
					replied = true
					deadline.Reset(250 * time.Millisecond)
				case "status":
					seen = true
				}
				if replied && seen {
					deadline.Stop()
					k.forget(msgID, p)
					return nil
				}
			case <-deadline.C:
				break wait
			case <-k.gone:
				deadline.Stop()
				k.forget(msgID, p)
				return k.failed("wait for the kernel", errors.New("gone"))
			case <-ctx.Done():
				deadline.Stop()
				k.forget(msgID, p)
				return k.failed("wait for the kernel", ctx.Err())
			}
		}
		k.forget(msgID, p)
	}
}

// read receives messages from one socket until it fails (the kernel died or
// the socket was closed) and hands them to the request they answer.
func (k *jupyterKernel) read(s zmq4.Socket) {
	defer k.readers.Done()
	for {
		raw, err := s.Recv()
		if err != nil {
			return
		}
		m, err := k.sign.decode(raw.Frames)
		if err != nil {
			k.log.Warn("dropping kernel message", "err", err)
			continue
		}
		k.mu.Lock()
		p := k.pending[m.ParentID]
		k.mu.Unlock()
		if p == nil {
			continue
		}
		select {
		case p.ch <- m:
		case <-p.done:
		case <-k.gone:
		}
	}
}

// request sends a shell request and registers for its replies.
func (k *jupyterKernel) request(msgType string, content any) (*jpending, string, error) {
	msgID, frames, err := k.sign.encode(k.session, msgType, content)
	if err != nil {
		return nil, "", err
	}
	p := &jpending{ch: make(chan jmessage, 64), done: make(chan struct{})}
	k.mu.Lock()
	k.pending[msgID] = p
	k.mu.Unlock()
	if err := k.shell.SendMulti(zmq4.NewMsgFrom(frames...)); err != nil {
		k.forget(msgID, p)
		return nil, "", fmt.Errorf("send %s: %w", msgType, err)
	}
	return p, msgID, nil
}

func (k *jupyterKernel) forget(msgID string, p *jpending) {
	k.mu.Lock()
	delete(k.pending, msgID)
	k.mu.Unlock()
	close(p.done)
}

type executeRequest struct {
	Code            string         `json:"code"`
	Silent          bool           `json:"silent"`
	StoreHistory    bool           `json:"store_history"`
	UserExpressions map[string]any `json:"user_expressions"`
	AllowStdin      bool           `json:"allow_stdin"`
	StopOnError     bool           `json:"stop_on_error"`
}

// run sends an execute_request and feeds what it produces to handle until
// the kernel reports idle for it. When ctx ends first, the execution is
// interrupted.
func (k *jupyterKernel) run(ctx context.Context, code string, silent bool, handle func(jmessage)) error {
	k.imu.Lock()
	k.running, k.started, k.interrupted = true, false, false
	k.imu.Unlock()
	defer func() {
		k.imu.Lock()
		k.running = false
		k.imu.Unlock()
	}()
	stop := guard(ctx, k.log, k.interrupt, func() { k.close(errStuck) })
	defer stop()
	p, msgID, err := k.request("execute_request", executeRequest{
		Code:            code,
		Silent:          silent,
		StoreHistory:    !silent,
		UserExpressions: map[string]any{},
		// Executions are queued here, not in the kernel: with stop_on_error
		// the kernel would abort the request that follows an error.
		StopOnError: false,
	})
	if err != nil {
		select {
		case <-k.gone:
			return k.goneErr
		default:
		}
		return err
	}
	defer k.forget(msgID, p)
	for {
		select {
		case m := <-p.ch:
			if m.Header.MsgType == "status" {
				var st struct {
					State string `json:"execution_state"`
				}
				if json.Unmarshal(m.Content, &st) != nil {
					continue
				}
				switch st.State {
				case "busy":
					k.imu.Lock()
					k.started = true
					want := k.interrupted
					k.imu.Unlock()
					if want {
						k.signal()
					}
				case "idle":
					return nil
				}
				continue
			}
			handle(m)
		case <-k.gone:
			return k.goneErr
		}
	}
}

type jerror struct {
	Name      string   `json:"ename"`
	Value     string   `json:"evalue"`
	Traceback []string `json:"traceback"`
}

func (k *jupyterKernel) execute(ctx context.Context, code string, out func(event)) error {
	errored := false
	return k.run(ctx, code, false, func(m jmessage) {
		switch m.Header.MsgType {
		case "execute_input":
			var c struct {
				Count int `json:"execution_count"`
			}
			if json.Unmarshal(m.Content, &c) == nil {
				out(countEvent(c.Count))
			}
		case "stream":
			var c struct {
				Name string `json:"name"`
				Text string `json:"text"`
			}
			if json.Unmarshal(m.Content, &c) == nil && (c.Name == typeStdout || c.Name == typeStderr) {
				out(streamEvent(c.Name, c.Text, m.Header.Date))
			}
		case "display_data", "execute_result":
			var c struct {
				Data map[string]json.RawMessage `json:"data"`
			}
			if json.Unmarshal(m.Content, &c) == nil {
				out(resultEvent(c.Data, m.Header.MsgType == "execute_result"))
			}
		case "error":
			var c jerror
			if !errored && json.Unmarshal(m.Content, &c) == nil {
				errored = true
				out(errorEvent(c.Name, c.Value, strings.Join(c.Traceback, "\n")))
			}
		case "execute_reply":
			var c struct {
				Status string `json:"status"`
			}
			if json.Unmarshal(m.Content, &c) == nil && (c.Status == "aborted" || c.Status == "abort") && !errored {
				errored = true
				out(errorEvent("ExecutionAborted", "Execution was aborted", ""))
			}
		}
	})
}

func (k *jupyterKernel) setup(ctx context.Context, code string) error {
	var failed *jerror
	done := make(chan error, 1)
	go func() {
		done <- k.run(context.Background(), code, true, func(m jmessage) {
			if m.Header.MsgType == "error" && failed == nil {
				failed = &jerror{}
				_ = json.Unmarshal(m.Content, failed)
			}
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
		if failed != nil {
			return fmt.Errorf("%s: %s", failed.Name, failed.Value)
		}
		return nil
	case <-ctx.Done():
		// A kernel that cannot run a one-liner is of no use any more.
		k.close(errStuck)
		<-done
		return fmt.Errorf("setup code: %w", ctx.Err())
	}
}

// interrupt sends SIGINT to the kernel's process group once the kernel
// handles the execution in flight (asked earlier, it is sent when the
// kernel reports busy).
func (k *jupyterKernel) interrupt() {
	k.imu.Lock()
	if !k.running {
		k.imu.Unlock()
		return
	}
	k.interrupted = true
	started := k.started
	k.imu.Unlock()
	if started {
		k.signal()
	}
}

func (k *jupyterKernel) signal() {
	if k.cmd.Process != nil {
		killGroup(k.cmd.Process.Pid, syscall.SIGINT)
	}
}

func (k *jupyterKernel) setGone(reason *endError) {
	k.goneOnce.Do(func() {
		k.goneErr = reason
		close(k.gone)
	})
}

func (k *jupyterKernel) done() <-chan struct{} { return k.gone }

func (k *jupyterKernel) close(reason *endError) {
	k.setGone(reason)
	k.closeOnce.Do(func() {
		if k.cmd.Process != nil {
			killGroup(k.cmd.Process.Pid, syscall.SIGKILL)
			<-k.exited
		}
		// With the kernel dead the sockets see EOF; the readers return once
		// Close ends their Recv.
		if k.shell != nil {
			_ = k.shell.Close()
		}
		if k.iopub != nil {
			_ = k.iopub.Close()
		}
		k.readers.Wait()
		_ = os.RemoveAll(k.dir)
	})
}

func (k *jupyterKernel) setEnvCode(vars map[string]string) string {
	b, _ := json.Marshal(vars) // a JSON object of strings is a Python dict literal
	return "__import__('os').environ.update(" + string(b) + ")"
}

func (k *jupyterKernel) unsetEnvCode(keys []string) string {
	b, _ := json.Marshal(keys)
	return "[__import__('os').environ.pop(k, None) for k in " + string(b) + "]"
}
