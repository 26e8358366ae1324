// Package envd owns the in-sandbox daemon: the HTTP server on port 49983 that
// serves the E2B envd API (Connect RPC process and filesystem services, /files,
// /init, /envs, /metrics, /health), enforces the access token, and wires the
// process and filesystem services to the daemon's identity state.
//
// envd runs inside the sandbox and imports nothing of the control plane.
package envd

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paddockhq/paddock/api/envd/filesystem/filesystemconnect"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
	"github.com/paddockhq/paddock/internal/envd/filesystem"
	"github.com/paddockhq/paddock/internal/envd/identity"
	"github.com/paddockhq/paddock/internal/envd/process"
)

// Version is the envd API level this daemon implements, reported to SDKs as
// envdVersion. SDKs gate features on it (0.6.4 covers every gate in e2b 2.51).
const Version = "0.6.4"

// DefaultAddr is where envd listens unless told otherwise.
const DefaultAddr = "0.0.0.0:49983"

// Config configures a Daemon.
type Config struct {
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
}

// Daemon is the envd server. Create it with New, serve it with Serve, stop it
// with Close.
type Daemon struct {
	log       *slog.Logger
	state     *identity.State
	processes *process.Service
	files     *filesystem.Service
	handler   http.Handler
	server    *http.Server
	rpc       *rpcHandlers
}

// rpcHandlers are envd's Connect services, built on first need: building
// them resolves the services' protobuf descriptors (about 2 ms on a small
// VM), which envd's first /health and /init do not need, so envd answers
// those sooner. /init has them built in the background (prepare), while
// the sandbox's creator records it and answers its client, so the
// client's first call finds them ready.
type rpcHandlers struct {
	build    func() (process, filesystem http.Handler)
	once     sync.Once
	prepared sync.Once
	process  http.Handler
	files    http.Handler
	built    atomic.Bool // for tests
}

// get returns the handlers, building them on the first call.
func (h *rpcHandlers) get() (process, filesystem http.Handler) {
	h.once.Do(func() {
		h.process, h.files = h.build()
		h.built.Store(true)
	})
	return h.process, h.files
}

// prepare builds the handlers in the background, once; the goroutine ends
// when they are built.
func (h *rpcHandlers) prepare() {
	h.prepared.Do(func() { go h.get() })
}

// New builds a Daemon in its initial state: no access token and root as
// the default user, as E2B's envd outside a VM.
func New(cfg Config) *Daemon {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	d := &Daemon{
		log:   log,
		state: identity.NewState(),
	}
	d.processes = process.NewService(d.state, log.With("service", "process"))
	d.files = filesystem.NewService(d.state, log.With("service", "filesystem"))

	d.rpc = &rpcHandlers{build: func() (http.Handler, http.Handler) {
		_, proc := processconnect.NewProcessHandler(d.processes)
		_, files := filesystemconnect.NewFilesystemHandler(d.files)
		return proc, files
	}}
	mux := http.NewServeMux()
	mux.Handle("/"+processconnect.ProcessName+"/", d.requireToken(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proc, _ := d.rpc.get()
		proc.ServeHTTP(w, r)
	})))
	mux.Handle("/"+filesystemconnect.FilesystemName+"/", d.requireToken(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, files := d.rpc.get()
		files.ServeHTTP(w, r)
	})))
	mux.Handle("/files", d.files.FilesHandler()) // token or signature, checked inside
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /init", d.handleInit)
	mux.Handle("GET /envs", d.requireToken(http.HandlerFunc(d.handleEnvs)))
	mux.Handle("GET /metrics", d.requireToken(http.HandlerFunc(d.handleMetrics)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "route "+r.Method+" "+r.URL.Path+" not found")
	})
	d.handler = withCORS(mux)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	d.server = &http.Server{
		Handler:           d.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       640 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return d
}

// Handler returns the daemon's HTTP handler (for tests and embedding).
func (d *Daemon) Handler() http.Handler { return d.handler }

// State returns the daemon's identity state.
func (d *Daemon) State() *identity.State { return d.state }

// Serve accepts connections on l until Close is called. It speaks HTTP/1.1
// and unencrypted HTTP/2 (h2c).
func (d *Daemon) Serve(l net.Listener) error {
	err := d.server.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close ends every process stream and watcher the daemon owns, then stops
// serving (so long-lived streams do not hold the shutdown).
func (d *Daemon) Close(ctx context.Context) error {
	d.processes.Close()
	d.files.Close()
	return d.server.Shutdown(ctx)
}

// requireToken rejects requests without the access token (when one is set).
func (d *Daemon) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.state.TokenMatches(r.Header.Get("X-Access-Token")) {
			WriteError(w, http.StatusUnauthorized, "unauthorized access, please provide a valid access token or method signing if supported")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteError writes envd's REST error shape {"code":<status>,"message":...}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{status, msg})
}

func withCORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", "*")
			h.Set("Access-Control-Allow-Methods", "HEAD, GET, POST, PUT, PATCH, DELETE")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			} else {
				h.Set("Access-Control-Allow-Headers", "*")
			}
			h.Set("Access-Control-Expose-Headers", strings.Join([]string{
				"Connect-Protocol-Version", "Connect-Content-Encoding", "Connect-Accept-Encoding",
				"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin",
				"Location", "Cache-Control", "X-Content-Type-Options", "Content-Disposition",
			}, ", "))
			h.Set("Access-Control-Max-Age", "7200")
			if r.Method == http.MethodOptions {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
