package template

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// DefaultCacheDir is the machine-wide cache of finished base layers and
// downloaded Debian packages, shared by every data directory.
const DefaultCacheDir = "/var/cache/paddock"

// DefaultAptDir is where the host's apt configuration is read from to find
// a Debian mirror.
const DefaultAptDir = "/etc/apt"

// Config configures a Manager.
type Config struct {
	// DataDir is Paddock's data directory; layers live in DataDir/layers.
	DataDir string
	// CacheDir is the machine-wide cache (default DefaultCacheDir). When it
	// cannot be created, builds run without it.
	CacheDir string
	// Store holds the template records.
	Store store.Store
	// Mirror is the Debian mirror URL for the base build; empty means the
	// one configured for apt in AptDir.
	Mirror string
	// AptDir is the apt configuration to find the mirror in (default
	// DefaultAptDir).
	AptDir string
	// Progress receives human-readable progress lines of long operations
	// (the base build); nil discards them.
	Progress io.Writer
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// EnvdVersion is recorded in the base template (see Template.EnvdVersion).
	EnvdVersion string
	// Runtime runs the sandboxes builds execute their steps in, and tells
	// the layer garbage collector which layers sandboxes use. Builds and
	// garbage collection need it.
	Runtime runtime.Runtime
	// Secret keys the HMACs of upload URLs; empty means a random key per
	// process (upload URLs then die with it).
	Secret []byte
	// MaxBuilds bounds builds running at once (default 2); more wait.
	MaxBuilds int
}

// Manager ties the registry and the layer store together and builds the
// built-in base template. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	reg    *Registry
	layers *Layers
	log    *slog.Logger
	// baseSem serialises EnsureBase within the process (one slot), ciSem
	// EnsureCodeInterpreter.
	baseSem chan struct{}
	ciSem   chan struct{}

	secret   []byte
	logs     *buildLogs
	buildSem chan struct{}

	// gcMu is held by a garbage collection pass and by pin, so a layer is
	// either pinned before the pass looks or removed before it is pinned.
	gcMu        sync.Mutex
	pins        map[string]int       // layer digest → builds using it
	unusedSince map[string]time.Time // layer digest → first seen unreferenced
	gcKick      chan struct{}
	ctx         context.Context // cancelled by Close: ends builds and the GC loop
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	startOnce   sync.Once
}

// New returns a Manager; it creates DataDir/layers if needed.
func New(cfg Config) (*Manager, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("template manager: empty data dir")
	}
	if cfg.Store == nil {
		return nil, errors.New("template manager: nil store")
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir
	}
	if cfg.AptDir == "" {
		cfg.AptDir = DefaultAptDir
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var err error
	if cfg.CacheDir, err = filepath.Abs(cfg.CacheDir); err != nil {
		return nil, fmt.Errorf("template manager: cache dir: %w", err)
	}
	layers, err := OpenLayers(filepath.Join(cfg.DataDir, "layers"))
	if err != nil {
		return nil, fmt.Errorf("template manager: %w", err)
	}
	if cfg.MaxBuilds <= 0 {
		cfg.MaxBuilds = 2
	}
	secret := cfg.Secret
	if len(secret) == 0 {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("template manager: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg:         cfg,
		reg:         NewRegistry(cfg.Store),
		layers:      layers,
		log:         cfg.Logger.With("component", "template"),
		baseSem:     make(chan struct{}, 1),
		ciSem:       make(chan struct{}, 1),
		secret:      secret,
		logs:        &buildLogs{dir: filepath.Join(cfg.DataDir, "builds")},
		buildSem:    make(chan struct{}, cfg.MaxBuilds),
		pins:        map[string]int{},
		unusedSince: map[string]time.Time{},
		gcKick:      make(chan struct{}, 1),
		ctx:         ctx,
		cancel:      cancel,
	}, nil
}

// Registry is the template registry.
func (m *Manager) Registry() *Registry { return m.reg }

// Layers is the layer store.
func (m *Manager) Layers() *Layers { return m.layers }

// LayerPaths returns the absolute directories of t's layers, lowest first,
// for runtime.Spec.Layers; ErrLayerNotFound if one is missing on disk.
func (m *Manager) LayerPaths(t Template) ([]string, error) {
	out := make([]string, 0, len(t.Layers))
	for _, d := range t.Layers {
		if !m.layers.Exists(d) {
			return nil, fmt.Errorf("template %s: layer %s: %w", t.ID, d, ErrLayerNotFound)
		}
		out = append(out, m.layers.Path(d))
	}
	return out, nil
}

// progressf writes one progress line.
func (m *Manager) progressf(format string, args ...any) {
	fmt.Fprintf(m.cfg.Progress, format+"\n", args...)
}
