// Package process owns the processes envd starts: the Connect RPC service
// process.Process (Start, Connect, List, SendInput, StreamInput, CloseStdin,
// SendSignal, Update), pipes and pseudo-terminals, output fan-out to every
// attached client, process lifetimes, and (through package reaper) the
// collection of exit statuses and orphans when envd is PID 1.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	pb "github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
	"github.com/paddockhq/paddock/internal/envd/keepalive"
	"github.com/paddockhq/paddock/internal/envd/process/reaper"
)

const (
	// retainExited is how long an ended process can still be connected to
	// (the stream then replays start and end).
	retainExited = 60 * time.Second
	// maxExited bounds the number of ended processes kept for Connect.
	maxExited = 256
	// timeoutHeader is the Connect deadline header; on Start it is also the
	// process's lifetime.
	timeoutHeader = "Connect-Timeout-Ms"
)

// Service implements processconnect.ProcessHandler.
type Service struct {
	processconnect.UnimplementedProcessHandler
	state  *identity.State
	log    *slog.Logger
	reaper *reaper.Reaper

	mu              sync.Mutex
	subscriberLimit int           // bytes queued per attached stream at most
	stallTimeout    time.Duration // see DefaultStallTimeout
	rootTaskLimit   uint64        // RLIMIT_NPROC of processes started as root (0: none)
	running         map[int]*proc
	exited          []exitedProc // oldest first
	closed          bool
	wg              sync.WaitGroup // one per process until its end is published
}

type exitedProc struct {
	p  *proc
	at time.Time
}

// NewService returns a process service acting with the daemon's identity
// state. When envd is PID 1 it also reaps every orphan of the sandbox.
func NewService(state *identity.State, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	global := os.Getpid() == 1
	r, err := reaper.New(global, log.With("component", "reaper"))
	if err != nil {
		log.Warn("global reaper unavailable, waiting for own children only", "err", err)
		r, _ = reaper.New(false, log.With("component", "reaper"))
	}
	var rootLimit uint64
	if global {
		if own, root := taskLimits(); own > 0 {
			if err := capOwnTasks(own); err != nil {
				log.Warn("cannot cap envd's task limit; a fork bomb may exhaust the sandbox's pids", "err", err)
			} else {
				rootLimit = root
			}
		}
	}
	return &Service{
		rootTaskLimit:   rootLimit,
		state:           state,
		log:             log,
		reaper:          r,
		subscriberLimit: DefaultSubscriberLimit,
		stallTimeout:    DefaultStallTimeout,
		running:         map[int]*proc{},
	}
}

// Close kills every process the service started (SIGKILL to each process
// group), waits until their ends are published, and stops the reaper.
// Start fails with Unavailable afterwards.
func (s *Service) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	procs := make([]*proc, 0, len(s.running))
	for _, p := range s.running {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		_ = s.reaper.Signal(p.pid, syscall.SIGKILL, true)
	}
	s.wg.Wait()
	s.reaper.Close()
}

// ---- lookups ----

func notFound(sel *pb.ProcessSelector) error {
	switch v := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Tag:
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag '%s' not found", v.Tag))
	default:
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", sel.GetPid()))
	}
}

func checkSelector(sel *pb.ProcessSelector) error {
	if sel == nil || sel.GetSelector() == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process selector (pid or tag) is required"))
	}
	return nil
}

func (p *proc) matches(sel *pb.ProcessSelector) bool {
	switch v := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		return uint32(p.pid) == v.Pid
	case *pb.ProcessSelector_Tag:
		return p.tag != nil && *p.tag == v.Tag
	}
	return false
}

// findRunning returns the running process sel names (the newest on a tag
// shared by several).
func (s *Service) findRunning(sel *pb.ProcessSelector) (*proc, error) {
	if err := checkSelector(sel); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := sel.GetSelector().(*pb.ProcessSelector_Pid); ok {
		if v.Pid <= math.MaxInt32 {
			if p := s.running[int(v.Pid)]; p != nil {
				return p, nil
			}
		}
		return nil, notFound(sel)
	}
	var best *proc
	for _, p := range s.running {
		if p.matches(sel) && (best == nil || p.started.After(best.started)) {
			best = p
		}
	}
	if best == nil {
		return nil, notFound(sel)
	}
	return best, nil
}

// findAny is findRunning, falling back to recently ended processes.
func (s *Service) findAny(sel *pb.ProcessSelector) (*proc, error) {
	p, err := s.findRunning(sel)
	if err == nil {
		return p, nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(time.Now())
	for i := len(s.exited) - 1; i >= 0; i-- {
		if s.exited[i].p.matches(sel) {
			return s.exited[i].p, nil
		}
	}
	return nil, err
}

func (s *Service) pruneLocked(now time.Time) {
	i := 0
	for i < len(s.exited) && (now.Sub(s.exited[i].at) > retainExited || len(s.exited)-i > maxExited) {
		i++
	}
	if i > 0 {
		s.exited = append(s.exited[:0:0], s.exited[i:]...)
	}
}

// retire moves an ended process from the running set to the retained ones.
func (s *Service) retire(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[p.pid] == p {
		delete(s.running, p.pid)
	}
	now := time.Now()
	s.exited = append(s.exited, exitedProc{p: p, at: now})
	s.pruneLocked(now)
}

// ---- Start ----

// requestTimeout reads the Connect-Timeout-Ms header (0 when absent or bad).
func requestTimeout(h interface{ Get(string) string }) time.Duration {
	v := strings.TrimSpace(h.Get(timeoutHeader))
	if v == "" {
		return 0
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return 0
	}
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// Start runs a process and streams its events until it ends. The process
// outlives the stream: only Connect-Timeout-Ms, SendSignal or Close end it.
func (s *Service) Start(ctx context.Context, req *connect.Request[pb.StartRequest], stream *connect.ServerStream[pb.StartResponse]) error {
	p, sub, err := s.start(req)
	if err != nil {
		return err
	}
	defer p.unsubscribe(sub)
	send := func(ev *pb.ProcessEvent) error { return stream.Send(&pb.StartResponse{Event: ev}) }
	return pump(ctx, p, sub, keepalive.Interval(req.Header()), send)
}

func (s *Service) start(req *connect.Request[pb.StartRequest]) (*proc, *subscriber, error) {
	msg := req.Msg
	cfg := msg.GetProcess()
	if cfg == nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process config is required"))
	}
	if cfg.GetCmd() == "" {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process cmd is required"))
	}
	if err := validateEnv(cfg.GetEnvs()); err != nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	var cols, rows uint16 = 80, 24
	if pt := msg.GetPty(); pt != nil {
		c, r := pt.GetSize().GetCols(), pt.GetSize().GetRows()
		if c > math.MaxUint16 || r > math.MaxUint16 {
			return nil, nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pty size %dx%d is out of range", c, r))
		}
		if c > 0 {
			cols = uint16(c)
		}
		if r > 0 {
			rows = uint16(r)
		}
	}

	u, err := s.state.ActingUser(req.Header())
	if err != nil {
		if errors.Is(err, identity.ErrUnknownUser) {
			return nil, nil, connect.NewError(connect.CodeUnauthenticated, err)
		}
		return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("resolve user: %w", err))
	}
	dir := s.state.ResolvePath(u, cfg.GetCwd())
	if err := checkDir(dir); err != nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	env, envMap := buildEnv(u, s.state.Env(), cfg.GetEnvs(), msg.GetPty() != nil)
	path, err := lookPath(cfg.GetCmd(), envMap["PATH"], dir)
	if err != nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, err)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, connect.NewError(connect.CodeUnavailable, errors.New("envd is shutting down"))
	}
	s.wg.Add(1)
	limit, stall := s.subscriberLimit, s.stallTimeout
	s.mu.Unlock()
	registered := false
	defer func() {
		if !registered {
			s.wg.Done()
		}
	}()

	p := &proc{
		tag:     msg.Tag,
		config:  proto.CloneOf(cfg),
		started: time.Now(),
		stall:   stall,
		subs:    map[*subscriber]struct{}{},
		cut:     make(chan struct{}),
	}
	// childFiles are the child's ends, closed here once it runs (or failed).
	var childFiles []*os.File
	closeChild := func() {
		for _, f := range childFiles {
			f.Close()
		}
	}
	closeOurs := func() {
		for _, f := range p.output {
			f.Close()
		}
		if p.stdin != nil {
			p.stdin.Close()
		}
	}
	sys := &syscall.SysProcAttr{Credential: credential(u)}
	var files []*os.File
	if msg.GetPty() != nil {
		master, slave, err := openPTY(cols, rows)
		if err != nil {
			return nil, nil, connect.NewError(connect.CodeInternal, err)
		}
		if c := sys.Credential; c != nil && c.Uid != 0 {
			_ = slave.Chown(int(c.Uid), -1) // the user owns its terminal, as with a login
		}
		p.master = master
		p.output = []*os.File{master}
		childFiles = []*os.File{slave}
		files = []*os.File{slave, slave, slave}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		outR, outW, err := os.Pipe()
		if err != nil {
			return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("stdout pipe: %w", err))
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			outR.Close()
			outW.Close()
			return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("stderr pipe: %w", err))
		}
		p.output = []*os.File{outR, errR}
		childFiles = []*os.File{outW, errW}
		var in *os.File
		if msg.Stdin == nil || msg.GetStdin() {
			inR, inW, err := os.Pipe()
			if err != nil {
				closeOurs()
				closeChild()
				return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("stdin pipe: %w", err))
			}
			p.stdin, in = inW, inR
		} else {
			in, err = os.Open(os.DevNull)
			if err != nil {
				closeOurs()
				closeChild()
				return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("open %s: %w", os.DevNull, err))
			}
		}
		childFiles = append(childFiles, in)
		files = []*os.File{in, outW, errW}
		sys.Setpgid = true
	}

	argv := append([]string{cfg.GetCmd()}, cfg.GetArgs()...)
	pid, exited, err := s.reaper.Start(func() (int, error) {
		op, err := os.StartProcess(path, argv, &os.ProcAttr{Dir: dir, Env: env, Files: files, Sys: sys})
		if sys.Credential != nil {
			keepDumpable()
		}
		if err != nil {
			return 0, err
		}
		pid := op.Pid
		_ = op.Release() // the reaper collects the status; we never Wait
		return pid, nil
	})
	closeChild()
	if err != nil {
		closeOurs()
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
			"start process '%s' in '%s': %w", strings.Join(argv, " "), dir, err))
	}
	p.pid = pid
	if u.UID == 0 {
		limitTasks(pid, s.rootTaskLimit)
	}
	setOOMScore(pid)

	sub := p.subscribe(limit) // before any output is read
	if d := requestTimeout(req.Header()); d > 0 {
		p.timer = time.AfterFunc(d, func() {
			if err := s.reaper.Signal(pid, syscall.SIGKILL, true); err == nil {
				s.log.Info("process killed: timeout", "pid", pid, "timeout", d)
			}
		})
	}
	kinds := []outputKind{outStdout, outStderr}
	if p.isPTY() {
		kinds = []outputKind{outPTY}
	}
	for i, f := range p.output {
		p.readers.Add(1)
		go p.read(f, kinds[i])
	}

	s.mu.Lock()
	s.running[pid] = p
	closed := s.closed
	s.mu.Unlock()
	registered = true
	go func() {
		defer s.wg.Done()
		p.wait(exited)
		s.retire(p)
		s.log.Debug("process ended", "pid", pid)
	}()
	if closed {
		_ = s.reaper.Signal(pid, syscall.SIGKILL, true)
	}
	s.log.Info("process started", "pid", pid, "cmd", cfg.GetCmd(), "user", u.Name, "cwd", dir, "pty", p.isPTY())
	return p, sub, nil
}

// pump sends a process's events to one stream: start first, then data and
// keepalives, then the end event. It returns when the end was sent, the
// subscriber was dropped, or the client went away (the process keeps
// running).
func pump(ctx context.Context, p *proc, sub *subscriber, interval time.Duration, send func(*pb.ProcessEvent) error) error {
	start := &pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: uint32(p.pid)}}}
	if err := send(start); err != nil {
		return err
	}
	if sub == nil { // ended before we attached: replay the end
		return send(p.endEvent())
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		evs, final, err := sub.take()
		for _, q := range evs {
			if err := send(q.ev); err != nil {
				return err
			}
			sub.sent(q.cost)
		}
		if len(evs) > 0 {
			timer.Reset(interval)
		}
		if err != nil {
			return err
		}
		if final {
			return nil
		}
		select {
		case <-sub.wake:
		case <-timer.C:
			if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
			timer.Reset(interval)
		case <-ctx.Done():
			code := connect.CodeCanceled
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				code = connect.CodeDeadlineExceeded
			}
			return connect.NewError(code, ctx.Err())
		}
	}
}

// ---- Connect, List ----

// Connect re-attaches to a process: start, then live output, then end. An
// ended process (kept for a while) yields start and end.
func (s *Service) Connect(ctx context.Context, req *connect.Request[pb.ConnectRequest], stream *connect.ServerStream[pb.ConnectResponse]) error {
	p, err := s.findAny(req.Msg.GetProcess())
	if err != nil {
		return err
	}
	s.mu.Lock()
	limit := s.subscriberLimit
	s.mu.Unlock()
	sub := p.subscribe(limit)
	if sub != nil {
		defer p.unsubscribe(sub)
	}
	send := func(ev *pb.ProcessEvent) error { return stream.Send(&pb.ConnectResponse{Event: ev}) }
	return pump(ctx, p, sub, keepalive.Interval(req.Header()), send)
}

// List returns the running processes.
func (s *Service) List(ctx context.Context, req *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	s.mu.Lock()
	out := make([]*pb.ProcessInfo, 0, len(s.running))
	for _, p := range s.running {
		out = append(out, p.info())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return connect.NewResponse(&pb.ListResponse{Processes: out}), nil
}

// ---- input, signals, resize ----

// SendInput writes one chunk to a process's stdin or PTY.
func (s *Service) SendInput(ctx context.Context, req *connect.Request[pb.SendInputRequest]) (*connect.Response[pb.SendInputResponse], error) {
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.writeInput(ctx, req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.SendInputResponse{}), nil
}

// StreamInput feeds a process's input from a client stream: a start message
// naming the process, then data messages.
func (s *Service) StreamInput(ctx context.Context, stream *connect.ClientStream[pb.StreamInputRequest]) (*connect.Response[pb.StreamInputResponse], error) {
	var p *proc
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *pb.StreamInputRequest_Start:
			if p != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("start sent twice on one input stream"))
			}
			var err error
			if p, err = s.findRunning(ev.Start.GetProcess()); err != nil {
				return nil, err
			}
		case *pb.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the first message of an input stream must be start"))
			}
			if err := p.writeInput(ctx, ev.Data.GetInput()); err != nil {
				return nil, err
			}
		case *pb.StreamInputRequest_Keepalive:
		default:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("input stream message without an event"))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.StreamInputResponse{}), nil
}

// CloseStdin closes a process's stdin pipe, so it reads EOF.
func (s *Service) CloseStdin(ctx context.Context, req *connect.Request[pb.CloseStdinRequest]) (*connect.Response[pb.CloseStdinResponse], error) {
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.closeStdin(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.CloseStdinResponse{}), nil
}

// SendSignal sends SIGTERM or SIGKILL to a process's whole process group.
func (s *Service) SendSignal(ctx context.Context, req *connect.Request[pb.SendSignalRequest]) (*connect.Response[pb.SendSignalResponse], error) {
	var sig syscall.Signal
	switch req.Msg.GetSignal() {
	case pb.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	case pb.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	default:
		return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("invalid signal: %s", req.Msg.GetSignal()))
	}
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := s.reaper.Signal(p.pid, sig, true); err != nil {
		if errors.Is(err, reaper.ErrNotRunning) {
			return nil, notFound(req.Msg.GetProcess())
		}
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("signal process %d: %w", p.pid, err))
	}
	return connect.NewResponse(&pb.SendSignalResponse{}), nil
}

// Update resizes a process's pseudo-terminal.
func (s *Service) Update(ctx context.Context, req *connect.Request[pb.UpdateRequest]) (*connect.Response[pb.UpdateResponse], error) {
	p, err := s.findRunning(req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	pt := req.Msg.GetPty()
	if pt == nil {
		return connect.NewResponse(&pb.UpdateResponse{}), nil // nothing to change
	}
	if !p.isPTY() {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d has no pseudo-terminal to resize", p.pid))
	}
	c, r := pt.GetSize().GetCols(), pt.GetSize().GetRows()
	if c == 0 || r == 0 || c > math.MaxUint16 || r > math.MaxUint16 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pty size %dx%d is invalid", c, r))
	}
	if err := setWinsize(p.master, uint16(c), uint16(r)); err != nil {
		if p.endEvent() != nil || errors.Is(err, os.ErrClosed) {
			return nil, notFound(req.Msg.GetProcess())
		}
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("resize pty of process %d: %w", p.pid, err))
	}
	return connect.NewResponse(&pb.UpdateResponse{}), nil
}
