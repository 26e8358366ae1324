package template

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_raw (bit 13) permitted and effective.
func capNetRaw() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x000001) // revision 2, effective
	binary.LittleEndian.PutUint32(b[4:], 1<<13)               // permitted, low word
	return b
}

// makeSpecialTree builds a tree with what a root filesystem holds: setuid
// and setgid files, a setgid dir, file capabilities, a hard link, symlinks,
// a fifo, a device node, an xattr and several owners.
func makeSpecialTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	writeTree(t, root, map[string]string{
		"usr/bin/sudo": "sudo", "usr/bin/ping": "ping", "usr/bin/wall": "wall",
		"home/user/.bashrc": "# rc", "etc/shadow": "secret", "usr/bin/python3.11": "py",
		"var/big": strings.Repeat("z", 300<<10),
	})
	must(os.Chmod(filepath.Join(root, "usr/bin/sudo"), 0o755|os.ModeSetuid))
	must(os.Lchown(filepath.Join(root, "usr/bin/wall"), 0, 5))
	must(os.Chmod(filepath.Join(root, "usr/bin/wall"), 0o755|os.ModeSetgid))
	must(unix.Lsetxattr(filepath.Join(root, "usr/bin/ping"), capabilityXattr, capNetRaw(), 0))
	must(os.Lchown(filepath.Join(root, "etc/shadow"), 0, 42))
	must(os.Chmod(filepath.Join(root, "etc/shadow"), 0o640))
	must(os.MkdirAll(filepath.Join(root, "var/mail"), 0o755))
	must(os.Lchown(filepath.Join(root, "var/mail"), 0, 8))
	must(os.Chmod(filepath.Join(root, "var/mail"), 0o775|os.ModeSetgid))
	must(os.Lchown(filepath.Join(root, "home/user"), 1000, 1000))
	must(os.Lchown(filepath.Join(root, "home/user/.bashrc"), 1000, 1000))
	must(os.Link(filepath.Join(root, "usr/bin/python3.11"), filepath.Join(root, "usr/bin/python3.11-hard")))
	must(os.Symlink("python3.11", filepath.Join(root, "usr/bin/python3")))
	must(os.Symlink("/nonexistent/target", filepath.Join(root, "dangling")))
	must(unix.Mkfifo(filepath.Join(root, "var/fifo"), 0o600))
	must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	must(unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Lsetxattr(filepath.Join(root, "etc/shadow"), "user.note", []byte("kept"), 0))
	must(os.Chmod(root, 0o755))
}

func ownerMode(t *testing.T, p string) (uid, gid uint32, mode uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid, st.Mode
}

func TestShiftOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestShiftOwnership needs root (chown, file capabilities)")
	}
	root := t.TempDir()
	makeSpecialTree(t, root)
	const base = 100000
	if err := ShiftOwnership(root, base, 65536); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rel      string
		uid, gid uint32
		bits     uint32
	}{
		{".", base, base, 0},
		{"usr/bin/sudo", base, base, unix.S_ISUID},
		{"usr/bin/wall", base, base + 5, unix.S_ISGID},
		{"var/mail", base, base + 8, unix.S_ISGID},
		{"etc/shadow", base, base + 42, 0},
		{"home/user", base + 1000, base + 1000, 0},
		{"home/user/.bashrc", base + 1000, base + 1000, 0},
		{"usr/bin/python3.11", base, base, 0}, // hard-linked: shifted once
		{"usr/bin/python3", base, base, 0},    // the link itself
		{"dangling", base, base, 0},
		{"var/fifo", base, base, 0},
		{"dev/null", base, base, 0},
	} {
		uid, gid, mode := ownerMode(t, filepath.Join(root, c.rel))
		if uid != c.uid || gid != c.gid || (c.bits != 0 && mode&c.bits == 0) {
			t.Errorf("%s: %d:%d mode %o; want %d:%d with bits %o", c.rel, uid, gid, mode, c.uid, c.gid, c.bits)
		}
	}
	if _, _, mode := ownerMode(t, filepath.Join(root, "etc/shadow")); mode&0o7777 != 0o640 {
		t.Errorf("etc/shadow mode %o changed", mode&0o7777)
	}
	caps, err := getXattr(filepath.Join(root, "usr/bin/ping"), capabilityXattr)
	if err != nil || string(caps) != string(capNetRaw()) {
		t.Errorf("file capabilities after shift = %x, %v", caps, err)
	}
	// IDs outside the namespace's range are refused.
	bad := t.TempDir()
	writeTree(t, bad, map[string]string{"f": "x"})
	if err := os.Lchown(filepath.Join(bad, "f"), 70000, 0); err != nil {
		t.Fatal(err)
	}
	if err := ShiftOwnership(bad, base, 65536); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("shift of an unmappable owner = %v", err)
	}
}

// TestArchiveRoundTrip: the machine-cache archive keeps everything the
// digest covers, compressed or not, and hard links stay links.
func TestArchiveRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestArchiveRoundTrip needs root (owners, device nodes, file capabilities)")
	}
	src := t.TempDir()
	makeSpecialTree(t, src)
	if err := ShiftOwnership(src, 100000, 65536); err != nil {
		t.Fatal(err)
	}
	want, err := DigestTree(src)
	if err != nil {
		t.Fatal(err)
	}
	exts := []string{".tar"}
	if zstdAvailable() {
		exts = append(exts, ".tar.zst")
	} else {
		t.Error("zstd is not installed (scripts/setup.sh installs it); only plain tar tested")
	}
	for _, ext := range exts {
		archive := filepath.Join(t.TempDir(), "base-x"+ext)
		if err := writeArchive(context.Background(), src, archive); err != nil {
			t.Fatal(err)
		}
		if leftovers, _ := filepath.Glob(archive + ".tmp-*"); len(leftovers) != 0 {
			t.Fatalf("temporary archive left: %v", leftovers)
		}
		dst := t.TempDir()
		if err := extractArchive(context.Background(), archive, dst); err != nil {
			t.Fatal(err)
		}
		if got, err := DigestTree(dst); err != nil || got != want {
			t.Errorf("%s: extracted digest %s, %v; want %s", ext, got, err, want)
		}
		var a, b syscall.Stat_t
		_ = syscall.Lstat(filepath.Join(dst, "usr/bin/python3.11"), &a)
		_ = syscall.Lstat(filepath.Join(dst, "usr/bin/python3.11-hard"), &b)
		if a.Ino != b.Ino {
			t.Errorf("%s: hard link not preserved", ext)
		}
	}
	// A corrupt archive fails to extract.
	bad := filepath.Join(t.TempDir(), "bad.tar.zst")
	if err := os.WriteFile(bad, []byte("not an archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := extractArchive(context.Background(), bad, t.TempDir()); err == nil {
		t.Error("extracting garbage succeeded")
	}
}

func TestDebootstrapPhase(t *testing.T) {
	for line, want := range map[string]string{
		"I: Retrieving InRelease ":                              "fetching package lists",
		"I: Checking Release signature":                         "fetching package lists",
		"I: Retrieving Packages ":                               "fetching package lists",
		"I: Resolving dependencies of base packages":            "resolving dependencies",
		"I: Checking component main on http://m.test/debian...": "resolving dependencies",
		"I: Retrieving libc6 2.36-9":                            "downloading packages",
		"I: Validating libc6 2.36-9":                            "downloading packages",
		"I: Extracting bash...":                                 "extracting packages",
		"I: Installing core packages...":                        "installing core packages",
		"I: Unpacking required packages...":                     "unpacking required packages",
		"I: Configuring required packages...":                   "configuring required packages",
		"I: Unpacking the base system...":                       "unpacking the other packages",
		"I: Configuring the base system...":                     "configuring the other packages",
		"I: Base system installed successfully.":                "done",
		"I: Configuring libc-bin...":                            "",
		"W: something":                                          "",
		"Setting up bash":                                       "",
	} {
		if got := debootstrapPhase(line); got != want {
			t.Errorf("debootstrapPhase(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestWithSbinPath(t *testing.T) {
	env := withSbinPath([]string{"HOME=/root", "PATH=/usr/bin:/bin"})
	if env[0] != "HOME=/root" || env[1] != "PATH=/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin" {
		t.Fatalf("withSbinPath = %q", env)
	}
	if env := withSbinPath(nil); len(env) != 1 || env[0] != "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" {
		t.Fatalf("withSbinPath(nil) = %q", env)
	}
}
