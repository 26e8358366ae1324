package template

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// progressLog collects progress lines and mirrors them to the test log.
type progressLog struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (p *progressLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Logf("progress: %s", strings.TrimRight(string(b), "\n"))
	return p.buf.Write(b)
}

func (p *progressLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// testCacheDir is the machine cache the real build test uses: the shared
// default, so later runs (and the SDK tests) reuse the result.
func testCacheDir() string {
	if d := os.Getenv("PADDOCK_CACHE_DIR"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// TestEnsureBaseReal builds (or extracts from the machine cache) the real
// base template, checks its root filesystem, then prepares it in a second
// data dir, which must come from the machine cache without debootstrap.
func TestEnsureBaseReal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestEnsureBaseReal needs root (debootstrap, chown); run the tests as root")
	}
	if _, err := debootstrapPath(); err != nil {
		t.Fatal("TestEnsureBaseReal needs debootstrap (scripts/setup.sh installs it):", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	p1 := &progressLog{t: t}
	st1 := newMemStore()
	m1, err := New(Config{DataDir: t.TempDir(), CacheDir: testCacheDir(), Store: st1, Progress: p1, EnvdVersion: "0.6.4"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	base, err := m1.EnsureBase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first EnsureBase: %v", time.Since(start))
	if base.ID != BaseID || len(base.Aliases) != 1 || base.Aliases[0] != BaseAlias || !base.Public || !base.BuiltIn ||
		base.User != "user" || base.Workdir != "/home/user" || base.EnvdVersion != "0.6.4" || len(base.Layers) != 1 {
		t.Fatalf("base template record = %+v", base)
	}
	if got, err := m1.Registry().Resolve(ctx, "base", "some-team"); err != nil || got.ID != BaseID {
		t.Fatalf("Resolve(base) = %+v, %v", got, err)
	}
	paths, err := m1.LayerPaths(base)
	if err != nil {
		t.Fatal(err)
	}
	checkBaseRoot(t, paths[0])

	// Idempotent: a second call in the same data dir does nothing visible.
	before := p1.String()
	again, err := m1.EnsureBase(ctx)
	if err != nil || again.Layers[0] != base.Layers[0] {
		t.Fatalf("second EnsureBase = %+v, %v", again, err)
	}
	if p1.String() != before {
		t.Fatalf("second EnsureBase in the same data dir printed progress: %q", strings.TrimPrefix(p1.String(), before))
	}

	// Another data dir: from the machine cache, no debootstrap.
	runs := debootstrapRuns.Load()
	p2 := &progressLog{t: t}
	m2, err := New(Config{DataDir: t.TempDir(), CacheDir: testCacheDir(), Store: newMemStore(), Progress: p2})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	base2, err := m2.EnsureBase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("EnsureBase from the machine cache: %v", time.Since(start))
	if n := debootstrapRuns.Load(); n != runs {
		t.Fatalf("debootstrap ran %d time(s) for the second data dir", n-runs)
	}
	if !strings.Contains(p2.String(), "from the machine cache") {
		t.Fatalf("second data dir progress does not mention the machine cache:\n%s", p2.String())
	}
	// Same digest: the archive round-trip kept every owner, mode, xattr and byte.
	if base2.Layers[0] != base.Layers[0] {
		t.Fatalf("layer from the machine cache %s != built layer %s", base2.Layers[0], base.Layers[0])
	}
	paths2, err := m2.LayerPaths(base2)
	if err != nil {
		t.Fatal(err)
	}
	checkBaseRoot(t, paths2[0])
	if d, err := DigestTree(paths2[0]); err != nil || d != base.Layers[0] {
		t.Fatalf("re-digest of the extracted layer = %s, %v; want %s", d, err, base.Layers[0])
	}

	// The userland works inside the sandbox's user namespace, on an overlay
	// of the layer as the runtime mounts it (so the layer stays untouched).
	merged := overlayOf(t, paths2[0])
	for _, c := range []struct {
		uid  uint32
		argv []string
		want string
	}{
		{0, []string{"/usr/bin/id", "-un"}, "root\n"},
		{0, []string{"/usr/bin/python3", "-c", "import ssl, venv, pip; p = ssl.get_default_verify_paths(); assert p.cafile or p.capath; print('ok')"}, "ok\n"},
		{0, []string{"/usr/sbin/visudo", "--check", "--quiet"}, ""},
		{0, []string{"/usr/bin/git", "--version"}, "git version "},
		{0, []string{"/usr/bin/curl", "--version"}, "curl "},
		{1000, []string{"/usr/bin/id", "-un"}, "user\n"},
		{1000, []string{"/usr/bin/sudo", "-n", "/usr/bin/id", "-u"}, "0\n"},
		{1000, []string{"/bin/bash", "-lc", "cd && pwd && touch mine && stat -c %U mine"}, "/home/user\nuser\n"},
		{1000, []string{"/usr/bin/python", "-m", "venv", "/tmp/venv"}, ""},
	} {
		out, err := runInSandboxNS(ctx, merged, c.uid, c.argv...)
		if err != nil || !strings.HasPrefix(out, c.want) {
			t.Errorf("uid %d %v in the base: %q, %v; want prefix %q", c.uid, c.argv, out, err, c.want)
		}
	}
}

// overlayOf mounts an overlay with layer as its only lower dir, like the
// runtime does, and returns the merged dir; unmounted at cleanup.
func overlayOf(t *testing.T, layer string) string {
	t.Helper()
	dir := t.TempDir()
	upper, work, merged := filepath.Join(dir, "u"), filepath.Join(dir, "w"), filepath.Join(dir, "m")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(upper, runtime.UIDBase, runtime.UIDBase); err != nil {
		t.Fatal(err)
	}
	opts := "lowerdir=" + layer + ",upperdir=" + upper + ",workdir=" + work
	if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(merged, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})
	// The runtime provides /dev; these checks need /dev/null only.
	null := filepath.Join(merged, "dev/null")
	if err := os.WriteFile(null, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("/dev/null", null, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind /dev/null: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(null, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount /dev/null: %v", err)
		}
	})
	return merged
}

// runInSandboxNS runs argv chrooted into root, in a new user namespace
// mapping 0 to runtime.UIDBase (as sandboxes are), as uid (and gid) inside.
func runInSandboxNS(ctx context.Context, root string, uid uint32, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: runtime.UIDBase, Size: runtime.UIDCount}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: runtime.UIDBase, Size: runtime.UIDCount}},
		GidMappingsEnableSetgroups: true,
		Chroot:                     root,
		Credential:                 &syscall.Credential{Uid: uid, Gid: uid},
	}
	cmd.Dir = "/"
	home := "/root"
	if uid != 0 {
		home = "/home/user"
	}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home, "LANG=C.UTF-8"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), nil
}

// checkBaseRoot checks the base root filesystem at root.
func checkBaseRoot(t *testing.T, root string) {
	t.Helper()
	stat := func(rel string, follow bool) (fs.FileInfo, *syscall.Stat_t) {
		t.Helper()
		p := filepath.Join(root, rel)
		fi, err := os.Lstat(p)
		if follow {
			fi, err = os.Stat(p)
		}
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		return fi, fi.Sys().(*syscall.Stat_t)
	}
	const base = runtime.UIDBase
	for _, rel := range []string{"bin/bash", "usr/bin/python3", "usr/bin/pip3", "usr/bin/python", "usr/bin/git", "usr/bin/curl", "usr/bin/ps", "usr/sbin/ip", "usr/bin/ping", "usr/bin/less", "etc/ssl/certs/ca-certificates.crt"} {
		if fi, _ := stat(rel, true); !fi.Mode().IsRegular() {
			t.Errorf("%s is %v, want a regular file", rel, fi.Mode())
		}
	}
	fi, st := stat("usr/bin/sudo", false)
	if fi.Mode()&fs.ModeSetuid == 0 || st.Uid != base || st.Gid != base {
		t.Errorf("/usr/bin/sudo: mode %v owner %d:%d, want setuid and %d:%d", fi.Mode(), st.Uid, st.Gid, base, base)
	}
	fi, st = stat("etc/sudoers.d/user", false)
	if fi.Mode().Perm() != 0o440 || st.Uid != base {
		t.Errorf("/etc/sudoers.d/user: mode %v owner %d, want 0440 and %d", fi.Mode(), st.Uid, base)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/sudoers.d/user")); string(b) != "user ALL=(ALL:ALL) NOPASSWD: ALL\n" {
		t.Errorf("/etc/sudoers.d/user = %q", b)
	}
	fi, st = stat("home/user", false)
	if !fi.IsDir() || st.Uid != base+1000 || st.Gid != base+1000 {
		t.Errorf("/home/user: %v owner %d:%d, want a dir owned by %d:%d", fi.Mode(), st.Uid, st.Gid, base+1000, base+1000)
	}
	if _, st = stat("home/user/.bashrc", false); st.Uid != base+1000 {
		t.Errorf("/home/user/.bashrc owned by %d", st.Uid)
	}
	if _, st = stat(".", false); st.Uid != base || st.Gid != base {
		t.Errorf("layer root owned by %d:%d", st.Uid, st.Gid)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "\nuser:x:1000:1000:") || !strings.Contains(string(passwd), ":/home/user:/bin/bash\n") {
		t.Errorf("/etc/passwd has no user 1000 with home /home/user and bash:\n%s", passwd)
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !strings.Contains(string(group), "\nuser:x:1000:") {
		t.Errorf("/etc/group has no group user 1000:\n%s", group)
	}
	for _, rel := range []string{"etc/hostname", "etc/resolv.conf"} {
		if fi, _ := stat(rel, false); !fi.Mode().IsRegular() || fi.Size() != 0 {
			t.Errorf("%s: %v, %d bytes; want an empty file (the runtime writes it)", rel, fi.Mode(), fi.Size())
		}
	}
	if ents, err := os.ReadDir(filepath.Join(root, "dev")); err != nil || len(ents) != 0 {
		t.Errorf("/dev has %d entries (%v), want none", len(ents), err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "var/lib/apt/lists")); len(ents) > 1 { // "partial" may stay
		t.Errorf("apt lists not removed: %d entries", len(ents))
	}
	if debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb")); len(debs) != 0 {
		t.Errorf("%d .deb files left in apt's cache", len(debs))
	}
	if m, _ := filepath.Glob(filepath.Join(root, "usr/lib/python3*/EXTERNALLY-MANAGED")); len(m) != 0 {
		t.Errorf("EXTERNALLY-MANAGED still present: %v", m)
	}
	src, _ := os.ReadFile(filepath.Join(root, "etc/apt/sources.list.d/debian.sources"))
	if !strings.Contains(string(src), "Suites: bookworm") || !strings.Contains(string(src), "URIs: http") {
		t.Errorf("apt sources of the template:\n%s", src)
	}
	// Every entry is owned inside the sandbox's ID range.
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		n++
		if st.Uid < base || st.Uid >= base+runtime.UIDCount || st.Gid < base || st.Gid >= base+runtime.UIDCount {
			t.Errorf("%s owned by %d:%d, outside [%d, %d)", p, st.Uid, st.Gid, base, base+runtime.UIDCount)
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5000 {
		t.Errorf("base root has only %d entries", n)
	}
}
