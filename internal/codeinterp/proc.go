package codeinterp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// A procKernel is an interpreter process whose stdout and stderr are the
// code's own (bash, node). Markers "\x02<token>:<seq>:<kind>[:<value>]\x03",
// with a token that is random per process so code cannot forge them by
// accident, tell what the interpreter does with run seq: "start" on stderr
// once the code is about to run (from then on SIGINT reaches it), "end" on
// stdout and stderr after the code's last output ("end:<status>" on stdout
// for bash, whose stderr end is its "done" prompt).
type procKernel struct {
	log    *slog.Logger
	cmd    *exec.Cmd
	token  string
	prefix []byte
	in     *os.File // where requests are written (the child's fd 0 or 3)
	stdout *os.File // read ends of the child's fd 1 and 2
	stderr *os.File
	replyR *os.File // read end of the child's reply channel (node's fd 4), or nil
	noise  *tailWriter

	// afterEval, when set, is called on the "done" marker of a run (bash's
	// prompt after the code): from then on no SIGINT is sent for it.
	afterEval func(r *procRun)
	// interruptRequest, when set, is what asks the interpreter to stop run
	// seq (node, for code that awaits). Then SIGINT is only sent while the
	// run is in its synchronous part: the "async" marker ends it (a SIGINT
	// node's vm watchdog takes after the script returned would break the
	// runner's own code).
	interruptRequest func(seq int) []byte

	mu  sync.Mutex
	cur *procRun
	seq int

	count int // execution count, touched only by the executing goroutine

	exited    chan struct{}
	gone      chan struct{}
	goneOnce  sync.Once
	goneErr   *endError
	pumps     sync.WaitGroup
	tickers   sync.WaitGroup // interrupt repeaters
	closeOnce sync.Once
}

// procRun is one execution (or setup run) in flight.
type procRun struct {
	seq     int
	outSeen chan struct{}
	errSeen chan struct{}
	ended   chan struct{} // closed by end
	replied chan []byte   // nil when the kernel sends no reply line
	status  string        // the value of the stdout end marker

	mu     sync.Mutex // held while output is handed to out
	out    func(event)
	closed bool

	imu         sync.Mutex
	started     bool // the start marker came
	interrupted bool // an interrupt was asked for
	evalDone    bool // the "done" marker came (see afterEval)
	async       bool // the "async" marker came (see interruptRequest)
}

// procStartTimeout bounds how long an interpreter may take to get ready.
var procStartTimeout = 30 * time.Second

// newToken returns a random marker token.
func newToken() (string, error) {
	tok := make([]byte, 12)
	if _, err := rand.Read(tok); err != nil {
		return "", fmt.Errorf("generate marker token: %w", err)
	}
	return hex.EncodeToString(tok), nil
}

// startProc starts cmd with fresh pipes for its stdout and stderr, and for
// its requests: stdin (reqFD 0) or fd 3 (reqFD 3, then fd 4 carries reply
// lines back). token is the marker token the interpreter knows. Run 0 is
// registered before the process starts, for the caller to wait until the
// interpreter is ready.
func startProc(cmd *exec.Cmd, token string, reqFD int, log *slog.Logger) (_ *procKernel, first *procRun, err error) {
	k := &procKernel{
		log:    log,
		cmd:    cmd,
		token:  token,
		prefix: []byte("\x02" + token + ":"),
		noise:  newTailWriter(log),
		exited: make(chan struct{}),
		gone:   make(chan struct{}),
	}

	var parentEnds, childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			_ = f.Close()
		}
		if err != nil {
			for _, f := range parentEnds {
				_ = f.Close()
			}
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("create pipe: %w", err)
		}
		return r, w, nil
	}
	outR, outW, err := pipe()
	if err != nil {
		return nil, nil, err
	}
	parentEnds, childEnds = append(parentEnds, outR), append(childEnds, outW)
	errR, errW, err := pipe()
	if err != nil {
		return nil, nil, err
	}
	parentEnds, childEnds = append(parentEnds, errR), append(childEnds, errW)
	reqR, reqW, err := pipe()
	if err != nil {
		return nil, nil, err
	}
	parentEnds, childEnds = append(parentEnds, reqW), append(childEnds, reqR)
	k.stdout, k.stderr, k.in = outR, errR, reqW
	cmd.Stdout, cmd.Stderr = outW, errW
	if reqFD == 0 {
		cmd.Stdin = reqR
	} else {
		repR, repW, err := pipe()
		if err != nil {
			return nil, nil, err
		}
		parentEnds, childEnds = append(parentEnds, repR), append(childEnds, repW)
		k.replyR = repR
		cmd.ExtraFiles = []*os.File{reqR, repW} // fd 3, fd 4
	}
	cmd.SysProcAttr = kernelSysProcAttr()
	first = k.begin(nil, reqFD != 0)
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go func() {
		_ = cmd.Wait()
		close(k.exited)
		k.setGone(errRestarting)
	}()
	k.pumps.Add(2)
	go k.pump(k.stdout, typeStdout)
	go k.pump(k.stderr, typeStderr)
	if k.replyR != nil {
		k.pumps.Add(1)
		go k.readReplies()
	}
	return k, first, nil
}

// begin registers a new run; out (nil for setup runs) gets its output.
func (k *procKernel) begin(out func(event), withReply bool) *procRun {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := &procRun{seq: k.seq, out: out, outSeen: make(chan struct{}), errSeen: make(chan struct{}), ended: make(chan struct{})}
	k.seq++
	if withReply {
		r.replied = make(chan []byte, 1)
	}
	k.cur = r
	return r
}

// end unregisters r; no output reaches its out afterwards.
func (k *procKernel) end(r *procRun) {
	k.mu.Lock()
	if k.cur == r {
		k.cur = nil
	}
	k.mu.Unlock()
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.ended)
	}
	r.mu.Unlock()
}

// wait blocks until r's markers (and reply) arrived, the kernel is gone, or
// ctx ends.
func (k *procKernel) wait(ctx context.Context, r *procRun) ([]byte, error) {
	var reply []byte
	for _, ch := range []chan struct{}{r.outSeen, r.errSeen} {
		select {
		case <-ch:
		case <-k.gone:
			return nil, k.goneErr
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r.replied != nil {
		select {
		case reply = <-r.replied:
		case <-k.gone:
			return nil, k.goneErr
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return reply, nil
}

// send writes a request to the interpreter.
func (k *procKernel) send(p []byte) error {
	if _, err := k.in.Write(p); err != nil {
		select {
		case <-k.gone:
			return k.goneErr
		default:
		}
		return fmt.Errorf("write request: %w", err)
	}
	return nil
}

func (k *procKernel) current() *procRun {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// pump copies one output stream to the current run, cutting out markers.
func (k *procKernel) pump(f *os.File, stream string) {
	defer k.pumps.Done()
	sc := markerScanner{prefix: k.prefix}
	text := func(b []byte) {
		if len(b) == 0 {
			return
		}

		r := k.current()
		if r == nil {
			_, _ = k.noise.Write(b)
			return
		}
		r.mu.Lock()
		if !r.closed && r.out != nil {
			r.out(streamEvent(stream, string(b), ""))
		} else if r.out == nil {
			_, _ = k.noise.Write(b)
		}
		r.mu.Unlock()
	}
	marker := func(m string) {
		parts := strings.SplitN(m, ":", 3)
		seq, err := strconv.Atoi(parts[0])
		if err != nil || len(parts) < 2 {
			return
		}
		r := k.current()
		if r == nil || r.seq != seq {
			return
		}
		switch parts[1] {
		case "start":
			k.started(r)
		case "async":
			r.imu.Lock()
			r.async = true
			r.imu.Unlock()
		case "done":
			r.imu.Lock()
			r.evalDone = true
			r.imu.Unlock()
			if stream == typeStderr {
				closeOnce(r.errSeen)
			}
			if k.afterEval != nil {
				k.afterEval(r)
			}
		case "end":
			if stream == typeStdout {
				select {
				case <-r.outSeen: // a repeated marker
				default:
					if len(parts) == 3 {
						r.status = parts[2]
					}
					close(r.outSeen)
				}
			} else {
				closeOnce(r.errSeen)
			}
		}
	}
	buf := make([]byte, 32*1024)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			sc.feed(buf[:n], text, marker)
		}
		if err != nil {
			sc.flush(text)
			return
		}
	}
}

// readReplies hands the reply lines of fd 4 ({"id":seq,...}) to their run.
func (k *procKernel) readReplies() {
	defer k.pumps.Done()
	br := bufio.NewReaderSize(k.replyR, 64*1024)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var head struct {
				ID int `json:"id"`
			}
			if json.Unmarshal(line, &head) == nil {
				if r := k.current(); r != nil && r.seq == head.ID && r.replied != nil {
					select {
					case r.replied <- line:
					default:
					}
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// guard interrupts r when ctx ends before r does (see guard).
func (k *procKernel) guard(ctx context.Context, r *procRun) (stop func()) {
	return guard(ctx, k.log, func() { k.interrupt(r) }, func() { k.close(errStuck) })
}

// interrupt sends SIGINT to the interpreter once r has started: a signal
// that comes before would be lost (bash at its prompt and node between
// requests ignore it), so it waits for the start marker.
func (k *procKernel) interrupt(r *procRun) {
	r.imu.Lock()
	r.interrupted = true
	started := r.started
	r.imu.Unlock()
	if started {
		k.signal(r)
	}
}

// started records the start marker of r, sending an interrupt asked for
// before.
func (k *procKernel) started(r *procRun) {
	r.imu.Lock()
	r.started = true
	want := r.interrupted
	r.imu.Unlock()
	if want {
		k.signal(r)
	}
}

// signal interrupts r now and then every second until r ends or its eval
// is over: a SIGINT can be lost in a race with the interpreter (a command
// bash is forking gets it before it has its own handlers).
func (k *procKernel) signal(r *procRun) {
	if k.cmd.Process == nil {
		return
	}
	k.mu.Lock()
	select {
	case <-k.gone:
		k.mu.Unlock()
		return
	default:
	}
	k.tickers.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.tickers.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		first := time.NewTimer(0)
		defer first.Stop()
		for {
			select {
			case <-first.C:
			case <-tick.C:
			case <-r.ended:
				return
			case <-k.gone:
				return
			}
			if !k.interruptOnce(r) {
				return
			}
		}
	}()
}

// interruptOnce sends one interrupt to r; false once there is no point any
// more.
func (k *procKernel) interruptOnce(r *procRun) bool {
	r.imu.Lock()
	defer r.imu.Unlock()
	if r.evalDone {
		return false
	}
	if k.interruptRequest == nil {
		killGroup(k.cmd.Process.Pid, syscall.SIGINT)
		return true
	}
	if err := k.send(k.interruptRequest(r.seq)); err != nil {
		k.log.Debug("send an interrupt request", "err", err)
	}
	if !r.async {
		// Let the request work if the code awaits; SIGINT the synchronous part.
		r.imu.Unlock()
		select {
		case <-r.ended:
		case <-k.gone:
		case <-time.After(100 * time.Millisecond):
		}
		r.imu.Lock()
		if !r.async && !r.isEnded() {
			killGroup(k.cmd.Process.Pid, syscall.SIGINT)
		}
	}
	return true
}

func (r *procRun) isEnded() bool {
	select {
	case <-r.ended:
		return true
	default:
		return false
	}
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (k *procKernel) setGone(reason *endError) {
	k.goneOnce.Do(func() {
		k.goneErr = reason
		close(k.gone)
	})
}

func (k *procKernel) done() <-chan struct{} { return k.gone }

func (k *procKernel) close(reason *endError) {
	k.setGone(reason)
	k.closeOnce.Do(func() {
		if k.cmd.Process != nil {
			killGroup(k.cmd.Process.Pid, syscall.SIGKILL)
			<-k.exited
		}
		// Closing the read ends stops the pumps even when a process that left
		// the group still holds the write ends.
		_ = k.in.Close()
		_ = k.stdout.Close()
		_ = k.stderr.Close()
		if k.replyR != nil {
			_ = k.replyR.Close()
		}
		k.pumps.Wait()
		k.mu.Lock() // no repeater starts once gone is closed
		k.mu.Unlock()
		k.tickers.Wait()
	})
}

// startFailed explains why an interpreter did not get ready.
func (k *procKernel) startFailed(name string, err error) error {
	select {
	case <-k.exited:
		return fmt.Errorf("%s exited while starting (%s): %s", name, k.cmd.ProcessState, k.noise)
	default:
	}
	return fmt.Errorf("%s did not get ready: %w: %s", name, err, k.noise)
}

// markerScanner splits a byte stream into text and markers
// (prefix + payload + "\x03").
type markerScanner struct {
	prefix []byte
	buf    []byte
}

// maxMarker bounds the payload of a marker; a longer one is just text.
const maxMarker = 64

func (s *markerScanner) feed(p []byte, text func([]byte), marker func(string)) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.Index(s.buf, s.prefix)
		if i < 0 {
			n := len(s.buf) - partialPrefix(s.buf, s.prefix)
			n = completeUTF8(s.buf[:n])
			text(s.buf[:n])
			s.buf = append(s.buf[:0], s.buf[n:]...)
			return
		}
		text(s.buf[:i])
		rest := s.buf[i+len(s.prefix):]
		j := bytes.IndexByte(rest, '\x03')
		if j < 0 {
			if len(rest) > maxMarker {
				text(s.buf[i : i+len(s.prefix)])
				s.buf = append(s.buf[:0], rest...)
				continue
			}
			s.buf = append(s.buf[:0], s.buf[i:]...)
			return
		}
		marker(string(rest[:j]))
		s.buf = append(s.buf[:0], rest[j+1:]...)
	}
}

// flush hands out what is left at the end of the stream.
func (s *markerScanner) flush(text func([]byte)) {
	text(s.buf)
	s.buf = nil
}

// partialPrefix is the length of the longest suffix of b that is a proper
// prefix of prefix (a marker that may continue in the next read).
func partialPrefix(b, prefix []byte) int {
	n := len(prefix) - 1
	if n > len(b) {
		n = len(b)
	}
	for ; n > 0; n-- {
		if bytes.Equal(b[len(b)-n:], prefix[:n]) {
			return n
		}
	}
	return 0
}

// completeUTF8 is the length of b without a trailing incomplete UTF-8
// sequence, so a character split across two reads is not mangled.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}
