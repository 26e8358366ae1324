package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	pb "github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/internal/envd/process/reaper"
)

const (
	// stdChunk and ptyChunk bound one data event's payload.
	stdChunk = 32 << 10
	ptyChunk = 16 << 10
	// After the process exited, its output is read until EOF; but when a
	// background descendant keeps the pipes (or the terminal) open, reading
	// stops once no output came for drainIdle, and at the latest drainMax
	// after the exit (like exec.Cmd.WaitDelay).
	drainIdle = 200 * time.Millisecond
	drainMax  = time.Second
)

type outputKind int

const (
	outStdout outputKind = iota
	outStderr
	outPTY
)

// proc is one process started by the service, running or recently ended.
type proc struct {
	pid     int
	tag     *string
	config  *pb.ProcessConfig // as requested; read-only
	started time.Time

	master *os.File // PTY master; nil for a pipe process
	stdin  *os.File // write end of the stdin pipe; nil without one
	output []*os.File

	readers  sync.WaitGroup
	stall    time.Duration // see DefaultStallTimeout
	activity atomic.Int64  // unix nanos of the last output read or room made
	blocked  atomic.Int32  // readers waiting for a full subscriber

	writeMu sync.Mutex // serialises input writes

	mu          sync.Mutex
	subs        map[*subscriber]struct{}
	end         *pb.ProcessEvent // set once the process has ended
	stdinClosed bool
	timer       *time.Timer

	cut     chan struct{} // closed when output reading is cut off after the exit
	cutOnce sync.Once
}

func (p *proc) isPTY() bool { return p.master != nil }

// subscribe attaches a new subscriber. It returns nil when the process has
// already ended (then p.end is final).
func (p *proc) subscribe(limit int) *subscriber {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end != nil {
		return nil
	}
	s := newSubscriber(limit)
	p.subs[s] = struct{}{}
	return s
}

func (p *proc) unsubscribe(s *subscriber) {
	p.mu.Lock()
	delete(p.subs, s)
	p.mu.Unlock()
	s.detach()
}

// endEvent returns the end event, or nil while the process runs.
func (p *proc) endEvent() *pb.ProcessEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.end
}

// broadcast hands a data event to every subscriber without blocking on any,
// then waits for each subscriber whose queue is now full to make room. One
// that makes no progress for p.stall is dropped.
func (p *proc) broadcast(ev *pb.ProcessEvent, n int) {
	var full []*subscriber
	p.mu.Lock()
	for s := range p.subs {
		accepted, isFull := s.push(ev, n)
		switch {
		case !accepted:
			delete(p.subs, s)
		case isFull:
			full = append(full, s)
		}
	}
	p.mu.Unlock()
	for _, s := range full {
		p.blocked.Add(1)
		ok := s.waitRoom(p.stall, p.cut)
		p.blocked.Add(-1)
		if !ok {
			s.drop(p.stall)
			p.mu.Lock()
			delete(p.subs, s)
			p.mu.Unlock()
		}
	}
	p.activity.Store(time.Now().UnixNano())
}

// read forwards one output stream until EOF or until it is cut off.
func (p *proc) read(f *os.File, kind outputKind) {
	defer p.readers.Done()
	size := stdChunk
	if kind == outPTY {
		size = ptyChunk
	}
	buf := make([]byte, size)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			data := make([]byte, n)
			copy(data, buf[:n])
			p.broadcast(dataEvent(kind, data), n)
		}
		if err != nil {
			return // EOF, EIO (PTY slave closed) or the deadline set after exit
		}
	}
}

func dataEvent(kind outputKind, data []byte) *pb.ProcessEvent {
	d := &pb.ProcessEvent_DataEvent{}
	switch kind {
	case outStdout:
		d.Output = &pb.ProcessEvent_DataEvent_Stdout{Stdout: data}
	case outStderr:
		d.Output = &pb.ProcessEvent_DataEvent_Stderr{Stderr: data}
	default:
		d.Output = &pb.ProcessEvent_DataEvent_Pty{Pty: data}
	}
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: d}}
}

// wait collects the exit status, drains the output (see drainIdle and
// drainMax), releases the descriptors and publishes the end event.
func (p *proc) wait(exited <-chan reaper.Exit) {
	ex := <-exited
	p.mu.Lock()
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()

	exitAt := time.Now()
	drained := make(chan struct{})
	go func() { // ends once every reader has returned, which cutOutput forces
		p.readers.Wait()
		close(drained)
	}()
	tick := time.NewTicker(drainIdle / 4)
wait:
	for {
		select {
		case <-drained:
			break wait
		case now := <-tick.C:
			last := time.Unix(0, p.activity.Load())
			idle := p.blocked.Load() == 0 && now.Sub(last) >= drainIdle && now.Sub(exitAt) >= drainIdle
			if idle || now.Sub(exitAt) >= drainMax {
				p.cutOutput()
				<-drained
				break wait
			}
		}
	}
	tick.Stop()
	for _, f := range p.output {
		f.Close()
	}
	p.mu.Lock()
	p.stdinClosed = true
	p.mu.Unlock()
	if p.stdin != nil {
		p.stdin.Close()
	}

	end := &pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: exitEvent(ex)}}
	p.mu.Lock()
	p.end = end
	for s := range p.subs {
		s.finish(end)
	}
	p.subs = nil
	p.mu.Unlock()
}

// cutOutput makes the output readers return: a read deadline in the past,
// or closing the descriptor where deadlines are not supported.
func (p *proc) cutOutput() {
	p.cutOnce.Do(func() { close(p.cut) })
	for _, f := range p.output {
		if err := f.SetReadDeadline(time.Now()); err != nil {
			f.Close()
		}
	}
}

// exitEvent renders an exit like Go's os.ProcessState: ExitCode, Exited and
// String, and the error cmd.Wait would return.
func exitEvent(ex reaper.Exit) *pb.ProcessEvent_EndEvent {
	if ex.Err != nil {
		msg := ex.Err.Error()
		return &pb.ProcessEvent_EndEvent{ExitCode: -1, Status: "unknown", Error: &msg}
	}
	ws := ex.Status
	ev := &pb.ProcessEvent_EndEvent{ExitCode: -1, Exited: ws.Exited(), Status: statusString(ws)}
	if ws.Exited() {
		ev.ExitCode = int32(ws.ExitStatus())
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		msg := ev.Status
		ev.Error = &msg
	}
	return ev
}

// statusString matches (*os.ProcessState).String on Linux.
func statusString(ws syscall.WaitStatus) string {
	var res string
	switch {
	case ws.Exited():
		res = "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		res = "signal: " + ws.Signal().String()
	case ws.Stopped():
		res = "stop signal: " + ws.StopSignal().String()
		if ws.StopSignal() == syscall.SIGTRAP && ws.TrapCause() != 0 {
			res += " (trap " + strconv.Itoa(ws.TrapCause()) + ")"
		}
	case ws.Continued():
		res = "continued"
	}
	if ws.CoreDump() {
		res += " (core dumped)"
	}
	return res
}

// writeInput writes one input chunk to the process's stdin pipe or PTY.
func (p *proc) writeInput(ctx context.Context, in *pb.ProcessInput) error {
	var (
		data []byte
		dst  *os.File
		what string
	)
	switch v := in.GetInput().(type) {
	case *pb.ProcessInput_Stdin:
		if p.isPTY() {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"process %d runs in a pseudo-terminal: send the input as pty, not stdin", p.pid))
		}
		if p.stdin == nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
				"process %d was started without stdin (stdin: false)", p.pid))
		}
		data, dst, what = v.Stdin, p.stdin, "stdin"
	case *pb.ProcessInput_Pty:
		if !p.isPTY() {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"process %d has no pseudo-terminal: send the input as stdin, not pty", p.pid))
		}
		data, dst, what = v.Pty, p.master, "pty"
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input is required (stdin or pty)"))
	}

	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	p.mu.Lock()
	gone, closed := p.end != nil, p.stdinClosed && what == "stdin"
	p.mu.Unlock()
	if gone {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", p.pid))
	}
	if closed {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("stdin of process %d is closed", p.pid))
	}
	if len(data) == 0 {
		return nil
	}
	_ = dst.SetWriteDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = dst.SetWriteDeadline(time.Now()) })
	_, err := dst.Write(data)
	stop()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("write %s of process %d: %w", what, p.pid, ctx.Err()))
	}
	if errors.Is(err, os.ErrClosed) {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s of process %d is closed", what, p.pid))
	}
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("write %s of process %d: %w", what, p.pid, err))
}

// closeStdin closes the stdin pipe (idempotent; a no-op without one).
func (p *proc) closeStdin() error {
	if p.isPTY() {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
			"process %d runs in a pseudo-terminal and has no stdin pipe; send Ctrl-D (0x04) as pty input instead", p.pid))
	}
	p.mu.Lock()
	already := p.stdinClosed
	p.stdinClosed = true
	p.mu.Unlock()
	if already || p.stdin == nil {
		return nil
	}
	if err := p.stdin.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("close stdin of process %d: %w", p.pid, err))
	}
	return nil
}

// info describes the process for List.
func (p *proc) info() *pb.ProcessInfo {
	return &pb.ProcessInfo{Config: p.config, Pid: uint32(p.pid), Tag: p.tag}
}
