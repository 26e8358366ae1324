// Package sandbox owns the sandbox lifecycle: create (blocking until envd
// inside accepted /init), connect, timeouts and expiry, kill, pause/resume,
// list, metrics, logs, and recovery after a restart. It owns the sandbox
// state machine and its records in the store, and drives a runtime.Runtime.
package sandbox

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// Collection is the store collection holding sandbox records.
const Collection = "sandboxes"

// ClientID is the constant E2B returns as the deprecated clientID.
const ClientID = "6532622b"

// Errors the service returns (wrapped); the API edge maps them to statuses.
var (
	ErrNotFound  = errors.New("sandbox not found")
	ErrConflict  = errors.New("sandbox is in a conflicting state")
	ErrInvalid   = errors.New("invalid request")
	ErrTemplate  = errors.New("template not found")
	ErrForbidden = errors.New("template not accessible")
	ErrNotReady  = errors.New("not ready")
)

// State is the lifecycle state of a sandbox record.
type State string

// Record states.
const (
	StateCreating State = "creating"
	StateRunning  State = "running"
	StatePaused   State = "paused"
	StateKilling  State = "killing"
)

// Record is the persisted description of one sandbox.
type Record struct {
	ID              string            `json:"id"`
	Team            string            `json:"team"`
	TemplateID      string            `json:"templateID"`
	Alias           string            `json:"alias,omitempty"`
	State           State             `json:"state"`
	Node            string            `json:"node"`
	CreatedAt       time.Time         `json:"createdAt"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	EnvVars         map[string]string `json:"envVars,omitempty"`
	CPUs            int               `json:"cpus"`
	MemoryMB        int               `json:"memoryMB"`
	DiskMB          int               `json:"diskMB"`
	EnvdVersion     string            `json:"envdVersion"`
	Secure          bool              `json:"secure"`
	Internet        bool              `json:"internet"`
	InternetSet     bool              `json:"internetSet,omitempty"`
	PublicTraffic   bool              `json:"publicTraffic"`
	MaskRequestHost string            `json:"maskRequestHost,omitempty"`
	AutoPause       bool              `json:"autoPause,omitempty"`
	AutoResume      bool              `json:"autoResume,omitempty"`
	User            string            `json:"user,omitempty"`
	Workdir         string            `json:"workdir,omitempty"`

	// AutoPauseFilesOnly: the auto-pause keeps files only (E2B's
	// autoPauseMemory false).
	AutoPauseFilesOnly bool `json:"autoPauseFilesOnly,omitempty"`
	// PausedFilesOnly: the current pause keeps files only.
	PausedFilesOnly bool `json:"pausedFilesOnly,omitempty"`
	// Saved is what the runtime holds of a paused sandbox: "" (frozen in
	// memory), "memory" or "files" (written to disk; see pause.go).
	Saved string `json:"saved,omitempty"`
	// Snapshot is the snapshot the sandbox was created from, if any.
	Snapshot string `json:"snapshot,omitempty"`
}

// Template is what the service needs to know about a template.
type Template struct {
	ID          string
	Alias       string
	Layers      []string // absolute layer paths, lowest first
	CPUs        int
	MemoryMB    int
	DiskMB      int
	User        string
	Workdir     string
	Env         map[string]string
	StartCmd    string
	ReadyCmd    string
	EnvdVersion string
}

// Templates resolves template references for the service.
type Templates interface {
	// Resolve returns the template a create request names (ID, alias or
	// name:tag) as seen by team; errors wrap ErrTemplate or ErrForbidden.
	Resolve(ctx context.Context, ref, team string) (Template, error)
}

// Config configures a Service.
type Config struct {
	Runtime   runtime.Runtime
	Store     store.Store
	Templates Templates
	// Secret keys the HMACs that derive envd access and traffic tokens.
	Secret []byte
	// Domain is returned to SDKs as the sandbox domain (nil-able on the wire).
	Domain string
	// Node names this replica; it owns the sandboxes it created.
	Node string
	// SnapshotDir holds snapshots (one directory each); snapshots are
	// refused without it. It and its parents must be searchable (o+x).
	SnapshotDir string
	// MaxTimeout bounds sandbox lifetimes (default 24 h).
	MaxTimeout time.Duration
	// NewID returns a fresh sandbox ID.
	NewID  func() string
	Logger *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time

	// PoolSize keeps that many started sandboxes of DefaultPoolTemplate
	// ready for creates (the warm pool, pool.go); 0 turns it off.
	PoolSize int
	// Pools sizes the warm pool of more templates by reference (ID, alias
	// or name:tag); an entry for DefaultPoolTemplate overrides PoolSize.
	Pools map[string]int
	// PoolTeam is the team pooled templates are resolved as (its private
	// templates can be pooled too); creates resolve as their own team.
	PoolTeam string

	// Running, when set, is called with a sandbox's ID each time one starts
	// running for a client (created cold, from the pool or from a snapshot,
	// or resumed), just before the call that did it returns. It must not
	// block: the data plane uses it to open the connection the client's
	// next request will use while the response is on its way.
	Running func(id string)
}

// Service runs the sandbox lifecycle. Create it with New, start its
// background work with Start, stop it with Close.
type Service struct {
	cfg   Config
	log   *slog.Logger
	envd  *envdClient
	now   func() time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
	ready chan struct{}

	mu       sync.Mutex
	deadline map[string]time.Time     // owned running sandboxes → end time
	busy     map[string]bool          // sandboxes with a lifecycle operation in flight
	saving   map[string]chan struct{} // paused sandboxes being written to disk
	resuming map[string]*resumeCall   // resumes in flight

	pool *pool // the warm pool (pool.go); nil when off

	mem       memoryCheck // the memory snapshot self-test
	snapLocks keyedRW     // per snapshot: creates read, delete writes

	metrics *sampler
	events  eventLog
	decoded recordCache // List's decoded records, reused while unchanged
}

// New builds a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Runtime == nil || cfg.Store == nil || cfg.Templates == nil {
		return nil, errors.New("sandbox service needs a runtime, a store and templates")
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("sandbox service needs a secret of at least 16 bytes")
	}
	if cfg.NewID == nil {
		return nil, errors.New("sandbox service needs an ID generator")
	}
	if cfg.MaxTimeout == 0 {
		cfg.MaxTimeout = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Now,
		stop:     make(chan struct{}),
		ready:    make(chan struct{}),
		deadline: map[string]time.Time{},
		busy:     map[string]bool{},
		saving:   map[string]chan struct{}{},
		resuming: map[string]*resumeCall{},
		mem:      memoryCheck{done: make(chan struct{})},
	}
	s.envd = newEnvdClient(cfg.Runtime)
	s.metrics = newSampler()
	p, err := newPool(cfg)
	if err != nil {
		return nil, err
	}
	s.pool = p
	return s, nil
}

// EnvdToken returns the envd access token of a sandbox (derived, never stored).
func (s *Service) EnvdToken(id string) string { return s.derive("envd-access-token", id) }

// TrafficToken returns the traffic access token of a sandbox.
func (s *Service) TrafficToken(id string) string { return s.derive("traffic-access-token", id) }

func (s *Service) derive(purpose, id string) string {
	m := hmac.New(sha256.New, s.cfg.Secret)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// Domain is the sandbox domain reported to SDKs ("" when none is configured).
func (s *Service) Domain() string { return s.cfg.Domain }

func (s *Service) load(ctx context.Context, id string) (Record, error) {
	var r Record
	if err := s.loadInto(ctx, id, &r); err != nil {
		return Record{}, err
	}
	return r, nil
}

// loadInto decodes the record of sandbox id into v: a Record, or a struct
// of the few fields a hot path needs.
func (s *Service) loadInto(ctx context.Context, id string, v any) error {
	raw, err := s.cfg.Store.Get(ctx, Collection, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("load sandbox %s: %w", id, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode sandbox %s: %w", id, err)
	}
	return nil
}

// loadForTeam loads a record visible to team; other teams' sandboxes are
// reported as not found.
func (s *Service) loadForTeam(ctx context.Context, team, id string) (Record, error) {
	r, err := s.load(ctx, id)
	if err != nil {
		return Record{}, err
	}
	if r.Team != team || r.State == StateKilling || r.State == StateCreating {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return r, nil
}

// update changes a record atomically; fn returns an error to abort.
func (s *Service) update(ctx context.Context, id string, fn func(r *Record) error) (Record, error) {
	var out Record
	err := store.Update(ctx, s.cfg.Store, Collection, id, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		var r Record
		if err := json.Unmarshal(old, &r); err != nil {
			return nil, fmt.Errorf("decode sandbox %s: %w", id, err)
		}
		if err := fn(&r); err != nil {
			return nil, err
		}
		out = r
		return json.Marshal(r)
	})
	return out, err
}

// claim marks a sandbox as having an operation in flight on this node;
// concurrent lifecycle operations on one sandbox get ErrConflict.
func (s *Service) claim(id string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[id] {
		return nil, fmt.Errorf("%w: sandbox %s is changing state", ErrConflict, id)
	}
	s.busy[id] = true
	return func() {
		s.mu.Lock()
		delete(s.busy, id)
		s.mu.Unlock()
	}, nil
}

// Dial connects to a port of a running sandbox (for the proxy).
func (s *Service) Dial(ctx context.Context, id string, port int) (net.Conn, error) {
	return s.cfg.Runtime.Dial(ctx, id, port)
}
