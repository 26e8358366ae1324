package template

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const capabilityXattr = "security.capability"

// ShiftOwnership adds base to the owner and group of every entry of the tree
// at root (not following symlinks), so that files owned by ID n are owned by
// base+n: what a sandbox whose user namespace maps 0 to base sees as n.
// Setuid/setgid bits and file capabilities, which the kernel clears on
// chown, are restored. Hard-linked files are shifted once. An ID at or above
// count (outside the namespace's range) is an error.
func ShiftOwnership(root string, base, count uint32) error {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: path, Err: err}
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := inode{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		if st.Uid >= count || st.Gid >= count {
			return fmt.Errorf("%s is owned by %d:%d, outside the %d IDs a sandbox maps", path, st.Uid, st.Gid, count)
		}
		isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
		var caps []byte
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			v, err := getXattr(path, capabilityXattr)
			switch {
			case err == nil:
				caps = v
			case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
			default:
				return err
			}
		}
		if err := unix.Lchown(path, int(st.Uid+base), int(st.Gid+base)); err != nil {
			return &fs.PathError{Op: "lchown", Path: path, Err: err}
		}
		if !isLink && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			if err := unix.Chmod(path, st.Mode&07777); err != nil {
				return &fs.PathError{Op: "chmod", Path: path, Err: err}
			}
		}
		if caps != nil {
			if err := unix.Lsetxattr(path, capabilityXattr, caps, 0); err != nil {
				return &fs.PathError{Op: "restore file capabilities", Path: path, Err: err}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("shift ownership of %s by %d: %w", root, base, err)
	}
	return nil
}
