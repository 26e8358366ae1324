package template

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// listRuntime is a runtime.Runtime whose List returns fixed sandboxes; the
// collector calls nothing else.
type listRuntime struct {
	runtime.Runtime
	infos []runtime.Info
}

func (r *listRuntime) List(context.Context) ([]runtime.Info, error) { return r.infos, nil }

// layersRuntime offers the same sandboxes through Layers only, as
// runtime/local does beside its costlier List: the collector must use it.
type layersRuntime struct{ *listRuntime }

func (r layersRuntime) List(context.Context) ([]runtime.Info, error) {
	return nil, errors.New("List called although the runtime has Layers")
}

func (r layersRuntime) Layers(context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	for _, in := range r.infos {
		out[in.ID] = in.Layers
	}
	return out, nil
}

// commitLayer commits a one-file layer and returns its digest.
func commitLayer(t *testing.T, l *Layers, content string) string {
	t.Helper()
	b, err := l.NewBuild()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.Dir(), "f"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := b.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCollectGarbage(t *testing.T) {
	t.Run("List", func(t *testing.T) {
		rt := &listRuntime{}
		testCollectGarbage(t, rt, rt)
	})
	t.Run("Layers", func(t *testing.T) {
		rt := &listRuntime{}
		testCollectGarbage(t, rt, layersRuntime{rt})
	})
}

// testCollectGarbage runs the collector over the sandboxes in rt.infos,
// which the runtime given to the Manager reports.
func testCollectGarbage(t *testing.T, rt *listRuntime, given runtime.Runtime) {
	m, err := New(Config{DataDir: t.TempDir(), Store: newMemStore(), Runtime: given})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	l := m.Layers()
	inTemplate := commitLayer(t, l, "template")
	inTagged := commitLayer(t, l, "tagged build")
	inSandbox := commitLayer(t, l, "sandbox")
	pinned := commitLayer(t, l, "pinned")
	orphan := commitLayer(t, l, "orphan")
	tpl := Template{ID: "t1", Team: "a"}
	if err := tpl.SetTagMap(map[string]Build{"default": build("b1", inTemplate), "old": build("b0", inTagged)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.reg.Create(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	rt.infos = []runtime.Info{{ID: "i1", Layers: []string{l.Path(inSandbox)}}}
	if !m.pin(pinned) {
		t.Fatal("pin failed")
	}
	// A cache entry pointing at the orphan goes with it.
	if err := store.Put(ctx, m.cfg.Store, CacheCollection, "k1", []byte(`{"layer":"`+orphan+`"}`)); err != nil {
		t.Fatal(err)
	}

	// With a grace period an unreferenced layer survives the first pass.
	removed, err := m.CollectGarbage(ctx, time.Hour)
	if err != nil || len(removed) != 0 {
		t.Fatalf("first pass with grace: removed %v, %v", removed, err)
	}
	if !l.Exists(orphan) {
		t.Fatal("orphan removed before its grace period")
	}
	removed, err = m.CollectGarbage(ctx, 0)
	if err != nil || !slices.Equal(removed, []string{orphan}) {
		t.Fatalf("CollectGarbage = %v, %v; want only the orphan", removed, err)
	}
	for _, d := range []string{inTemplate, inTagged, inSandbox, pinned} {
		if !l.Exists(d) {
			t.Errorf("referenced layer %s was removed", d[:12])
		}
	}
	if _, err := m.cfg.Store.Get(ctx, CacheCollection, "k1"); err == nil {
		t.Errorf("cache entry of a removed layer kept")
	}

	// Unpinned, deleted template, sandbox gone: all go.
	m.unpin(pinned)
	if err := m.reg.Delete(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	// A sandbox whose layers the runtime does not know stops the collector.
	defer func(d time.Duration) { unknownLayersWait = d }(unknownLayersWait)
	unknownLayersWait = 300 * time.Millisecond
	rt.infos = []runtime.Info{{ID: "old"}}
	if removed, _ := m.CollectGarbage(ctx, 0); len(removed) != 0 {
		t.Errorf("collected %v although a sandbox's layers are unknown", removed)
	}
	rt.infos = nil
	removed, err = m.CollectGarbage(ctx, 0)
	if err != nil || len(removed) != 4 {
		t.Errorf("after everything went: removed %v, %v; want 4 layers", removed, err)
	}
	// pin refuses missing layers.
	if m.pin(orphan) {
		t.Errorf("pin of a removed layer succeeded")
	}
}

func TestBuildContextHashAndArchive(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("app/main.py", "print(1)\n")
	write("app/.hidden", "h")
	write("app/cache/x.pyc", "junk")
	write("notes.txt", "n")
	os.Symlink("main.py", filepath.Join(dir, "app/link"))
	write(".dockerignore", "# comment\napp/cache\n*.log\n")
	write("debug.log", "ignored")

	bc, err := OpenBuildContext(dir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := bc.Files("app")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"app", "app/.hidden", "app/link", "app/main.py"}; !slices.Equal(files, want) {
		t.Errorf("Files(app) = %v, want %v (dot files in, ignored dir out)", files, want)
	}
	if files, _ := bc.Files("*.txt"); !slices.Equal(files, []string{"notes.txt"}) {
		t.Errorf("Files(*.txt) = %v", files)
	}
	if _, err := bc.Files("debug.log"); err == nil {
		t.Errorf("an ignored file was matched")
	}
	if _, err := bc.Files("missing"); err == nil || !strings.Contains(err.Error(), "no files found") {
		t.Errorf("Files(missing) = %v", err)
	}
	if _, err := bc.Files("../x"); err == nil {
		t.Errorf("Files(../x) succeeded")
	}

	h1, err := bc.FilesHash("app", "/app/")
	if err != nil || !ValidDigest(h1) {
		t.Fatalf("FilesHash = %q, %v", h1, err)
	}
	if h, _ := bc.FilesHash("app", "/app/"); h != h1 {
		t.Errorf("FilesHash is not stable")
	}
	if h, _ := bc.FilesHash("app", "/other/"); h == h1 {
		t.Errorf("FilesHash ignores the destination")
	}
	write("app/main.py", "print(2)\n")
	h2, _ := bc.FilesHash("app", "/app/")
	if h2 == h1 {
		t.Errorf("FilesHash ignores file content")
	}
	os.Chmod(filepath.Join(dir, "app/main.py"), 0o755)
	if h, _ := bc.FilesHash("app", "/app/"); h == h2 {
		t.Errorf("FilesHash ignores the mode")
	}
	before, _ := bc.FilesHash("app", "/app/")
	write("app/cache/z.pyc", "ignored files do not count")
	if after, _ := bc.FilesHash("app", "/app/"); after != before {
		t.Errorf("an ignored file changed the hash")
	}

	var buf bytes.Buffer
	if err := bc.WriteArchive(&buf, "app"); err != nil {
		t.Fatal(err)
	}
	if !looksLikeArchive(buf.Bytes()) {
		t.Errorf("archive does not look like gzip")
	}
	out := t.TempDir()
	arch := filepath.Join(out, "a.tar.gz")
	os.WriteFile(arch, buf.Bytes(), 0o644)
	dst := filepath.Join(out, "x")
	os.Mkdir(dst, 0o755)
	if err := runTar(context.Background(), []string{"-x", "-z", "-f", arch, "-C", dst}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "app/main.py")); err != nil || string(b) != "print(2)\n" {
		t.Errorf("archived app/main.py = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "app/link")); err != nil || l != "main.py" {
		t.Errorf("archived symlink = %q, %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "app/cache")); err == nil {
		t.Errorf("ignored directory archived")
	}
}
