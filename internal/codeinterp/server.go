package codeinterp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Defaults of Config.
const (
	DefaultAddr    = "0.0.0.0:49999"
	DefaultEnvdURL = "http://127.0.0.1:49983"
	DefaultCwd     = "/home/user"
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	// Cwd is the working directory of contexts created without one.
	Cwd string
	// EnvdURL is where envd answers GET /envs (the sandbox's global env).
	EnvdURL string
	// Python, Node and Bash are the interpreters (a path or a name looked up
	// in PATH). Python defaults to /usr/bin/python3 when it exists (the one
	// Debian's python3-ipykernel is installed for), else python3.
	Python, Node, Bash string
	// RuntimeDir holds the kernels' private directories (connection files,
	// ipc sockets). Defaults to a new directory under os.TempDir().
	RuntimeDir string
	// StartLanguages are the default contexts started by Start (E2B starts
	// a python one). Others are created at their first use.
	StartLanguages []string
	// KeepaliveInterval is the silence after which /execute writes a
	// keepalive line. Defaults to 5 s.
	KeepaliveInterval time.Duration
	// HTTPClient reads envd's /envs. Defaults to a client with a 10 s timeout.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server is the code-interpreter HTTP server and the contexts it owns.
type Server struct {
	cfg        Config
	log        *slog.Logger
	runtimeDir string
	ownDir     bool
	runnerPath string
	mux        *http.ServeMux

	mu       sync.Mutex
	contexts map[string]*codeContext
	defaults map[string]*codeContext  // language -> default context
	creating map[string]chan struct{} // language -> default being created
	closed   bool
	closing  chan struct{}
	execs    sync.WaitGroup // executions still running (their handler may be gone)
	starts   sync.WaitGroup // background start of the default contexts
	// startPending counts the default contexts Start has not got up yet;
	// startErrs has the error of each whose start failed (see /ready).
	startPending int
	startErrs    map[string]error
}

// New returns a server; it starts nothing until Start or the first request.
func New(cfg Config) (*Server, error) {
	if cfg.Cwd == "" {
		cfg.Cwd = DefaultCwd
	}
	if cfg.EnvdURL == "" {
		cfg.EnvdURL = DefaultEnvdURL
	}
	cfg.EnvdURL = strings.TrimRight(cfg.EnvdURL, "/")
	if cfg.Python == "" {
		cfg.Python = "python3"
		if _, err := os.Stat("/usr/bin/python3"); err == nil {
			cfg.Python = "/usr/bin/python3"
		}
	}
	if cfg.Node == "" {
		cfg.Node = "node"
	}
	if cfg.Bash == "" {
		cfg.Bash = "bash"
	}
	if cfg.KeepaliveInterval <= 0 {
		cfg.KeepaliveInterval = 5 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		contexts: map[string]*codeContext{},
		defaults: map[string]*codeContext{},
		creating: map[string]chan struct{}{},
		closing:  make(chan struct{}),

		startErrs: map[string]error{},
	}
	s.runtimeDir = cfg.RuntimeDir
	if s.runtimeDir == "" {
		dir, err := os.MkdirTemp("", "paddock-codeinterp-")
		if err != nil {
			return nil, fmt.Errorf("create runtime directory: %w", err)
		}
		s.runtimeDir, s.ownDir = dir, true
	} else if err := os.MkdirAll(s.runtimeDir, 0o700); err != nil {
		return nil, fmt.Errorf("create runtime directory %s: %w", s.runtimeDir, err)
	}
	s.runnerPath = filepath.Join(s.runtimeDir, "runner.js")
	if err := os.WriteFile(s.runnerPath, runnerJS, 0o600); err != nil {
		s.removeRuntimeDir()
		return nil, fmt.Errorf("write the JavaScript runner: %w", err)
	}

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /health", s.handleHealth)
	s.mux.HandleFunc("GET /ready", s.handleReady)
	s.mux.HandleFunc("POST /execute", s.handleExecute)
	s.mux.HandleFunc("POST /contexts", s.handleCreateContext)
	s.mux.HandleFunc("GET /contexts", s.handleListContexts)
	s.mux.HandleFunc("POST /contexts/{id}/restart", s.handleRestartContext)
	s.mux.HandleFunc("DELETE /contexts/{id}", s.handleRemoveContext)
	return s, nil
}

func (s *Server) removeRuntimeDir() {
	if s.ownDir {
		_ = os.RemoveAll(s.runtimeDir)
	} else {
		_ = os.Remove(s.runnerPath)
	}
}

// ServeHTTP serves the code-interpreter API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Start creates the default contexts of Config.StartLanguages in the
// background, so that the first execution does not wait for a kernel.
// GET /ready answers 200 once they are all up.
func (s *Server) Start() {
	s.mu.Lock()
	s.startPending += len(s.cfg.StartLanguages)
	s.mu.Unlock()
	for _, lang := range s.cfg.StartLanguages {
		s.starts.Add(1)
		go func() {
			defer s.starts.Done()
			t := time.Now()
			c, err := s.defaultContext(context.Background(), lang)
			s.mu.Lock()
			s.startPending--
			if err != nil {
				s.startErrs[lang] = err
			}
			s.mu.Unlock()
			if err != nil {
				s.log.Error("start default context", "language", lang, "err", err)
				return
			}
			s.log.Info("default context ready", "language", c.language, "id", c.id, "took", time.Since(t).Round(time.Millisecond))
		}()
	}
}

// Close kills every kernel and waits for the executions in flight to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.starts.Wait()
	s.mu.Lock()
	all := make([]*codeContext, 0, len(s.contexts))
	for _, c := range s.contexts {
		all = append(all, c)
	}
	s.contexts, s.defaults = map[string]*codeContext{}, map[string]*codeContext{}
	s.mu.Unlock()
	for _, c := range all {
		c.remove()
	}
	s.execs.Wait()
	s.removeRuntimeDir()
	return nil
}

var errClosed = errors.New("code interpreter is shutting down")

// startKernel starts a kernel for language in cwd.
func (s *Server) startKernel(ctx context.Context, language, cwd string) (kernel, error) {
	select {
	case <-s.closing:
		return nil, errClosed
	default:
	}
	log := s.log.With("language", language, "cwd", cwd)
	t := time.Now()
	var (
		k   kernel
		err error
	)
	switch language {
	case langPython:
		k, err = startJupyter(ctx, s.cfg.Python, s.runtimeDir, cwd, log)
	case langJavaScript, langTypeScript:
		k, err = startNode(ctx, s.cfg.Node, s.runnerPath, cwd, language == langTypeScript, log)
	case langBash:
		k, err = startBash(ctx, s.cfg.Bash, cwd, log)
	default:
		err = fmt.Errorf("no kernel for language %q", language)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s kernel: %w", language, err)
	}
	log.Info("kernel started", "took", time.Since(t).Round(time.Millisecond))
	return k, nil
}

// newContext registers a context and starts its kernel.
func (s *Server) newContext(ctx context.Context, language, cwd string) (*codeContext, error) {
	c := &codeContext{
		id:       uuid.NewString(),
		language: language,
		cwd:      cwd,
		srv:      s,
		created:  time.Now(),
		queue:    make(chan struct{}, 1),
	}
	if _, err := c.kernel(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.remove()
		return nil, errClosed
	}
	s.contexts[c.id] = c
	s.mu.Unlock()
	return c, nil
}

// defaultContext returns the default context of language, creating it at
// first use (or when it was removed).
func (s *Server) defaultContext(ctx context.Context, language string) (*codeContext, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, errClosed
		}
		if c := s.defaults[language]; c != nil && !c.isRemoved() {
			s.mu.Unlock()
			return c, nil
		}
		if wait := s.creating[language]; wait != nil {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		wait := make(chan struct{})
		s.creating[language] = wait
		s.mu.Unlock()

		c, err := s.newContext(context.WithoutCancel(ctx), language, s.cfg.Cwd)
		s.mu.Lock()
		delete(s.creating, language)
		close(wait)
		if err == nil && !s.closed {
			s.defaults[language] = c
		}
		s.mu.Unlock()
		return c, err
	}
}

func (s *Server) lookup(id string) *codeContext {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.contexts[id]
}

// globalEnv reads the sandbox's global environment from envd.
func (s *Server) globalEnv(ctx context.Context, token string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.EnvdURL+"/envs", nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if token != "" {
		req.Header.Set("X-Access-Token", token)
	}
	res, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s/envs: %w", s.cfg.EnvdURL, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/envs: %s", s.cfg.EnvdURL, res.Status)
	}
	var envs map[string]string
	if err := json.NewDecoder(io.LimitReader(res.Body, 4<<20)).Decode(&envs); err != nil {
		return nil, fmt.Errorf("decode %s/envs: %w", s.cfg.EnvdURL, err)
	}
	return envs, nil
}

// contextJSON is a context on the wire.
type contextJSON struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

func (c *codeContext) json() contextJSON {
	return contextJSON{ID: c.id, Language: c.language, Cwd: c.cwd}
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, "OK")
}

// handleReady answers 200 "OK" once the default contexts Start began are
// up (their kernels answer), and 503 with plain text saying what is
// missing before that or when one failed to start. /health answers as soon
// as the server listens; a template's ready command uses /ready, so that a
// new sandbox's first execution finds a warm kernel.
func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	pending := s.startPending
	var failed []string
	for lang, err := range s.startErrs {
		failed = append(failed, fmt.Sprintf("the default %s context failed to start: %v", lang, err))
	}
	s.mu.Unlock()
	sort.Strings(failed)
	switch {
	case len(failed) > 0:
		writeText(w, http.StatusServiceUnavailable, strings.Join(failed, "; "))
	case pending > 0:
		writeText(w, http.StatusServiceUnavailable, fmt.Sprintf("starting: %d default context(s) not up yet", pending))
	default:
		writeJSON(w, http.StatusOK, "OK")
	}
}

// maxBody bounds request bodies (code included).
const maxBody = 64 << 20

// decodeBody decodes a JSON body; an empty body is an empty object.
func decodeBody(r *http.Request, v any) error {
	err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody)).Decode(v)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (s *Server) handleCreateContext(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Language *string `json:"language"`
		Cwd      *string `json:"cwd"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeText(w, http.StatusUnprocessableEntity, "Invalid request body: "+err.Error())
		return
	}
	lang, err := normalizeLanguage(deref(req.Language))
	if err != nil {
		writeText(w, http.StatusBadRequest, "Failed to create context: "+err.Error())
		return
	}
	cwd := deref(req.Cwd)
	if cwd == "" {
		cwd = s.cfg.Cwd
	}
	if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("Failed to create context: cwd %s is not a directory", cwd))
		return
	}
	c, err := s.newContext(r.Context(), lang, cwd)
	if err != nil {
		s.log.Error("create context", "language", lang, "err", err)
		writeText(w, http.StatusInternalServerError, "Failed to create context: "+err.Error())
		return
	}
	s.log.Info("context created", "id", c.id, "language", lang, "cwd", cwd)
	writeJSON(w, http.StatusOK, c.json())
}

func (s *Server) handleListContexts(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	all := make([]*codeContext, 0, len(s.contexts))
	for _, c := range s.contexts {
		all = append(all, c)
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].created.Before(all[j].created) })
	out := make([]contextJSON, 0, len(all))
	for _, c := range all {
		out = append(out, c.json())
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRestartContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c := s.lookup(id)
	if c == nil {
		writeText(w, http.StatusNotFound, fmt.Sprintf("Context %s not found", id))
		return
	}
	if err := c.restart(r.Context()); err != nil {
		s.log.Error("restart context", "id", id, "err", err)
		writeText(w, http.StatusInternalServerError, fmt.Sprintf("Failed to restart context %s: %s", id, err))
		return
	}
	s.log.Info("context restarted", "id", id)
	writeJSON(w, http.StatusOK, nil)
}

func (s *Server) handleRemoveContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	c := s.contexts[id]
	if c != nil {
		delete(s.contexts, id)
		if s.defaults[c.language] == c {
			delete(s.defaults, c.language)
		}
	}
	s.mu.Unlock()
	if c == nil {
		writeText(w, http.StatusNotFound, fmt.Sprintf("Context %s not found", id))
		return
	}
	c.remove()
	s.log.Info("context removed", "id", id)
	writeJSON(w, http.StatusOK, nil)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

type executeBody struct {
	Code      *string           `json:"code"`
	ContextID *string           `json:"context_id"`
	Language  *string           `json:"language"`
	EnvVars   map[string]string `json:"env_vars"`
}

func (s *Server) handleExecute(w http.ResponseWriter, r *http.Request) {
	var req executeBody
	if err := decodeBody(r, &req); err != nil {
		writeText(w, http.StatusUnprocessableEntity, "Invalid request body: "+err.Error())
		return
	}
	if req.Code == nil {
		writeText(w, http.StatusUnprocessableEntity, "Invalid request body: code is required")
		return
	}
	id, lang := deref(req.ContextID), deref(req.Language)
	if id != "" && lang != "" {
		writeText(w, http.StatusBadRequest, "Only one of context_id or language can be provided")
		return
	}
	var c *codeContext
	switch {
	case id == "default":
		id, lang = "", langPython
		fallthrough
	case id == "":
		l, err := normalizeLanguage(lang)
		if err != nil {
			writeText(w, http.StatusBadRequest, "Failed to create context: "+err.Error())
			return
		}
		c, err = s.defaultContext(r.Context(), l)
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			s.log.Error("create default context", "language", l, "err", err)
			writeText(w, http.StatusInternalServerError, "Failed to create context: "+err.Error())
			return
		}
	default:
		if c = s.lookup(id); c == nil {
			writeText(w, http.StatusNotFound, fmt.Sprintf("Context %s not found", id))
			return
		}
	}
	s.stream(w, r, c, *req.Code, req.EnvVars)
}

// stream runs an execution and writes its events as NDJSON, flushing every
// line, with a keepalive line after every KeepaliveInterval of silence.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, c *codeContext, code string, envVars map[string]string) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}

	ctx := r.Context()
	events := make(chan event, 64)
	gone := make(chan struct{})
	defer close(gone)
	emit := func(ev event) bool {
		select {
		case events <- ev:
			return true
		case <-gone:
			return false
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.execs.Add(1)
	s.mu.Unlock()
	token := r.Header.Get("X-Access-Token")
	go func() {
		defer s.execs.Done()
		c.execute(ctx, code, envVars, token, emit)
	}()

	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	keepalive := time.NewTimer(s.cfg.KeepaliveInterval)
	defer keepalive.Stop()
	write := func(ev event) bool {
		if err := enc.Encode(ev); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for {
		select {
		case ev := <-events:
			if !write(ev) {
				return
			}
			if ev.Type == typeEnd {
				return
			}
			keepalive.Reset(s.cfg.KeepaliveInterval)
		case <-keepalive.C:
			if !write(event{Type: typeKeepalive}) {
				return
			}
			keepalive.Reset(s.cfg.KeepaliveInterval)
		case <-ctx.Done():
			return
		}
	}
}
