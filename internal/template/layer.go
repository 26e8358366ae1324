package template

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

var digestRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidDigest reports whether d is a layer digest: 64 lowercase hex
// characters (a SHA-256, see DigestTree).
func ValidDigest(d string) bool { return digestRe.MatchString(d) }

// ErrLayerNotFound: no committed layer with that digest.
var ErrLayerNotFound = errors.New("layer not found")

// tmpPrefix names directories of layers being built; the creating process's
// PID follows it so stale ones can be told from live ones.
const tmpPrefix = ".tmp-"

// Layers is a content-addressed store of read-only directory trees under
// one directory: <dir>/<digest>/ is a committed layer (an overlayfs lower
// dir), <dir>/.tmp-<pid>-<random>/ a layer being built. A layer is built in
// a temporary directory on the same filesystem and renamed into place, so a
// layer either exists completely or not at all. Committed layers must not be
// modified. Safe for concurrent use, also by several processes.
type Layers struct {
	dir string
}

// OpenLayers opens (creating it if needed) the layer store in dir and
// removes temporary directories left behind by processes that died.
func OpenLayers(dir string) (*Layers, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open layers %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open layers %s: %w", abs, err)
	}
	l := &Layers{dir: abs}
	if err := l.removeStale(); err != nil {
		return nil, err
	}
	return l, nil
}

// Dir is the store's directory.
func (l *Layers) Dir() string { return l.dir }

// Path is the directory of the layer with that digest (whether or not it
// exists). It panics on a malformed digest, which would escape the store.
func (l *Layers) Path(digest string) string {
	if !ValidDigest(digest) {
		panic(fmt.Sprintf("template: malformed layer digest %q", digest))
	}
	return filepath.Join(l.dir, digest)
}

// Exists reports whether a committed layer with that digest exists.
func (l *Layers) Exists(digest string) bool {
	if !ValidDigest(digest) {
		return false
	}
	fi, err := os.Lstat(l.Path(digest))
	return err == nil && fi.IsDir()
}

// List returns the digests of all committed layers, sorted.
func (l *Layers) List() ([]string, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && ValidDigest(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Remove deletes a committed layer: it first disappears atomically (renamed
// away), then its files are removed. The caller makes sure no sandbox uses
// it. ErrLayerNotFound when absent.
func (l *Layers) Remove(digest string) error {
	if !ValidDigest(digest) {
		return fmt.Errorf("remove layer %q: %w: malformed digest", digest, ErrInvalid)
	}
	trash, err := os.MkdirTemp(l.dir, l.tmpPattern())
	if err != nil {
		return fmt.Errorf("remove layer %s: %w", digest, err)
	}
	dst := filepath.Join(trash, "layer")
	if err := os.Rename(l.Path(digest), dst); err != nil {
		_ = os.Remove(trash)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove layer %s: %w", digest, ErrLayerNotFound)
		}
		return fmt.Errorf("remove layer %s: %w", digest, err)
	}
	if err := removeTree(trash); err != nil {
		return fmt.Errorf("remove layer %s: %w", digest, err)
	}
	return nil
}

func (l *Layers) tmpPattern() string {
	return tmpPrefix + strconv.Itoa(os.Getpid()) + "-*"
}

// removeStale deletes temporary directories whose creating process is gone.
func (l *Layers) removeStale() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("scan layers %s: %w", l.dir, err)
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), tmpPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && pid > 0 && processAlive(pid) {
			continue
		}
		if err := removeTree(filepath.Join(l.dir, e.Name())); err != nil {
			return fmt.Errorf("remove stale layer build %s: %w", e.Name(), err)
		}
	}
	return nil
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// LayerBuild is a layer under construction: fill Dir, then Commit or
// Discard. Until Commit nothing of it is visible in the store.
type LayerBuild struct {
	l    *Layers
	tmp  string // private temporary directory
	root string // the layer's root, inside tmp
	done bool
}

// NewBuild starts a new layer. Its root directory exists, empty, mode 0755
// and owned by the caller; the builder sets its final owner and mode.
func (l *Layers) NewBuild() (*LayerBuild, error) {
	tmp, err := os.MkdirTemp(l.dir, l.tmpPattern())
	if err != nil {
		return nil, fmt.Errorf("new layer build: %w", err)
	}
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("new layer build: %w", err)
	}
	return &LayerBuild{l: l, tmp: tmp, root: root}, nil
}

// Dir is the root of the layer being built.
func (b *LayerBuild) Dir() string { return b.root }

// Commit computes the tree's digest and atomically moves it into the store.
// If a layer with the same digest already exists the build is discarded and
// the existing layer kept (same content). The build is finished either way.
func (b *LayerBuild) Commit() (string, error) {
	if b.done {
		return "", errors.New("commit layer: build already finished")
	}
	digest, err := DigestTree(b.root)
	if err != nil {
		b.Discard()
		return "", fmt.Errorf("commit layer: %w", err)
	}
	return digest, b.commitAs(digest)
}

func (b *LayerBuild) commitAs(digest string) error {
	defer b.Discard()
	if err := unix.Renameat2(unix.AT_FDCWD, b.root, unix.AT_FDCWD, b.l.Path(digest), unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			return nil // same content already committed
		}
		return fmt.Errorf("commit layer %s: %w", digest, err)
	}
	return nil
}

// Discard removes the build's files. Calling it after Commit does nothing.
func (b *LayerBuild) Discard() {
	if b.done {
		return
	}
	b.done = true
	_ = removeTree(b.tmp)
}

// removeTree unmounts anything mounted below dir (a crashed build can leave
// proc or sys mounted in a chroot) and removes dir recursively.
func removeTree(dir string) error {
	if err := unmountBelow(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// unmountBelow lazily unmounts every mount point at or below dir, deepest
// first.
func unmountBelow(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountPath(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	// Deepest first: a mount below another has a longer path.
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for space...).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
