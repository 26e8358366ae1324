package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Front is the proxy's HTTP/1.1 front end on a plain listener. It reads the
// requests of each connection on that connection's goroutine and serves the
// ordinary ones for envd (those forwardEnvd serves: no upgrade, no Expect, a
// body of known length up to inlineBodyMax, to envd's port of a sandbox
// that can take traffic) itself: request head parsed, envd's response
// written back, next request, with no other goroutine involved. A
// connection's first request of any other kind (the Platform API, other
// sandbox ports, refusals, HTTP/2, anything unusual) hands the connection,
// with the bytes read so far, to the http.Server that accepts from the
// Front: it serves that connection from then on.
//
// Why: net/http's server starts a background read for every request and
// aborts it before the next one, hand-offs between goroutines that on a
// small VM cost more than the rest of the proxying (bench: process.List
// through the proxy vs a bare TCP relay).
type Front struct {
	p   *Proxy
	l   net.Listener
	cfg FrontConfig

	handoff    chan net.Conn
	closing    chan struct{} // closed by Close
	closeOnce  sync.Once
	acceptDone chan struct{} // closed when the accept loop ends
	acceptErr  error         // why it ended, set before acceptDone closes

	mu    sync.Mutex
	conns map[*frontConn]struct{}
	wg    sync.WaitGroup // the accept loop and the connections

	// Requests served, connections handed over and taken back.
	served, handed, adopted atomic.Int64
}

// FrontConfig sets a Front's timeouts, as http.Server's of the same names.
type FrontConfig struct {
	// IdleTimeout bounds the wait for the next request on a connection.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's head (and its body,
	// which is small) once its first byte came.
	ReadHeaderTimeout time.Duration
}

// frontConn is a connection the Front serves.
type frontConn struct {
	c   net.Conn
	br  *bufio.Reader
	src io.Reader // what br reads: c, or a prefixReader in front of it
	// Guarded by Front.mu:
	idle   bool
	cancel context.CancelFunc // the request in flight, if any
}

// frontBufSize is a connection's read buffer: a request head must fit
// (larger ones go to net/http).
const frontBufSize = 8 << 10

// clientCheckEvery is how often a request in flight checks that its client
// is still connected (a stream from envd can stay silent for long).
const clientCheckEvery = time.Second

// Front starts serving l. Accept on the Front returns the connections it
// hands over; Close stops it (see Shutdown).
func (p *Proxy) Front(l net.Listener, cfg FrontConfig) *Front {
	f := &Front{
		p: p, l: l, cfg: cfg,
		handoff:    make(chan net.Conn),
		closing:    make(chan struct{}),
		acceptDone: make(chan struct{}),
		conns:      map[*frontConn]struct{}{},
	}
	f.wg.Add(1)
	go f.acceptLoop()
	return f
}

// Accept returns the next connection handed over to net/http.
func (f *Front) Accept() (net.Conn, error) {
	select {
	case c := <-f.handoff:
		return c, nil
	case <-f.acceptDone:
		return nil, f.acceptErr
	}
}

// FrontStats counts what a Front did.
type FrontStats struct {
	// Served: requests the Front answered itself.
	Served int64
	// HandedOver: connections given to net/http; TakenBack: connections
	// taken back from it.
	HandedOver, TakenBack int64
}

// Stats returns the Front's counts so far.
func (f *Front) Stats() FrontStats {
	return FrontStats{Served: f.served.Load(), HandedOver: f.handed.Load(), TakenBack: f.adopted.Load()}
}

// Addr is the listener's address.
func (f *Front) Addr() net.Addr { return f.l.Addr() }

// Close stops accepting and closes idle connections; a connection serving
// a request closes once it is answered. Connections already handed over
// are net/http's.
func (f *Front) Close() error {
	var err error
	f.closeOnce.Do(func() {
		close(f.closing)
		err = f.l.Close()
		f.mu.Lock()
		for fc := range f.conns {
			if fc.idle {
				_ = fc.c.SetReadDeadline(time.Unix(1, 0)) // wakes its wait for a request
			}
		}
		f.mu.Unlock()
	})
	return err
}

// Shutdown closes the Front and waits for its connections to finish the
// requests they serve; when ctx ends first, those are cut off.
func (f *Front) Shutdown(ctx context.Context) error {
	_ = f.Close()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	for fc := range f.conns {
		if fc.cancel != nil {
			fc.cancel()
		}
		fc.c.Close()
	}
	f.mu.Unlock()
	<-done
	return ctx.Err()
}

func (f *Front) acceptLoop() {
	defer f.wg.Done()
	var delay time.Duration
	for {
		c, err := f.l.Accept()
		if err != nil {
			if f.isClosing() {
				f.acceptErr = net.ErrClosed
				close(f.acceptDone)
				return
			}
			if errors.Is(err, net.ErrClosed) {
				f.acceptErr = err
				close(f.acceptDone)
				return
			}
			// Out of file descriptors and the like: back off, as
			// http.Server does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			f.p.log.Debug("proxy front: accept", "err", err, "retryIn", delay)
			select {
			case <-time.After(delay):
			case <-f.closing:
			}
			continue
		}
		delay = 0
		fc := newFrontConn(c, c)
		if !f.track(fc) {
			c.Close()
			continue
		}
		go f.serveConn(fc)
	}
}

func newFrontConn(c net.Conn, src io.Reader) *frontConn {
	return &frontConn{c: c, br: bufio.NewReaderSize(src, frontBufSize), src: src}
}

// track adds fc to the connections the Front serves (and waits for), unless
// it is closing.
func (f *Front) track(fc *frontConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isClosing() {
		return false
	}
	f.conns[fc] = struct{}{}
	f.wg.Add(1)
	return true
}

// isClosing reports whether Close has been called.
func (f *Front) isClosing() bool {
	select {
	case <-f.closing:
		return true
	default:
		return false
	}
}

// setIdle marks fc idle (waiting for a request) or busy; it reports false
// when the Front is closing and fc should close instead.
func (f *Front) setIdle(fc *frontConn, idle bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isClosing() {
		return false
	}
	fc.idle = idle
	return true
}

func (f *Front) setCancel(fc *frontConn, cancel context.CancelFunc) {
	f.mu.Lock()
	fc.cancel = cancel
	f.mu.Unlock()
}

func (f *Front) forget(fc *frontConn) {
	f.mu.Lock()
	delete(f.conns, fc)
	f.mu.Unlock()
}

// serveConn serves fc's requests until one is not the Front's to serve (the
// connection is handed over) or the connection ends.
func (f *Front) serveConn(fc *frontConn) {
	defer f.wg.Done()
	c, br := fc.c, fc.br
	// A panic serving a request ends its connection, not the server (as
	// net/http's server does for its handlers).
	defer func() {
		if v := recover(); v != nil {
			f.forget(fc)
			c.Close()
			if v != http.ErrAbortHandler {
				f.p.log.Error("proxy front: panic serving a connection", "panic", v, "stack", string(debug.Stack()))
			}
		}
	}()
	for {
		// The deadline first: Close sets one in the past on idle
		// connections, which this must not overwrite.
		if f.cfg.IdleTimeout > 0 {
			_ = c.SetReadDeadline(time.Now().Add(f.cfg.IdleTimeout))
		}
		if !f.setIdle(fc, true) {
			break
		}
		head, err := f.readHead(br, c)
		if err != nil || !f.setIdle(fc, false) {
			break // closed, reset, timed out, or the Front is closing
		}
		var req *http.Request
		var t *target
		if head != nil {
			req, t = f.take(head)
		}
		if t == nil {
			if req != nil {
				f.p.log.Debug("proxy front: connection to net/http", "method", req.Method, "path", req.URL.Path, "host", req.Host)
			} else {
				f.p.log.Debug("proxy front: connection to net/http", "head", head != nil)
			}
			f.forget(fc)
			f.handed.Add(1)
			f.handOver(fc)
			return
		}
		f.served.Add(1)
		if _, err := br.Discard(len(head)); err != nil {
			break
		}
		var body []byte
		if req.ContentLength > 0 {
			body = make([]byte, req.ContentLength)
			if _, err := io.ReadFull(br, body); err != nil {
				break
			}
		}
		if !f.exchange(fc, req, body, t) {
			break
		}
	}
	f.forget(fc)
	c.Close()
}

// readHead waits for a request and returns its head (request line and
// header fields, up to the empty line) as buffered in br, without
// consuming it. A nil head without error: not something the Front reads
// (not HTTP/1 by its first byte, or a head larger than br's buffer).
func (f *Front) readHead(br *bufio.Reader, c net.Conn) ([]byte, error) {
	b, err := br.Peek(1)
	if err != nil {
		return nil, err
	}
	if b[0] < 'A' || b[0] > 'Z' {
		return nil, nil // a TLS handshake, a stray line ending, …: net/http answers
	}
	deadlineSet := false
	for {
		buf, _ := br.Peek(br.Buffered())
		if end := headEnd(buf); end > 0 {
			return buf[:end], nil
		}
		if br.Buffered() >= br.Size() {
			return nil, nil
		}
		if !deadlineSet && f.cfg.ReadHeaderTimeout > 0 {
			_ = c.SetReadDeadline(time.Now().Add(f.cfg.ReadHeaderTimeout))
			deadlineSet = true
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

// headEnd returns the length of the request head in buf (through the empty
// line that ends it, CRLF or bare LF as net/http accepts), or 0.
func headEnd(buf []byte) int {
	for i := 0; i < len(buf); i++ {
		if buf[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(buf) && buf[i+1] == '\n':
			return i + 2
		case i+2 < len(buf) && buf[i+1] == '\r' && buf[i+2] == '\n':
			return i + 3
		}
	}
	return 0
}

// headReaders parse request heads.
var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, frontBufSize) }}

// take parses a request head and resolves its target when the Front serves
// it; otherwise t is nil.
func (f *Front) take(head []byte) (req *http.Request, t *target) {
	hr := headReaders.Get().(*bufio.Reader)
	hr.Reset(bytes.NewReader(head))
	req, err := http.ReadRequest(hr)
	hr.Reset(nil)
	headReaders.Put(hr)
	if err != nil {
		return nil, nil // malformed: net/http answers 400
	}

	// What net/http's server checks on its own, and what only net/http
	// serves (upgrades, 100-continue, chunked or large bodies).
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.Method == http.MethodConnect ||
		req.Host == "" || hostFields(head) != 1 || req.URL.Host != "" || len(req.TransferEncoding) > 0 ||
		req.ContentLength < 0 || req.ContentLength > inlineBodyMax ||
		req.Header.Get("Upgrade") != "" || req.Header.Get("Expect") != "" {
		return nil, nil
	}
	if !f.p.Match(req) {
		return nil, nil
	}
	t, no := f.p.resolve(req)
	if no != nil || t.port != EnvdPort {
		return nil, nil // net/http refuses it, or it is for a server of the sandbox's own
	}
	return req, t
}

// hostFields counts the Host fields of a request head (http.ReadRequest
// keeps the first; net/http's server refuses a request with more).
func hostFields(head []byte) int {
	n := 0
	for i := 0; i+6 <= len(head); i++ {
		if head[i] == '\n' && (head[i+1]|0x20) == 'h' && (head[i+2]|0x20) == 'o' && (head[i+3]|0x20) == 's' &&
			(head[i+4]|0x20) == 't' && head[i+5] == ':' {
			n++
		}
	}
	return n
}

// handOver gives fc's connection to net/http, with what fc read of it.
func (f *Front) handOver(fc *frontConn) {
	_ = fc.c.SetReadDeadline(time.Time{})
	hc := &handedConn{Conn: fc.c, br: fc.br, src: fc.src}
	select {
	case f.handoff <- hc:
	case <-f.acceptDone: // net/http stopped accepting
		fc.c.Close()
	}
}

// frontKey marks the requests of connections a Front handed over.
type frontKey struct{}

// ConnContext is the http.Server's ConnContext for the server that accepts
// from f: it lets the proxy take back, for the Front to serve, a
// connection that now carries requests to envd again (see adopt).
func (f *Front) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if _, ok := c.(*handedConn); ok {
		return context.WithValue(ctx, frontKey{}, f)
	}
	return ctx
}

// frontOf returns the Front that handed r's connection to net/http, if it
// can take it back to serve r.
func frontOf(r *http.Request) *Front {
	f, _ := r.Context().Value(frontKey{}).(*Front)
	if f == nil || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.TLS != nil || len(r.TransferEncoding) > 0 {
		return nil
	}
	return f
}

// adopt takes back from net/http the connection of r, a request to envd at
// t that the Front would have served (upstream takes it): it answers r and
// serves the connection's next requests as its own. On a connection shared
// by the Platform API and envd (one origin for both, as E2B_API_URL and
// E2B_SANDBOX_URL usually are), that keeps the requests to envd off
// net/http's per-request goroutines.
func (f *Front) adopt(w http.ResponseWriter, r *http.Request, t *target) {
	var body []byte
	if r.ContentLength > 0 {
		body = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return // the client went away or sent less than it said
		}
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.p.forwardEnvd(w, r, t)
		return
	}
	// What net/http read of the connection and did not use, then what the
	// Front had read before it handed the connection over.
	var pending []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pending = append(pending, b...)
	}
	raw := conn
	if hc, ok := conn.(*handedConn); ok {
		raw = hc.Conn
		pending = append(pending, hc.unread()...)
	}
	_ = raw.SetDeadline(time.Time{})
	var src io.Reader = raw
	if len(pending) > 0 {
		src = &prefixReader{pending: pending, r: raw}
	}
	fc := newFrontConn(raw, src)
	tracked := f.track(fc) // not when closing: then r is the last request
	f.adopted.Add(1)
	f.served.Add(1)
	keep := f.exchange(fc, r, body, t)
	switch {
	case !tracked:
		raw.Close()
	case !keep:
		f.forget(fc)
		raw.Close()
		f.wg.Done()
	default:
		f.serveConn(fc) // on this goroutine, which net/http no longer uses
	}
}

// prefixReader reads pending, then r.
type prefixReader struct {
	pending []byte
	r       io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// exchange forwards req to envd at t and writes the response to fc; it
// reports whether the connection can take another request.
func (f *Front) exchange(fc *frontConn, req *http.Request, body []byte, t *target) bool {
	c := fc.c
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), targetKey{}, t))
	defer cancel()
	f.setCancel(fc, cancel)
	defer f.setCancel(fc, nil)
	watch := watchClient(c, cancel)
	defer watch.stop()

	req = req.WithContext(ctx)
	req.ContentLength = int64(len(body))
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		req.Body = http.NoBody
	}
	keep := !req.Close
	out := envdRequest(req, t)
	out.Header.Del(HeaderTrafficToken)
	res, err := f.p.up.send(out)
	if err != nil {
		if ctx.Err() != nil {
			return false // the client went away
		}
		f.p.log.Debug("proxy upstream error", "sandbox", t.id, "port", t.port, "err", err)
		return writeRefusal(c, req, portClosed(t), keep) == nil && keep
	}
	defer res.Body.Close()

	code := res.StatusCode
	bodyless := req.Method == http.MethodHead || code == http.StatusNoContent ||
		code == http.StatusNotModified || code < 200
	removeHopByHop(res.Header, res.Header)
	chunked := false
	if !bodyless {
		if res.ContentLength < 0 || len(res.Trailer) > 0 {
			chunked = true
			res.Header.Del("Content-Length")
		} else {
			res.Header["Content-Length"] = []string{strconv.FormatInt(res.ContentLength, 10)}
		}
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var w bytes.Buffer
	w.Grow(512)
	writeStatusLine(&w, code)
	if _, ok := res.Header["Date"]; !ok {
		res.Header["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	_ = res.Header.Write(&w)
	if chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
		for k := range res.Trailer {
			w.WriteString("Trailer: " + k + "\r\n")
		}
	}
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if bodyless {
		_, err := c.Write(w.Bytes())
		return err == nil && keep
	}
	// The head goes out with the first data (one write), then every read of
	// the body is written as it comes: a stream's messages are not held.
	// Small pieces are copied into one buffer (one write(2)), large ones
	// sent from where they are (writev).
	for {
		n, rerr := res.Body.Read(buf)
		var bufs net.Buffers
		if n > 0 {
			if chunked {
				w.WriteString(strconv.FormatInt(int64(n), 16))
				w.WriteString("\r\n")
			}
			if n <= smallWrite {
				w.Write(buf[:n])
			} else {
				bufs = net.Buffers{w.Bytes(), buf[:n]}
			}
			if chunked {
				if bufs != nil {
					bufs = append(bufs, crlf)
				} else {
					w.Write(crlf)
				}
			}
		}
		if rerr == io.EOF && chunked {
			if bufs != nil {
				bufs = append(bufs, []byte("0\r\n"))
			} else {
				w.WriteString("0\r\n")
			}
			var end bytes.Buffer
			_ = res.Trailer.Write(&end)
			end.WriteString("\r\n")
			if bufs != nil {
				bufs = append(bufs, end.Bytes())
			} else {
				w.Write(end.Bytes())
			}
		}
		var err error
		switch {
		case bufs != nil:
			_, err = bufs.WriteTo(c)
		case w.Len() > 0:
			_, err = c.Write(w.Bytes())
		}
		if err != nil {
			return false // the client went away
		}
		w.Reset()
		if rerr == io.EOF {
			return keep
		}
		if rerr != nil {
			if ctx.Err() == nil {
				f.p.log.Debug("proxy: upstream body ended early", "sandbox", t.id, "err", rerr)
			}
			// Cut the response off rather than end it cleanly: the client
			// must not take a truncated body for a whole one.
			return false
		}
	}
}

var crlf = []byte("\r\n")

// smallWrite: body pieces up to this size are copied behind the head or
// chunk header and written with it.
const smallWrite = 4 << 10

func writeStatusLine(w *bytes.Buffer, code int) {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(code))
	w.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	w.WriteString(text)
	w.WriteString("\r\n")
}

// writeRefusal writes a refusal as writeError shapes it, as a whole
// response with its length.
func writeRefusal(c net.Conn, req *http.Request, no *refusal, keep bool) error {
	rec := &recordedResponse{header: http.Header{}}
	writeError(rec, req, no.status, no.body)
	var w bytes.Buffer
	writeStatusLine(&w, rec.status)
	rec.header["Content-Length"] = []string{strconv.Itoa(rec.body.Len())}
	rec.header["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	_ = rec.header.Write(&w)
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	w.Write(rec.body.Bytes())
	_, err := c.Write(w.Bytes())
	return err
}

// recordedResponse is an http.ResponseWriter that keeps what is written.
type recordedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recordedResponse) Header() http.Header { return r.header }

func (r *recordedResponse) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recordedResponse) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

// clientWatch checks, while a request is in flight, that its client is
// still connected, and cancels the request when it is not (a stream from
// envd may be silent for long; writing is what would notice otherwise).
type clientWatch struct {
	t       *time.Timer
	stopped atomic.Bool
}

func watchClient(c net.Conn, cancel context.CancelFunc) *clientWatch {
	w := &clientWatch{}
	w.t = time.AfterFunc(clientCheckEvery, func() {
		if w.stopped.Load() {
			return
		}
		if peek(c) == peekClosed { // bytes waiting (a next request sent early) mean it is there
			cancel()
			return
		}
		w.t.Reset(clientCheckEvery)
	})
	return w
}

func (w *clientWatch) stop() {
	w.stopped.Store(true)
	w.t.Stop()
}

// handedConn is a connection handed to net/http: reads start with what
// the Front had read of it.
type handedConn struct {
	net.Conn
	br  *bufio.Reader
	src io.Reader // br's source
}

func (h *handedConn) Read(p []byte) (int, error) {
	if h.br != nil {
		if h.br.Buffered() > 0 {
			return h.br.Read(p)
		}
		h.br = nil
	}
	return h.src.Read(p)
}

// unread returns what the Front had read and net/http has not.
func (h *handedConn) unread() []byte {
	var b []byte
	if h.br != nil && h.br.Buffered() > 0 {
		b, _ = h.br.Peek(h.br.Buffered())
		b = append([]byte(nil), b...)
	}
	if pr, ok := h.src.(*prefixReader); ok {
		b = append(b, pr.pending...)
	}
	return b
}

// ReadFrom keeps the connection's own ReadFrom (sendfile, splice) for
// net/http's responses.
func (h *handedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := h.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{h.Conn}, r)
}

// CloseWrite keeps the connection's half-close, which net/http uses to let
// a client read an error answer before the connection closes.
func (h *handedConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type writerOnly struct{ io.Writer }
