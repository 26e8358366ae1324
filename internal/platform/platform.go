// Package platform owns the Platform API edge: the REST handlers E2B SDKs
// call with X-API-KEY (sandboxes, templates and their builds), API
// key authentication with failure rate limiting, CORS, and the mapping of
// service errors to E2B's {"code","message"} error shape. Wire types are
// generated from api/openapi.yaml (package platform/api).
package platform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/paddockhq/paddock/internal/auth"
	"github.com/paddockhq/paddock/internal/platform/api"
	"github.com/paddockhq/paddock/internal/sandbox"
	"github.com/paddockhq/paddock/internal/template"
)

// Config configures the API handler.
type Config struct {
	Sandboxes *sandbox.Service
	// Templates serves the template routes; nil answers them with 503.
	Templates *template.Manager
	// TemplateUse refuses deleting templates sandboxes still run from.
	TemplateUse TemplateUse
	// Keys verifies API keys.
	Keys *auth.Keys
	// Limiter rate-limits failed authentication per client address.
	Limiter *auth.Limiter
	// Health reports readiness and named checks for GET /health.
	Health  func() (ready bool, checks map[string]string)
	Version string
	Runtime string
	// DefaultTimeoutV1/V2 are create timeouts when the request has none.
	DefaultTimeoutV1 time.Duration
	DefaultTimeoutV2 time.Duration
	Logger           *slog.Logger
}

// Server implements api.ServerInterface.
type Server struct {
	cfg      Config
	log      *slog.Logger
	listings *listingCache // JSON of listed sandboxes (listing.go)
}

type teamKey struct{}

// New returns the Platform API handler.
func New(cfg Config) http.Handler {
	if cfg.DefaultTimeoutV1 == 0 {
		cfg.DefaultTimeoutV1 = 15 * time.Second
	}
	if cfg.DefaultTimeoutV2 == 0 {
		cfg.DefaultTimeoutV2 = 300 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, listings: newListingCache(listingGeneration)}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("route %s %s not found", r.Method, r.URL.Path))
	})
	api.HandlerWithOptions(s, api.StdHTTPServerOptions{
		BaseRouter: mux,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, http.StatusBadRequest, err.Error())
		},
	})
	routes := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Not in the generated router (its pattern overlaps another one).
		if alias, ok := aliasRoute(r); ok {
			s.getTemplateAlias(w, r, alias)
			return
		}
		mux.ServeHTTP(w, r)
	})
	return withCORS(s.authenticate(rejectBadQuery(routes)))
}

// rejectBadQuery answers 400 to a query string that does not parse (such as
// a stray '%'): the generated handlers read r.URL.Query(), which silently
// drops such a pair, so a malformed filter would list everything.
func rejectBadQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid query string: %v", err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate checks X-API-KEY on every route but /health, rate limiting
// failures per client address.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Template file uploads carry a signed token instead of a key.
		if r.URL.Path == "/health" || r.Method == http.MethodOptions || isUploadRoute(r) {
			next.ServeHTTP(w, r)
			return
		}
		addr := clientAddr(r)
		if s.cfg.Limiter != nil {
			if wait, ok := s.cfg.Limiter.Allow(addr); !ok {
				secs := int(wait.Round(time.Second) / time.Second)
				if secs < 1 {
					secs = 1
				}
				w.Header().Set("Retry-After", strconv.Itoa(secs))
				writeError(w, http.StatusTooManyRequests, "too many failed authentication attempts; retry later")
				return
			}
		}
		key := r.Header.Get("X-API-Key")
		if key == "" {
			if s.cfg.Limiter != nil {
				s.cfg.Limiter.Fail(addr)
			}
			writeError(w, http.StatusUnauthorized, "missing API key: send it in the X-API-KEY header")
			return
		}
		k, err := s.cfg.Keys.Verify(r.Context(), key)
		if err != nil {
			if s.cfg.Limiter != nil {
				s.cfg.Limiter.Fail(addr)
			}
			s.log.Info("authentication failed", "remote", addr, "err", err)
			writeError(w, http.StatusUnauthorized, "invalid API key")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), teamKey{}, k.Team)))
	})
}

func teamOf(r *http.Request) string {
	t, _ := r.Context().Value(teamKey{}).(string)
	return t
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// writeError writes E2B's error body: code is the HTTP status.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, api.Error{Code: int32(status), Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// maxBody bounds request bodies of the Platform API.
const maxBody = 1 << 20

// decode reads a JSON body into v; an empty body leaves v untouched unless
// required.
func decode(r *http.Request, v any, required bool) error {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if len(raw) > maxBody {
		return fmt.Errorf("request body exceeds %d bytes", maxBody)
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		if required {
			return errors.New("request body is required")
		}
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

// serviceError maps sandbox service errors to API errors.
func (s *Server) serviceError(w http.ResponseWriter, r *http.Request, err error) {
	status := serviceStatus(err)
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, status, err.Error())
}

// serviceStatus is the HTTP status of a sandbox service error.
func serviceStatus(err error) int {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, sandbox.ErrTemplate):
		status = http.StatusNotFound
	case errors.Is(err, sandbox.ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, sandbox.ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, sandbox.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, sandbox.ErrNotReady):
		status = http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled):
		status = 499
	}
	return status
}

func withCORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != "" {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", "*")
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, X-API-Key, X-Team-ID, Content-Type, browser, lang, lang_version, package_version, publisher, sdk_runtime, system, User-Agent")
			h.Set("Access-Control-Expose-Headers", "X-Next-Token, X-Total-Running, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset")
			h.Set("Access-Control-Max-Age", "7200")
			if r.Method == http.MethodOptions {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
