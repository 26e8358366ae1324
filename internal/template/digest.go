package template

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DigestTree returns the SHA-256 (64 hex characters) of a directory tree's
// content: for every entry, in lexical path order, its relative path, type,
// permission bits (setuid, setgid and sticky included), numeric owner,
// extended attributes, and its content (file bytes, symlink target or device
// numbers). Modification times are not part of it. Two trees with the same
// digest look the same to a process using them.
func DigestTree(root string) (string, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: path, Err: err}
		}
		xattrs, err := listXattrs(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%c\x00%o\x00%d\x00%d\x00", rel, typeChar(st.Mode), st.Mode&07777, st.Uid, st.Gid)
		names := make([]string, 0, len(xattrs))
		for k := range xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			fmt.Fprintf(h, "x:%s=%s\x00", k, hex.EncodeToString(xattrs[k]))
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			fmt.Fprintf(h, "%d\x00", st.Size)
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			n, err := io.CopyBuffer(h, f, buf)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			if n != st.Size {
				return fmt.Errorf("read %s: size changed while hashing (%d != %d)", path, n, st.Size)
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00", target)
		case unix.S_IFCHR, unix.S_IFBLK:
			fmt.Fprintf(h, "%d:%d\x00", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		h.Write([]byte{'\n'})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("digest %s: %w", root, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func typeChar(mode uint32) byte {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return 'd'
	case unix.S_IFREG:
		return 'f'
	case unix.S_IFLNK:
		return 'l'
	case unix.S_IFCHR:
		return 'c'
	case unix.S_IFBLK:
		return 'b'
	case unix.S_IFIFO:
		return 'p'
	case unix.S_IFSOCK:
		return 's'
	}
	return '?'
}

// listXattrs returns the extended attributes of path (not following a
// symlink); none when the filesystem does not support them.
func listXattrs(path string) (map[string][]byte, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, &fs.PathError{Op: "llistxattr", Path: path, Err: err}
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, &fs.PathError{Op: "llistxattr", Path: path, Err: err}
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		v, err := getXattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func getXattr(path, name string) ([]byte, error) {
	for {
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, syscall.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		return buf[:n], nil
	}
}
