package template

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// These tests drive EnsureBase's logic with a small fake base archive in a
// private cache dir, and its failure paths with a real debootstrap against
// unusable mirrors. They need root (owners in the archive, debootstrap).

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%s needs root", t.Name())
	}
}

// fakeBaseCache writes a tiny base archive for the current recipe into a new
// cache dir and returns the dir and the layer digest the archive holds.
func fakeBaseCache(t *testing.T, marker string) (string, string) {
	t.Helper()
	src := t.TempDir()
	writeTree(t, src, map[string]string{"usr/bin/bash": "#!fake bash", "etc/marker": marker})
	if err := ShiftOwnership(src, runtime.UIDBase, runtime.UIDCount); err != nil {
		t.Fatal(err)
	}
	d, err := DigestTree(src)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	if err := writeArchive(context.Background(), src, filepath.Join(cache, "base-"+baseRecipe().digest()+".tar.zst")); err != nil {
		t.Fatal(err)
	}
	return cache, d
}

// noTemporaries fails if a layer build directory is left in l.
func noTemporaries(t *testing.T, l *Layers) {
	t.Helper()
	for _, name := range entries(t, l.Dir()) {
		if strings.HasPrefix(name, tmpPrefix) {
			t.Errorf("temporary layer dir left: %s", name)
		}
	}
}

func TestEnsureBaseFromCache(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	cache, digest := fakeBaseCache(t, "one")
	st := newMemStore()
	p := &progressLog{t: t}
	m, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: st, Progress: p, EnvdVersion: "9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	runs := debootstrapRuns.Load()
	base, err := m.EnsureBase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if debootstrapRuns.Load() != runs {
		t.Fatal("debootstrap ran although the machine cache has the base")
	}
	if base.ID != BaseID || len(base.Layers) != 1 || base.Layers[0] != digest || base.Recipe != baseRecipe().digest() ||
		base.EnvdVersion != "9.9.9" || !base.Public || !base.BuiltIn || base.Team != "" {
		t.Fatalf("base = %+v (want layer %s)", base, digest)
	}
	if got, _ := os.ReadFile(filepath.Join(m.Layers().Path(digest), "etc/marker")); string(got) != "one" {
		t.Fatalf("layer content %q", got)
	}
	if paths, err := m.LayerPaths(base); err != nil || len(paths) != 1 || paths[0] != m.Layers().Path(digest) {
		t.Fatalf("LayerPaths = %v, %v", paths, err)
	}
	noTemporaries(t, m.Layers())

	// Concurrent callers on this manager and on a second one sharing the
	// data dir and store (as a second process would): nothing more happens.
	m2, err := New(Config{DataDir: m.cfg.DataDir, CacheDir: cache, Store: st, Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	before := strings.Count(p.String(), "extracting")
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(mm *Manager) {
			defer wg.Done()
			if got, err := mm.EnsureBase(ctx); err != nil || got.Layers[0] != digest {
				t.Errorf("concurrent EnsureBase = %v, %v", got.Layers, err)
			}
		}([]*Manager{m, m2}[i%2])
	}
	wg.Wait()
	if n := strings.Count(p.String(), "extracting"); n != before {
		t.Fatalf("concurrent EnsureBase extracted %d more times", n-before)
	}

	// A new envd version only updates the record.
	m3, err := New(Config{DataDir: m.cfg.DataDir, CacheDir: cache, Store: st, Progress: p, EnvdVersion: "9.9.10"})
	if err != nil {
		t.Fatal(err)
	}
	before = strings.Count(p.String(), "extracting")
	if got, err := m3.EnsureBase(ctx); err != nil || got.EnvdVersion != "9.9.10" || got.Layers[0] != digest {
		t.Fatalf("EnsureBase with a new envd version = %+v, %v", got, err)
	}
	if n := strings.Count(p.String(), "extracting"); n != before {
		t.Fatal("a new envd version re-extracted the base")
	}

	// A missing layer (data dir cleaned) is restored.
	if err := m.Layers().Remove(digest); err != nil {
		t.Fatal(err)
	}
	if _, err := m.LayerPaths(base); !errors.Is(err, ErrLayerNotFound) {
		t.Fatalf("LayerPaths of a removed layer = %v", err)
	}
	if _, err := m.EnsureBase(ctx); err != nil || !m.Layers().Exists(digest) {
		t.Fatalf("EnsureBase after the layer vanished: %v (exists %v)", err, m.Layers().Exists(digest))
	}
}

// TestEnsureBaseConcurrentFirstRun: several managers on one data dir start
// together on an empty data dir; the base is extracted once.
func TestEnsureBaseConcurrentFirstRun(t *testing.T) {
	needRoot(t)
	cache, digest := fakeBaseCache(t, "x")
	st := newMemStore()
	p := &progressLog{t: t}
	dataDir := t.TempDir()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		m, err := New(Config{DataDir: dataDir, CacheDir: cache, Store: st, Progress: p})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := m.EnsureBase(context.Background()); err != nil || got.Layers[0] != digest {
				t.Errorf("EnsureBase = %v, %v", got.Layers, err)
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(p.String(), "extracting"); n != 1 {
		t.Fatalf("base extracted %d times, want 1:\n%s", n, p.String())
	}
}

// TestEnsureBaseUpgradesRecipe: a base registered from an older recipe is
// re-pointed at the current layer; a user template holding the base alias
// is an error, not overwritten.
func TestEnsureBaseUpgradesRecipe(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	cache, digest := fakeBaseCache(t, "new")
	st := newMemStore()
	reg := NewRegistry(st)
	old := mustCreate(t, reg, Template{ID: BaseID, Aliases: []string{BaseAlias}, BuiltIn: true, Public: true,
		Layers: []string{layerA}, Recipe: "old", StartCmd: "kept"})
	m, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	base, err := m.EnsureBase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if base.Layers[0] != digest || base.Recipe != baseRecipe().digest() || base.CreatedAt != old.CreatedAt {
		t.Fatalf("upgraded base = %+v", base)
	}

	// The alias belongs to somebody else: refuse.
	// (Create refuses the reserved alias; older data may still hold it.)
	if _, err := reg.Create(ctx, Template{Aliases: []string{BaseAlias}, Team: "team-a", Layers: []string{layerA}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a team template took the reserved alias: %v", err)
	}
	st2 := newMemStore()
	mustCreate(t, NewRegistry(st2), Template{ID: "squatter", Aliases: []string{"x"}, Team: "team-a", Layers: []string{layerA}})
	if err := st2.Apply(ctx, store.Op{Collection: AliasesCollection, Key: BaseAlias, Value: aliasValue("squatter")}); err != nil {
		t.Fatal(err)
	}
	m2, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: st2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.EnsureBase(ctx); !errors.Is(err, ErrAliasTaken) {
		t.Fatalf("EnsureBase with the base alias taken = %v, want ErrAliasTaken", err)
	}
}

// TestEnsureBaseBuildFailure: an unusable cache archive is dropped, the
// build against an unreachable mirror fails with debootstrap's output, and
// nothing is left behind (no layer, no temporary dir, no record, no cache).
func TestEnsureBaseBuildFailure(t *testing.T) {
	needRoot(t)
	cache := t.TempDir()
	archive := filepath.Join(cache, "base-"+baseRecipe().digest()+".tar.zst")
	if err := os.WriteFile(archive, []byte("corrupt"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/debian"
	ln.Close() // nothing listens there now
	st := newMemStore()
	p := &progressLog{t: t}
	m, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: st, Progress: p, Mirror: closed})
	if err != nil {
		t.Fatal(err)
	}
	runs := debootstrapRuns.Load()
	_, err = m.EnsureBase(context.Background())
	if err == nil {
		t.Fatal("EnsureBase with an unreachable mirror succeeded")
	}
	t.Logf("error: %v", err)
	if debootstrapRuns.Load() != runs+1 || !strings.Contains(err.Error(), "debootstrap") || !strings.Contains(err.Error(), "last output") ||
		!strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("error does not carry debootstrap's output: %v", err)
	}
	if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("corrupt cache archive kept: %v", err)
	}
	if !strings.Contains(p.String(), "unusable") {
		t.Errorf("progress does not report the unusable cache:\n%s", p.String())
	}
	if got := entries(t, m.Layers().Dir()); len(got) != 1 || got[0] != ".base.lock" {
		t.Errorf("layer dir holds %v after a failed build", got)
	}
	if keys := st.keys(TemplatesCollection); len(keys) != 0 {
		t.Errorf("template records after a failed build: %v", keys)
	}
	if arch, _ := filepath.Glob(filepath.Join(cache, "base-*.tar*")); len(arch) != 0 {
		t.Errorf("cache archives after a failed build: %v", arch)
	}
}

// TestEnsureBaseCancel: cancelling during debootstrap (stuck on a mirror
// that never answers) returns the context error and leaves no process and
// no files behind.
func TestEnsureBaseCancel(t *testing.T) {
	needRoot(t)
	release := make(chan struct{})
	var once sync.Once
	hit := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(hit) })
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	m, err := New(Config{DataDir: t.TempDir(), CacheDir: t.TempDir(), Store: newMemStore(), Mirror: srv.URL + "/debian"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := m.EnsureBase(ctx)
		done <- err
	}()
	select {
	case <-hit:
	case err := <-done:
		t.Fatalf("EnsureBase ended before reaching the mirror: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("debootstrap never reached the mirror")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled EnsureBase = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("EnsureBase did not return after cancel")
	}
	if got := entries(t, m.Layers().Dir()); len(got) != 1 || got[0] != ".base.lock" {
		t.Errorf("layer dir holds %v after cancel", got)
	}
	// No process of the build survives (none has the layer dir on its command line).
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), m.Layers().Dir()) {
			t.Errorf("process %s still runs: %q", p, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
