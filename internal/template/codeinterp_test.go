package template

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/paddockhq/paddock/internal/runtime"
)

// These tests drive EnsureCodeInterpreter's machine-cache logic with small
// fake archives (no runtime: a build would fail, so any build attempt
// shows). The real build (apt in a build sandbox, start and ready commands
// checked) is exercised end to end by test/sdk/codeinterp.test.mjs.

// fakeCodeInterpreterArchive writes an archive of a tiny code-interpreter
// layer for the base layer baseDigest into cache and returns its path and
// the layer digest it holds. complete false leaves node out.
func fakeCodeInterpreterArchive(t *testing.T, cache, baseDigest string, complete bool) (string, string) {
	t.Helper()
	src := t.TempDir()
	files := map[string]string{"usr/lib/python3/dist-packages/ipykernel/__init__.py": "# fake\n", "etc/ci-marker": "ci"}
	if complete {
		files["usr/bin/node"] = "#!fake node"
	}
	writeTree(t, src, files)
	if err := ShiftOwnership(src, runtime.UIDBase, runtime.UIDCount); err != nil {
		t.Fatal(err)
	}
	d, err := DigestTree(src)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{cfg: Config{CacheDir: cache}}
	p := m.cachePaths(CodeInterpreterAlias, codeInterpreterRecipe(baseDigest).digest())[0]
	if err := writeArchive(context.Background(), src, p); err != nil {
		t.Fatal(err)
	}
	return p, d
}

func TestEnsureCodeInterpreterFromCache(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	cache, baseDigest := fakeBaseCache(t, "base")
	_, ciDigest := fakeCodeInterpreterArchive(t, cache, baseDigest, true)
	st := newMemStore()
	p := &progressLog{t: t}
	m, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: st, Progress: p, EnvdVersion: "9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := m.EnsureCodeInterpreter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tpl.ID != CodeInterpreterID || !slices.Equal(tpl.Aliases, []string{CodeInterpreterAlias}) || !tpl.BuiltIn || !tpl.Public || tpl.Team != "" {
		t.Fatalf("identity: %+v", tpl)
	}
	if !slices.Equal(tpl.Layers, []string{baseDigest, ciDigest}) {
		t.Fatalf("layers %v, want base %s then %s", tpl.Layers, baseDigest, ciDigest)
	}
	if tpl.StartCmd != codeInterpreterStart || tpl.ReadyCmd != codeInterpreterReady || tpl.User != DefaultUser ||
		tpl.Workdir != DefaultWorkdir || tpl.CPUCount != codeInterpreterCPUs || tpl.MemoryMB != codeInterpreterMemoryMB || tpl.EnvdVersion != "9.9.9" {
		t.Fatalf("build fields: %+v", tpl)
	}
	if !strings.Contains(tpl.ReadyCmd, "/ready") {
		t.Fatalf("ready command %q does not wait for the kernel (/ready)", tpl.ReadyCmd)
	}
	if got, _ := os.ReadFile(filepath.Join(m.Layers().Path(ciDigest), "etc/ci-marker")); string(got) != "ci" {
		t.Fatalf("layer content %q", got)
	}
	noTemporaries(t, m.Layers())

	// Any team resolves it by name (with a tag too) and by ID.
	for _, ref := range []string{CodeInterpreterAlias, CodeInterpreterAlias + ":default", CodeInterpreterID} {
		got, err := m.Registry().Resolve(ctx, ref, "some-team")
		if err != nil || got.ID != CodeInterpreterID || len(got.Layers) != 2 {
			t.Fatalf("Resolve(%q) = %+v, %v", ref, got, err)
		}
	}
	// Its name is reserved.
	if _, err := m.RequestBuild(ctx, "some-team", BuildRequest{Name: CodeInterpreterAlias}); !errors.Is(err, ErrAliasTaken) {
		t.Fatalf("RequestBuild(%s) = %v, want ErrAliasTaken", CodeInterpreterAlias, err)
	}

	// Again, on this manager and on another one sharing the data dir: nothing
	// is extracted again.
	before := strings.Count(p.String(), "extracting the "+CodeInterpreterAlias)
	m2, err := New(Config{DataDir: m.cfg.DataDir, CacheDir: cache, Store: st, Progress: p, EnvdVersion: "9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	for _, mm := range []*Manager{m, m2} {
		if got, err := mm.EnsureCodeInterpreter(ctx); err != nil || !slices.Equal(got.Layers, tpl.Layers) {
			t.Fatalf("second EnsureCodeInterpreter = %v, %v", got.Layers, err)
		}
	}
	if n := strings.Count(p.String(), "extracting the "+CodeInterpreterAlias); n != before {
		t.Fatalf("extracted %d more times", n-before)
	}

	// A fresh data dir (another server on this machine) extracts it from
	// the cache to the same layer.
	m3, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: newMemStore(), Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m3.EnsureCodeInterpreter(ctx); err != nil || !slices.Equal(got.Layers, tpl.Layers) {
		t.Fatalf("EnsureCodeInterpreter on a fresh data dir = %v, %v", got.Layers, err)
	}
}

func TestEnsureCodeInterpreterBadCacheNeedsBuild(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	cache, baseDigest := fakeBaseCache(t, "base")
	archive, _ := fakeCodeInterpreterArchive(t, cache, baseDigest, false)
	st := newMemStore()
	m, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: st, Progress: &progressLog{t: t}})
	if err != nil {
		t.Fatal(err)
	}
	// The incomplete archive is refused and removed; without a runtime the
	// build cannot run, and the error says so.
	_, err = m.EnsureCodeInterpreter(ctx)
	if err == nil || !strings.Contains(err.Error(), CodeInterpreterAlias) || !strings.Contains(err.Error(), "needs a runtime") {
		t.Fatalf("EnsureCodeInterpreter = %v, want a build error naming the template", err)
	}
	if _, serr := os.Stat(archive); !os.IsNotExist(serr) {
		t.Fatalf("unusable archive %s kept (%v)", archive, serr)
	}
	if _, gerr := m.Registry().Get(ctx, CodeInterpreterID); !errors.Is(gerr, ErrNotFound) {
		t.Fatalf("template registered after a failure: %v", gerr)
	}
	noTemporaries(t, m.Layers())
	// Only the base layer is left.
	layers, err := m.Layers().List()
	if err != nil || len(layers) != 1 || layers[0] != baseDigest {
		t.Fatalf("layers after the failure: %v, %v", layers, err)
	}
	if len(m.pins) != 0 {
		t.Fatalf("pins left: %v", m.pins)
	}
}

func TestEnsureCodeInterpreterCancelled(t *testing.T) {
	needRoot(t)
	cache, _ := fakeBaseCache(t, "base")
	m, err := New(Config{DataDir: t.TempDir(), CacheDir: cache, Store: newMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	// A closed manager ends the call at once.
	m.Close()
	if _, err := m.EnsureCodeInterpreter(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("EnsureCodeInterpreter on a closed manager = %v, want context.Canceled", err)
	}
}
