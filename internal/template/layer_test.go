package template

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, data := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestLayerCommit(t *testing.T) {
	l, err := OpenLayers(filepath.Join(t.TempDir(), "layers"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.NewBuild()
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, b.Dir(), map[string]string{"etc/hello": "hi", "usr/bin/tool": "#!/bin/sh\n"})
	want, err := DigestTree(b.Dir())
	if err != nil {
		t.Fatal(err)
	}
	// Until Commit the layer is invisible.
	if got, _ := l.List(); len(got) != 0 || l.Exists(want) {
		t.Fatalf("uncommitted layer visible: %v", got)
	}
	d, err := b.Commit()
	if err != nil || d != want {
		t.Fatalf("Commit = %s, %v; want %s", d, err, want)
	}
	if !l.Exists(d) {
		t.Fatal("committed layer does not exist")
	}
	if got, _ := os.ReadFile(filepath.Join(l.Path(d), "etc/hello")); string(got) != "hi" {
		t.Fatalf("committed content = %q", got)
	}
	if got := entries(t, l.Dir()); !reflect.DeepEqual(got, []string{d}) {
		t.Fatalf("layer dir holds %v, want only the layer (no temporaries)", got)
	}
	if _, err := b.Commit(); err == nil {
		t.Fatal("second Commit of one build succeeded")
	}

	// Same content again: same digest, the existing layer is kept.
	b2, _ := l.NewBuild()
	writeTree(t, b2.Dir(), map[string]string{"etc/hello": "hi", "usr/bin/tool": "#!/bin/sh\n"})
	if d2, err := b2.Commit(); err != nil || d2 != d {
		t.Fatalf("recommit = %s, %v", d2, err)
	}
	if got := entries(t, l.Dir()); !reflect.DeepEqual(got, []string{d}) {
		t.Fatalf("layer dir holds %v after a duplicate commit", got)
	}

	// Discard leaves nothing.
	b3, _ := l.NewBuild()
	writeTree(t, b3.Dir(), map[string]string{"x": "y"})
	b3.Discard()
	b3.Discard()
	if got := entries(t, l.Dir()); !reflect.DeepEqual(got, []string{d}) {
		t.Fatalf("layer dir holds %v after Discard", got)
	}
	if _, err := b3.Commit(); err == nil {
		t.Fatal("Commit after Discard succeeded")
	}

	// Remove: gone at once, then absent.
	if err := l.Remove(d); err != nil {
		t.Fatal(err)
	}
	if l.Exists(d) || len(entries(t, l.Dir())) != 0 {
		t.Fatalf("after Remove: exists %v, dir %v", l.Exists(d), entries(t, l.Dir()))
	}
	if err := l.Remove(d); !errors.Is(err, ErrLayerNotFound) {
		t.Fatalf("Remove(absent) = %v", err)
	}
	if err := l.Remove("../etc"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Remove(malformed) = %v", err)
	}
	if l.Exists("../etc") {
		t.Fatal("Exists accepted a malformed digest")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Path accepted a malformed digest")
			}
		}()
		l.Path("../../etc")
	}()
}

// TestLayerConcurrentCommits commits the same content from many goroutines:
// one layer results and no temporary directory is left.
func TestLayerConcurrentCommits(t *testing.T) {
	l, err := OpenLayers(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	digests := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			b, err := l.NewBuild()
			if err != nil {
				errs[i] = err
				return
			}
			for j := 0; j < 20; j++ {
				p := filepath.Join(b.Dir(), fmt.Sprintf("d%d/f%d", j%3, j))
				_ = os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(strings.Repeat("x", j)), 0o600); err != nil {
					errs[i] = err
					b.Discard()
					return
				}
			}
			digests[i], errs[i] = b.Commit()
		}(i)
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Fatalf("commit %d = %s, %v (first %s)", i, digests[i], errs[i], digests[0])
		}
	}
	if got := entries(t, l.Dir()); !reflect.DeepEqual(got, []string{digests[0]}) {
		t.Fatalf("layer dir holds %v", got)
	}
	if list, err := l.List(); err != nil || !reflect.DeepEqual(list, []string{digests[0]}) {
		t.Fatalf("List = %v, %v", list, err)
	}
}

// TestOpenLayersRemovesStale removes builds of dead processes and keeps
// those of live ones.
func TestOpenLayersRemovesStale(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, ".tmp-999999999-123")
	live := filepath.Join(dir, fmt.Sprintf(".tmp-%d-456", os.Getpid()))
	for _, d := range []string{dead, live} {
		writeTree(t, d, map[string]string{"root/file": "x"})
	}
	if _, err := OpenLayers(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale build of a dead process kept: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("build of a live process removed: %v", err)
	}
}

// TestDiscardUnmounts: a build with something mounted inside (as a killed
// debootstrap leaves proc) is unmounted before removal, nothing leaks.
func TestDiscardUnmounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestDiscardUnmounts needs root (mount)")
	}
	l, err := OpenLayers(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.NewBuild()
	if err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(b.Dir(), "proc with space")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(mp, "inner")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	writeTree(t, inner, map[string]string{"keep": "data"})
	b.Discard()
	if got := entries(t, l.Dir()); len(got) != 0 {
		t.Fatalf("layer dir holds %v after Discard", got)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), l.Dir()) {
		t.Fatalf("mount left behind under %s", l.Dir())
	}
}

func TestDigestTree(t *testing.T) {
	base := map[string]string{"a/b": "1", "c": "2"}
	mk := func() string {
		d := t.TempDir()
		writeTree(t, d, base)
		return d
	}
	ref := mk()
	d0, err := DigestTree(ref)
	if err != nil || !ValidDigest(d0) {
		t.Fatalf("DigestTree = %q, %v", d0, err)
	}
	if d, _ := DigestTree(mk()); d != d0 {
		t.Fatal("same content, different digest")
	}
	// Modification times do not count.
	other := mk()
	if err := unix.Utimes(filepath.Join(other, "c"), []unix.Timeval{{Sec: 1}, {Sec: 1}}); err != nil {
		t.Fatal(err)
	}
	if d, _ := DigestTree(other); d != d0 {
		t.Fatal("mtime changed the digest")
	}
	changes := map[string]func(dir string) error{
		"content":   func(d string) error { return os.WriteFile(filepath.Join(d, "c"), []byte("3"), 0o644) },
		"mode":      func(d string) error { return os.Chmod(filepath.Join(d, "c"), 0o600) },
		"setuid":    func(d string) error { return os.Chmod(filepath.Join(d, "c"), 0o644|os.ModeSetuid) },
		"new file":  func(d string) error { return os.WriteFile(filepath.Join(d, "a/z"), nil, 0o644) },
		"empty dir": func(d string) error { return os.Mkdir(filepath.Join(d, "e"), 0o755) },
		"symlink":   func(d string) error { return os.Symlink("c", filepath.Join(d, "l")) },
		"rename":    func(d string) error { return os.Rename(filepath.Join(d, "c"), filepath.Join(d, "d")) },
		"xattr":     func(d string) error { return unix.Lsetxattr(filepath.Join(d, "c"), "user.k", []byte("v"), 0) },
		"root mode": func(d string) error { return os.Chmod(d, 0o711) },
	}
	if os.Geteuid() == 0 {
		changes["owner"] = func(d string) error { return os.Lchown(filepath.Join(d, "c"), 1000, 1000) }
	}
	for name, change := range changes {
		d := mk()
		if err := change(d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, err := DigestTree(d); err != nil || got == d0 {
			t.Errorf("%s: digest %s unchanged (%v)", name, got, err)
		}
	}
	// A symlink's target counts.
	s1, s2 := mk(), mk()
	_ = os.Symlink("a", filepath.Join(s1, "l"))
	_ = os.Symlink("c", filepath.Join(s2, "l"))
	d1, _ := DigestTree(s1)
	d2, _ := DigestTree(s2)
	if d1 == d2 {
		t.Error("symlink target does not change the digest")
	}
	if _, err := DigestTree(filepath.Join(ref, "missing")); err == nil {
		t.Error("DigestTree of a missing dir succeeded")
	}
}
