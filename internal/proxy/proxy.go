// Package proxy owns the data plane: it recognises requests meant for a
// sandbox port (hosts <port>-<sandboxID>.<domain>, or the E2b-Sandbox-Id and
// E2b-Sandbox-Port headers on a shared host), checks traffic tokens, keeps
// envd's control routes unreachable from outside, and streams requests both
// ways (Connect streams, WebSockets, large bodies) into the sandbox. Signed
// /files links on a shared host, which name no sandbox, go to the sandbox
// whose envd access token verifies their signature. Its Front is the plain
// listener's HTTP/1.1 front end: it serves requests to envd on their
// connection's goroutine and hands other connections to net/http.
package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvdPort is envd's port inside sandboxes.
const EnvdPort = 49983

// Header names of the E2B routing and traffic protocol.
const (
	HeaderSandboxID    = "E2b-Sandbox-Id"
	HeaderSandboxPort  = "E2b-Sandbox-Port"
	HeaderTrafficToken = "E2b-Traffic-Access-Token"
)

// ErrGone is returned by Sandboxes.Route when the sandbox does not exist or
// cannot serve traffic.
var ErrGone = errors.New("sandbox not found")

// Route says how to reach one sandbox.
type Route struct {
	// Dial connects to a port inside the sandbox.
	Dial func(ctx context.Context, port int) (net.Conn, error)
	// TrafficToken, when set, is required on ports other than envd's.
	TrafficToken string
	// MaskRequestHost rewrites the Host of requests to non-envd ports
	// (${PORT} is replaced by the port).
	MaskRequestHost string
}

// Signer is a sandbox that may have signed a /files link.
type Signer struct {
	ID string
	// EnvdToken is the sandbox's envd access token, the signing key.
	EnvdToken string
}

// Sandboxes is what the proxy needs from the sandbox service.
type Sandboxes interface {
	// Route returns how to reach a running sandbox, resuming it first when
	// it is paused with auto-resume. Errors wrap ErrGone when it is gone.
	Route(ctx context.Context, id string) (Route, error)
	// Signers lists the sandboxes that can take traffic and hold an envd
	// access token, for routing signed /files links on a shared host.
	Signers(ctx context.Context) ([]Signer, error)
}

// Config configures a Proxy.
type Config struct {
	// Domain: hosts <port>-<id>.<Domain> route to sandboxes. Empty accepts
	// that host form under any domain.
	Domain    string
	Sandboxes Sandboxes
	Logger    *slog.Logger
}

// Proxy routes data-plane requests into sandboxes.
type Proxy struct {
	cfg Config
	log *slog.Logger
	rp  *httputil.ReverseProxy
	tr  *http.Transport // the ReverseProxy's: other ports, and what up does not take
	up  *upstream       // forwardEnvd's: ordinary requests to envd

	// Preconnect's dials: they end by themselves within preconnectWait;
	// Close cancels them and waits.
	bgMu     sync.Mutex
	bgClosed bool
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// blockedEnvdPaths are envd's control routes, reachable only from Paddock.
var blockedEnvdPaths = map[string]bool{
	"/init": true, "/upgrade": true, "/freeze": true, "/unfreeze": true,
	"/collapse": true, "/fsfreeze": true, "/fsthaw": true,
}

type targetKey struct{}

type target struct {
	id    string
	port  int
	route Route
}

// New builds a Proxy.
func New(cfg Config) *Proxy {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Proxy{cfg: cfg, log: log}
	p.bgCtx, p.bgCancel = context.WithCancel(context.Background())
	p.tr = &http.Transport{
		DialContext:           p.dial,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: 0,
		ForceAttemptHTTP2:     false,
	}
	p.up = newUpstream(p.dial)
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(targetKey{}).(*target)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = upstreamHost(t.id, t.port)
			pr.Out.Host = pr.In.Host
			if t.port != EnvdPort && t.route.MaskRequestHost != "" {
				pr.Out.Host = strings.ReplaceAll(t.route.MaskRequestHost, "${PORT}", strconv.Itoa(t.port))
			}
		},
		Transport:     p.tr,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			t := r.Context().Value(targetKey{}).(*target)
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			p.log.Debug("proxy upstream error", "sandbox", t.id, "port", t.port, "err", err)
			no := portClosed(t)
			writeError(w, r, no.status, no.body)
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

// dial connects the shared transport to "<id>:<port>" through the route of
// the request being served.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, err
	}
	if t, ok := ctx.Value(targetKey{}).(*target); ok && t.id == host {
		return t.route.Dial(ctx, port)
	}
	route, err := p.cfg.Sandboxes.Route(ctx, host)
	if err != nil {
		return nil, err
	}
	return route.Dial(ctx, port)
}

// Match reports whether r is a data-plane request for a sandbox: a
// per-sandbox host, routing headers, or envd's /files path (the Platform
// API has no such route; signed links on a shared host look like that).
func (p *Proxy) Match(r *http.Request) bool {
	if _, _, ok := p.hostTarget(r.Host); ok {
		return true
	}
	return r.Header.Get(HeaderSandboxID) != "" || r.Header.Get(HeaderSandboxPort) != "" || r.URL.Path == filesPath
}

// hostTarget parses "<port>-<id>.<domain>" hosts.
func (p *Proxy) hostTarget(hostport string) (id string, port int, ok bool) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	label, rest, found := strings.Cut(host, ".")
	if !found {
		return "", 0, false
	}
	if p.cfg.Domain != "" && !strings.EqualFold(rest, p.cfg.Domain) {
		return "", 0, false
	}
	portStr, id, found := strings.Cut(label, "-")
	if !found || id == "" || !isLowerAlnum(id) {
		return "", 0, false
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, false
	}
	return id, port, true
}

func isLowerAlnum(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// refusal is a data-plane request the proxy answers itself, with E2B's
// error shape.
type refusal struct {
	status int
	body   map[string]any
}

// resolve finds the sandbox port r is for and checks that r may reach it.
func (p *Proxy) resolve(r *http.Request) (*target, *refusal) {
	id, port, ok := p.hostTarget(r.Host)
	switch {
	case ok:
	case r.Header.Get(HeaderSandboxID) == "" && r.Header.Get(HeaderSandboxPort) == "" && r.URL.Path == filesPath:
		// A signed link on a shared host: it names no sandbox.
		var status int
		var msg string
		if id, status, msg = p.signedFilesTarget(r); id == "" {
			return nil, &refusal{status, map[string]any{"code": status, "message": msg}}
		}
		port = EnvdPort
	default:
		// Shared host: route by headers (ignored on per-sandbox hosts so a
		// client cannot reach another sandbox by spoofing them).
		id = r.Header.Get(HeaderSandboxID)
		ps := r.Header.Get(HeaderSandboxPort)
		n, err := strconv.Atoi(ps)
		if id == "" || err != nil || n <= 0 || n > 65535 || !isLowerAlnum(id) {
			return nil, &refusal{http.StatusBadRequest, map[string]any{
				"code": http.StatusBadRequest, "message": "invalid sandbox routing: E2b-Sandbox-Id and a numeric E2b-Sandbox-Port are required",
			}}
		}
		port = n
	}
	if port == EnvdPort && blockedEnvdPaths[r.URL.Path] {
		return nil, &refusal{http.StatusNotFound, map[string]any{"code": http.StatusNotFound, "message": "route not found"}}
	}
	route, err := p.cfg.Sandboxes.Route(r.Context(), id)
	if err != nil {
		if !errors.Is(err, ErrGone) {
			p.log.Error("proxy route", "sandbox", id, "err", err)
		}
		return nil, &refusal{http.StatusBadGateway, map[string]any{
			"sandboxId": id, "code": http.StatusBadGateway, "message": "The sandbox was not found",
		}}
	}
	if port != EnvdPort && route.TrafficToken != "" {
		got := r.Header.Get(HeaderTrafficToken)
		if subtle.ConstantTimeCompare([]byte(got), []byte(route.TrafficToken)) != 1 {
			return nil, &refusal{http.StatusForbidden, map[string]any{
				"sandboxId": id, "port": port, "code": http.StatusForbidden,
				"message": "Missing or invalid traffic access token (e2b-traffic-access-token)",
			}}
		}
	}
	return &target{id: id, port: port, route: route}, nil
}

// portClosed answers a request whose sandbox port could not be reached.
func portClosed(t *target) *refusal {
	return &refusal{http.StatusBadGateway, map[string]any{
		"sandboxId": t.id, "port": t.port, "code": http.StatusBadGateway,
		"message": "The sandbox is running but port is not open",
	}}
}

// ServeHTTP forwards a data-plane request to its sandbox.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, no := p.resolve(r)
	if no != nil {
		writeError(w, r, no.status, no.body)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), targetKey{}, t))
	r.Header.Del(HeaderTrafficToken)
	// Stream both ways. Without full duplex the HTTP/1 server drains and
	// closes the request body as soon as the response headers go out, which
	// races the transport still reading that body (its end-of-body check):
	// the transport then fails the write and closes the upstream connection
	// under the response being streamed, and the client sees it cut off.
	// HTTP/2 is full duplex already (the call then fails harmlessly).
	_ = http.NewResponseController(w).EnableFullDuplex()
	// envd's API is request then response (the SDKs send a whole body
	// before reading), which forwardEnvd relies on to read a small body
	// before sending it. Servers on the sandbox's own ports may answer while
	// the body is still coming: they get the ReverseProxy, full duplex.
	if t.port == EnvdPort && p.up.takes(r) {
		if f := frontOf(r); f != nil {
			f.adopt(w, r, t)
			return
		}
		p.forwardEnvd(w, r, t)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// forwardEnvd forwards an ordinary request to envd through up and copies
// the response back as it arrives, flushing after every read of a streamed
// body. It does what the ReverseProxy does for such a request, without the
// ReverseProxy's flush timer: for a streamed response that flushes the
// headers from a goroutine of their own, ahead of the first message, one
// more write and wake-up on both ends per request.
func (p *Proxy) forwardEnvd(w http.ResponseWriter, r *http.Request, t *target) {
	res, err := p.up.send(envdRequest(r.Clone(r.Context()), t))
	if err != nil {
		p.rp.ErrorHandler(w, r, err)
		return
	}
	defer res.Body.Close()
	removeHopByHop(res.Header, res.Header)
	h := w.Header()
	for k, vv := range res.Header {
		h[k] = vv
	}
	for k := range res.Trailer {
		h.Add("Trailer", k)
	}
	w.WriteHeader(res.StatusCode)
	streamed := res.ContentLength < 0
	rc := http.NewResponseController(w)
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away
			}
			if streamed {
				if err := rc.Flush(); err != nil {
					return
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if r.Context().Err() == nil {
				p.log.Debug("proxy: upstream body ended early", "sandbox", t.id, "err", rerr)
			}
			// Cut the response off rather than end it cleanly: the client
			// must not take a truncated body for a whole one.
			panic(http.ErrAbortHandler)
		}
	}
	for k, vv := range res.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

// envdRequest makes out, a copy of a request the client sent (with a
// header map of its own), the request forwarded to envd at t: hop-by-hop
// and X-Forwarded headers dropped, as the ReverseProxy's Rewrite does.
func envdRequest(out *http.Request, t *target) *http.Request {
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = upstreamHost(t.id, t.port)
	out.Close = false // the client's connection, not envd's
	if out.ContentLength == 0 {
		out.Body = nil
	}
	removeHopByHop(out.Header, out.Header)
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		out.Header.Del(h)
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // send none rather than Go's
	}
	return out
}

// copyBuffers holds forwardEnvd's copy buffers.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hopByHop are the headers of one connection (RFC 9110 §7.6.1).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes hop-by-hop headers from h, those named by
// src's Connection header included; "TE: trailers" of a request is kept, as
// the ReverseProxy does (gRPC needs it).
func removeHopByHop(h, src http.Header) {
	for _, f := range src["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	te := h.Get("Te")
	for _, name := range hopByHop {
		h.Del(name)
	}
	if strings.EqualFold(textproto.TrimString(te), "trailers") {
		h.Set("Te", "trailers")
	}
}

// filesPath is envd's file transfer route, the target of signed links.
const filesPath = "/files"

// signedFilesTarget finds the sandbox whose envd access token verifies the
// signature of a /files link (E2B's v1 scheme, as envd checks it), trying
// every candidate in constant time. It returns "" and an error status when
// none does; the sandbox's envd verifies the link again (and its expiry).
func (p *Proxy) signedFilesTarget(r *http.Request) (id string, status int, msg string) {
	var op string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		op = "read"
	case http.MethodPost:
		op = "write"
	default:
		return "", http.StatusMethodNotAllowed, "method " + r.Method + " is not allowed on /files"
	}
	q := r.URL.Query()
	sig := q.Get("signature")
	if sig == "" {
		return "", http.StatusUnauthorized, "this shared address routes /files by its signature: use a signed URL (uploadUrl/downloadUrl of a secure sandbox) or the E2b-Sandbox-Id and E2b-Sandbox-Port headers"
	}
	var exp *int64
	if v := q.Get("signature_expiration"); q.Has("signature_expiration") {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return "", http.StatusBadRequest, "invalid signature_expiration " + strconv.Quote(v) + ": want unix seconds"
		}
		exp = &n
	}
	signers, err := p.cfg.Sandboxes.Signers(r.Context())
	if err != nil {
		p.log.Error("proxy: list sandboxes for a signed URL", "err", err)
		return "", http.StatusInternalServerError, "cannot check the signature now"
	}
	// Compare digests: decode the link's signature once instead of encoding
	// every candidate's.
	got, err := base64.RawStdEncoding.Strict().DecodeString(strings.TrimPrefix(sig, "v1_"))
	if !strings.HasPrefix(sig, "v1_") || err != nil || len(got) != sha256.Size {
		return "", http.StatusUnauthorized, "invalid signature: it matches no running sandbox"
	}
	prefix := q.Get("path") + ":" + op + ":" + q.Get("username") + ":"
	suffix := ""
	if exp != nil {
		suffix = ":" + strconv.FormatInt(*exp, 10)
	}
	h := sha256.New()
	var sum [sha256.Size]byte
	for _, s := range signers {
		h.Reset()
		h.Write([]byte(prefix))
		h.Write([]byte(s.EnvdToken))
		h.Write([]byte(suffix))
		if subtle.ConstantTimeCompare(h.Sum(sum[:0]), got) == 1 && id == "" {
			id = s.ID // keep going: the time taken does not depend on which one matched
		}
	}
	if id == "" {
		return "", http.StatusUnauthorized, "invalid signature: it matches no running sandbox"
	}
	return id, 0, ""
}

// FileSignature is the v1 signature of a /files link as the E2B SDK makes it
// and envd checks it: "v1_" + unpadded standard base64 of
// sha256(path:operation:username:token[:expiration]).
func FileSignature(path, operation, username, token string, expiration *int64) string {
	raw := path + ":" + operation + ":" + username + ":" + token
	if expiration != nil {
		raw += ":" + strconv.FormatInt(*expiration, 10)
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// upstreamHost is the host of a request's outgoing URL to a sandbox port:
// "<id>:<port>". It keys the upstream's kept connections (and the dial
// resolves it back), so Preconnect and the forwarders must agree on it.
func upstreamHost(id string, port int) string { return id + ":" + strconv.Itoa(port) }

// preconnectWait bounds one Preconnect dial.
const preconnectWait = 2 * time.Second

// Preconnect opens a connection to envd in sandbox id with dial, in the
// background, and keeps it for the first request there, so that the first
// request does not pay for the dial into the sandbox's network namespace
// and envd's accept. The sandbox service calls it when a sandbox starts
// running: the client's first command usually follows within milliseconds.
// dial reaches the sandbox as it is (unlike Route, it never resumes one).
// Best effort: a failure only leaves the first request to dial as usual.
func (p *Proxy) Preconnect(id string, dial func(ctx context.Context, port int) (net.Conn, error)) {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.bgClosed {
		return
	}
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		ctx, cancel := context.WithTimeout(p.bgCtx, preconnectWait)
		defer cancel()
		conn, err := dial(ctx, EnvdPort)
		if err != nil {
			p.log.Debug("proxy preconnect", "sandbox", id, "err", err)
			return
		}
		p.up.put(newUpConn(upstreamHost(id, EnvdPort), conn))
	}()
}

// Close drops idle upstream connections and stops checking them; requests
// after it do not keep theirs.
func (p *Proxy) Close() {
	p.bgMu.Lock()
	p.bgClosed = true
	p.bgMu.Unlock()
	p.bgCancel()
	p.bg.Wait()
	p.up.closeIdle(true)
	p.tr.CloseIdleConnections()
}

// writeError answers with E2B's JSON error body, or a short HTML page when
// the client is a browser.
func writeError(w http.ResponseWriter, r *http.Request, status int, body map[string]any) {
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		msg, _ := body["message"].(string)
		_, _ = w.Write([]byte("<!doctype html><html><head><title>" + strconv.Itoa(status) + "</title></head><body><h1>" +
			http.StatusText(status) + "</h1><p>" + htmlEscape(msg) + "</p></body></html>\n"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
