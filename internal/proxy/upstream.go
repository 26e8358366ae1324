package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// upstream is the proxy's HTTP/1.1 client towards envd for ordinary
// requests: it writes the request and reads the response on the calling
// goroutine, over keep-alive connections kept per sandbox and port.
// net/http's Transport hands every request to two goroutines of its
// connection (one writes it, one reads the response and passes it back);
// each hand-off is a thread wake-up, which is what a request through the
// proxy mostly cost on a small VM (bench: GET envd /health and
// process.Start through the proxy vs a bare TCP relay). Requests it does
// not take (see takes) stay with the ReverseProxy and net/http's Transport:
// protocol upgrades (WebSockets), Expect: 100-continue, and bodies of
// unknown length or larger than inlineBodyMax (uploads stream there instead
// of being held in memory).
type upstream struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	maxIdlePerHost int
	idleTimeout    time.Duration

	mu     sync.Mutex
	idle   map[string][]*upConn // by "id:port", most recently used last
	closed bool
	// The sweeper closes idle connections that timed out or that the
	// sandbox closed (an idle socket keeps a dead sandbox's network
	// namespace alive). Started with the first idle connection; closeIdle
	// with final stops it.
	sweeping  bool
	stopSweep chan struct{}
	swept     chan struct{}
}

// sweepEvery is how often idle connections are checked.
const sweepEvery = 2 * time.Second

// checkAliveAfter: a connection idle for less than this is used without a
// liveness check (a syscall). envd answered on it just now and closes
// connections only when its sandbox pauses (CRIU's tcp-close), which takes
// longer; a request lost to a connection closed all the same fails before
// any response and is sent again when that is safe (send).
const checkAliveAfter = 50 * time.Millisecond

// inlineBodyMax is the largest request body upstream takes (it is read into
// memory first, so that a request on a connection the sandbox had closed can
// be sent again on a new one). Connect RPCs and small files fit.
const inlineBodyMax = 64 << 10

// upConn is one keep-alive connection to a sandbox port.
type upConn struct {
	key    string
	conn   net.Conn
	br     *bufio.Reader // reads through read, which counts
	bw     *bufio.Writer
	read   int64 // bytes read from conn
	idleAt time.Time
}

func newUpConn(key string, conn net.Conn) *upConn {
	uc := &upConn{key: key, conn: conn, bw: bufio.NewWriterSize(conn, 4<<10)}
	uc.br = bufio.NewReaderSize(readerFunc(uc.readConn), 16<<10)
	return uc
}

func (uc *upConn) readConn(p []byte) (int, error) {
	n, err := uc.conn.Read(p)
	uc.read += int64(n)
	return n, err
}

// readerFunc adapts a function to io.Reader.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func newUpstream(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *upstream {
	return &upstream{
		dial:           dial,
		maxIdlePerHost: 32, idleTimeout: 90 * time.Second,
		idle:      map[string][]*upConn{},
		stopSweep: make(chan struct{}),
		swept:     make(chan struct{}),
	}
}

// takes reports whether send can carry req (a request as the server got
// it: its URL has no scheme or host yet).
func (u *upstream) takes(req *http.Request) bool {
	if req.Header.Get("Upgrade") != "" || req.Header.Get("Expect") != "" {
		return false
	}
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	return req.ContentLength > 0 && req.ContentLength <= inlineBodyMax
}

// send sends req, which takes must accept, on an idle connection to its
// host (or a new one) and returns the response; its body reads from the
// connection, which goes back to the idle set once the body is read to its
// end.
func (u *upstream) send(req *http.Request) (*http.Response, error) {
	if !u.takes(req) || req.URL.Scheme != "http" {
		return nil, fmt.Errorf("proxy upstream: %s %s is not a request it carries", req.Method, req.URL)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		body = make([]byte, req.ContentLength)
		_, err := io.ReadFull(req.Body, body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
	}
	ctx := req.Context()
	key := req.URL.Host
	for attempt := 0; ; attempt++ {
		uc, reused := u.get(key)
		if uc == nil {
			conn, err := u.dial(ctx, "tcp", key)
			if err != nil {
				return nil, err
			}
			uc = newUpConn(key, conn)
		}
		res, err := u.exchange(ctx, uc, req, body)
		if err == nil {
			return res, nil
		}
		uc.conn.Close()
		// A kept connection the sandbox closed just now: send the request
		// again, once, on a new one if it cannot have been taken (its
		// write failed) or may be taken twice (GET, HEAD, OPTIONS).
		var nr *noResponse
		if reused && attempt == 0 && ctx.Err() == nil && errors.As(err, &nr) && (nr.writing || replayable(req)) {
			continue
		}
		return nil, err
	}
}

// noResponse: the connection ended (closed or reset by the sandbox) before
// any byte of a response; writing tells whether it was while sending the
// request.
type noResponse struct {
	writing bool
	err     error
}

func (e *noResponse) Error() string {
	if e.writing {
		return "send request: connection closed by the sandbox: " + e.err.Error()
	}
	return "connection closed by the sandbox before a response: " + e.err.Error()
}

func (e *noResponse) Unwrap() error { return e.err }

func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// exchange writes req on uc and reads the response head. The response's body
// owns uc from then on.
func (u *upstream) exchange(ctx context.Context, uc *upConn, req *http.Request, body []byte) (*http.Response, error) {
	// Cancelling the request (the client went away) unblocks any read or
	// write on the connection.
	stop := context.AfterFunc(ctx, func() { uc.conn.SetDeadline(time.Unix(1, 0)) })
	out := *req // shallow: Write only reads it
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		out.Body = nil
	}
	err := out.Write(uc.bw)
	if err == nil {
		err = uc.bw.Flush()
	}
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if isClosedByPeer(err) {
			return nil, &noResponse{writing: true, err: err}
		}
		return nil, fmt.Errorf("send request: %w", err)
	}
	var res *http.Response
	before := uc.read
	for {
		var err error
		res, err = http.ReadResponse(uc.br, req)
		if err != nil {
			stop()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if uc.read == before && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isClosedByPeer(err)) {
				return nil, &noResponse{err: err}
			}
			return nil, fmt.Errorf("read response: %w", err)
		}
		// Informational responses (103 Early Hints) precede the real one.
		if res.StatusCode >= 100 && res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	reusable := !res.Close && !req.Close && res.StatusCode != http.StatusSwitchingProtocols
	if res.Body == http.NoBody || res.Body == nil {
		u.release(uc, stop, reusable)
		res.Body = http.NoBody
		return res, nil
	}
	res.Body = &upBody{rc: res.Body, done: func(eof bool) { u.release(uc, stop, reusable && eof) }}
	return res, nil
}

// release ends a request on uc: back to the idle set when the exchange
// ended cleanly and nothing cancelled it, closed otherwise.
func (u *upstream) release(uc *upConn, stop func() bool, reusable bool) {
	if !stop() { // the cancel hook ran: the connection has a past deadline
		reusable = false
	}
	if !reusable {
		uc.conn.Close()
		return
	}
	u.put(uc)
}

// get pops the most recently used live idle connection to key (the
// liveness syscall runs outside the lock every request takes).
func (u *upstream) get(key string) (*upConn, bool) {
	now := time.Now()
	for {
		u.mu.Lock()
		list := u.idle[key]
		if len(list) == 0 {
			u.mu.Unlock()
			return nil, false
		}
		c := list[len(list)-1]
		if len(list) == 1 {
			delete(u.idle, key)
		} else {
			u.idle[key] = list[:len(list)-1]
		}
		u.mu.Unlock()
		idle := now.Sub(c.idleAt)
		if idle <= u.idleTimeout && (idle < checkAliveAfter || alive(c.conn)) {
			return c, true
		}
		c.conn.Close()
	}
}

// put keeps uc for the next request to its host.
func (u *upstream) put(uc *upConn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	uc.idleAt = time.Now()
	if !u.sweeping && !u.closed {
		u.sweeping = true
		go u.sweepLoop()
	}
	if u.closed || len(u.idle[uc.key]) >= u.maxIdlePerHost || uc.br.Buffered() > 0 {
		uc.conn.Close()
		return
	}
	u.idle[uc.key] = append(u.idle[uc.key], uc)
}

// sweepLoop runs the sweeper until closeIdle(true).
func (u *upstream) sweepLoop() {
	defer close(u.swept)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-u.stopSweep:
			return
		case now := <-t.C:
			u.sweep(now)
		}
	}
}

// sweep closes idle connections that timed out or are no longer open. The
// liveness syscalls (one per idle connection) run outside the lock; a
// connection taken meanwhile is the taker's.
func (u *upstream) sweep(now time.Time) {
	u.mu.Lock()
	since := map[*upConn]time.Time{} // idle since, as of now
	for _, list := range u.idle {
		for _, c := range list {
			since[c] = c.idleAt
		}
	}
	u.mu.Unlock()
	dead := map[*upConn]time.Time{}
	for c, at := range since {
		if now.Sub(at) > u.idleTimeout || !alive(c.conn) {
			dead[c] = at
		}
	}
	if len(dead) == 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for key, list := range u.idle {
		kept := list[:0]
		for _, c := range list {
			// Still idle since the check (not used and put back meanwhile).
			if at, ok := dead[c]; ok && c.idleAt.Equal(at) {
				c.conn.Close()
				continue
			}
			kept = append(kept, c)
		}
		if len(kept) == 0 {
			delete(u.idle, key)
		} else {
			u.idle[key] = kept
		}
	}
}

// closeIdle closes every idle connection; with final, later ones are
// closed instead of kept.
func (u *upstream) closeIdle(final bool) {
	u.mu.Lock()
	for key, list := range u.idle {
		for _, c := range list {
			c.conn.Close()
		}
		delete(u.idle, key)
	}
	stop := final && !u.closed
	sweeping := u.sweeping
	if final {
		u.closed = true
	}
	u.mu.Unlock()
	if stop {
		close(u.stopSweep)
		if sweeping {
			<-u.swept
		}
	}
}

// alive reports whether an idle connection is still open: nothing to read
// (no early data, no end of stream) without blocking.
func alive(c net.Conn) bool {
	st := peek(c)
	return st == peekNothing || st == peekUnknown // unknown: a failure before any response is retried
}

// peekState is what a connection has to read, as peek finds it.
type peekState int

const (
	peekUnknown peekState = iota // not a socket peek can look at
	peekNothing                  // open, nothing to read yet
	peekData                     // bytes waiting
	peekClosed                   // end of stream, reset, or closed here
)

// peek looks at what c has to read without reading it or waiting
// (recv with MSG_PEEK|MSG_DONTWAIT).
func peek(c net.Conn) peekState {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peekUnknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekClosed
	}
	st := peekClosed
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case rerr == unix.EAGAIN || rerr == unix.EWOULDBLOCK || rerr == unix.EINTR:
			st = peekNothing
		case rerr == nil && n > 0:
			st = peekData
		}
		return true // never wait
	})
	if err != nil {
		return peekClosed
	}
	return st
}

// isClosedByPeer: the error says the other end closed or reset the
// connection.
func isClosedByPeer(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// upBody is a response body read from an upstream connection; done runs
// once, with whether the body was read to its end.
type upBody struct {
	rc   io.ReadCloser
	once sync.Once
	done func(eof bool)
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

// Close before the end gives up the connection first: closing the body of
// an unfinished response would otherwise read the rest of it (an endless
// stream, for a process's output).
func (b *upBody) Close() error {
	b.finish(false)
	return b.rc.Close()
}

func (b *upBody) finish(eof bool) { b.once.Do(func() { b.done(eof) }) }
