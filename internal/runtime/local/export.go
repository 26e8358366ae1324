package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/runtime"
)

// exportSkip lists paths (relative to the root) the runtime places in every
// sandbox's writable layer itself: mount points libcontainer creates when a
// template lacks them. They are never part of exported changes.
var exportSkip = map[string]bool{
	".paddock":        true, // envd's bind mount
	"etc/hostname":    true, // bind-mounted per sandbox
	"etc/hosts":       true,
	"etc/resolv.conf": true,
}

// exportSkipBelow lists directories whose content is the kernel's or the
// runtime's (mounted over), kept as empty directories.
var exportSkipBelow = map[string]bool{"proc": true, "sys": true, "dev": true}

// ExportChanges implements runtime.Runtime: it copies the sandbox's upper
// dir (overlayfs's own whiteouts and opaque directories included) into dst
// while the sandbox's cgroup is frozen.
func (r *Runtime) ExportChanges(ctx context.Context, id, dst string) error {
	if !validID(id) {
		return fmt.Errorf("export changes of sandbox %q: %w", id, runtime.ErrNotFound)
	}
	if err := checkEmptyDir(dst); err != nil {
		return fmt.Errorf("export changes of sandbox %s: %w", id, err)
	}
	unlock := r.locks.lock(id)
	defer unlock()
	c, err := r.load(id)
	if err != nil {
		return fmt.Errorf("export changes of sandbox %s: %w", id, err)
	}
	st, err := c.Status()
	if err != nil {
		return fmt.Errorf("export changes of sandbox %s: %w", id, err)
	}
	if st == libcontainer.Running || st == libcontainer.Created {
		if err := c.Pause(); err != nil {
			return fmt.Errorf("export changes of sandbox %s: freeze: %w", id, err)
		}
		defer func() {
			if err := c.Resume(); err != nil {
				r.log.Error("thaw sandbox after export", "sandbox", id, "err", err)
			}
		}()
	}
	if err := copyLayer(ctx, filepath.Join(r.dir(id), "upper"), dst); err != nil {
		return fmt.Errorf("export changes of sandbox %s: %w", id, err)
	}
	return nil
}

// checkEmptyDir fails unless dir is an existing, empty directory.
func checkEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("destination %s is not a directory", dir)
	}
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("destination %s is not empty", dir)
	}
	return nil
}

type inode struct{ dev, ino uint64 }

// copyLayer copies the tree at src into the existing directory dst,
// preserving types (whiteout devices included), numeric owners, permission
// bits, extended attributes (overlayfs's internal ones except the opaque
// marker dropped), hard links between copied files and modification times.
// Sockets and device nodes other than whiteouts are skipped.
func copyLayer(ctx context.Context, src, dst string) error {
	links := map[inode]string{}
	var dirs []string // for times, set after their content
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if exportSkip[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if parent := filepath.Dir(rel); exportSkipBelow[parent] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := dst
		if rel != "." {
			target = filepath.Join(dst, rel)
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: path, Err: err}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs = append(dirs, rel)
		}
		return copyEntry(path, target, rel == ".", &st, links)
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		var st unix.Stat_t
		p := filepath.Join(src, dirs[i])
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("copy %s: %w", src, &fs.PathError{Op: "lstat", Path: p, Err: err})
		}
		if err := setTimes(filepath.Join(dst, dirs[i]), &st); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
	}
	return nil
}

// copyEntry creates one entry at target (root: target exists already).
func copyEntry(path, target string, root bool, st *unix.Stat_t, links map[inode]string) error {
	mode := st.Mode & 07777
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if !root {
			if err := unix.Mkdir(target, 0o700); err != nil {
				return &fs.PathError{Op: "mkdir", Path: target, Err: err}
			}
		}
	case unix.S_IFREG:
		if st.Nlink > 1 {
			k := inode{st.Dev, st.Ino}
			if first, ok := links[k]; ok {
				if err := os.Link(first, target); err != nil {
					return err
				}
				return nil // same inode: metadata already set
			}
			links[k] = target
		}
		if err := copyFile(path, target); err != nil {
			return err
		}
	case unix.S_IFLNK:
		dest, err := os.Readlink(path)
		if err != nil {
			return err
		}
		if err := os.Symlink(dest, target); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		// Sandboxes cannot make device nodes; the only ones in an upper dir
		// are overlayfs's whiteouts (0/0). Never recreate anything else.
		if st.Mode&unix.S_IFMT != unix.S_IFIFO && (st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0) {
			return nil
		}
		if err := unix.Mknod(target, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return &fs.PathError{Op: "mknod", Path: target, Err: err}
		}
	default: // sockets mean nothing in a layer
		return nil
	}
	if err := unix.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
		return &fs.PathError{Op: "lchown", Path: target, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// After chown, which clears setuid and setgid.
		if err := unix.Chmod(target, mode); err != nil {
			return &fs.PathError{Op: "chmod", Path: target, Err: err}
		}
	}
	if err := copyXattrs(path, target); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return setTimes(target, st)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

func setTimes(path string, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "utimes", Path: path, Err: err}
	}
	return nil
}

// keepXattr reports whether an extended attribute belongs in a layer:
// overlayfs's bookkeeping of the upper dir does not, except the opaque
// marker, which keeps its meaning in a lower layer.
func keepXattr(name string) bool {
	if strings.HasPrefix(name, "trusted.overlay.") {
		return name == runtime.OpaqueXattr
	}
	return true
}

// copyXattrs copies the extended attributes of src to dst (no symlinks
// followed).
func copyXattrs(src, dst string) error {
	size, err := unix.Llistxattr(src, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return &fs.PathError{Op: "llistxattr", Path: src, Err: err}
	}
	if size == 0 {
		return nil
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(src, buf); err != nil {
		return &fs.PathError{Op: "llistxattr", Path: src, Err: err}
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" || !keepXattr(name) {
			continue
		}
		val, err := getXattr(src, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			return &fs.PathError{Op: "lsetxattr " + name, Path: dst, Err: err}
		}
	}
	return nil
}

func getXattr(path, name string) ([]byte, error) {
	for {
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		return buf[:n], nil
	}
}
