package filesystem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	rpc "github.com/paddockhq/paddock/api/envd/filesystem"
)

// names resolves uids and gids to the sandbox's user and group names
// (/etc/passwd, /etc/group), falling back to the numeric id. It caches for the
// life of one request only, so accounts added inside the sandbox show up on
// the next request.
type names struct {
	users  map[uint32]string
	groups map[uint32]string
}

func newNames() *names {
	return &names{users: map[uint32]string{}, groups: map[uint32]string{}}
}

func (n *names) user(uid uint32) string {
	if v, ok := n.users[uid]; ok {
		return v
	}
	v := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(v); err == nil {
		v = u.Username
	}
	n.users[uid] = v
	return v
}

func (n *names) group(gid uint32) string {
	if v, ok := n.groups[gid]; ok {
		return v
	}
	v := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(v); err == nil {
		v = g.Name
	}
	n.groups[gid] = v
	return v
}

// entryInfo describes the filesystem object at statPath, reported under
// reportPath (they differ when listing through a symlinked directory).
//
// It fills the fields as E2B's envd does: everything comes from lstat (so
// permissions of a symlink read "Lrwxrwxrwx" and size is the link's), except
// that for a symlink `type` and `mode` are those of the final target and
// `symlinkTarget` is the fully resolved target path. A broken or cyclic link
// has type UNSPECIFIED, mode 0 and the link's own path as symlinkTarget.
func entryInfo(statPath, reportPath string, nm *names) (*rpc.EntryInfo, error) {
	fi, err := os.Lstat(statPath)
	if err != nil {
		return nil, err
	}
	return entryFromInfo(statPath, reportPath, fi, nm), nil
}

func entryFromInfo(statPath, reportPath string, fi fs.FileInfo, nm *names) *rpc.EntryInfo {
	m := fi.Mode()
	e := &rpc.EntryInfo{
		Name:         filepath.Base(reportPath),
		Path:         reportPath,
		Size:         fi.Size(),
		Permissions:  m.String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	if m&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(statPath)
		if err != nil {
			target = reportPath
		}
		e.SymlinkTarget = &target
		if err == nil {
			if tfi, err := os.Stat(target); err == nil {
				e.Type = fileType(tfi.Mode())
				e.Mode = uint32(tfi.Mode().Perm())
			}
		}
	} else {
		e.Type = fileType(m)
		e.Mode = uint32(m.Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = nm.user(st.Uid)
		e.Group = nm.group(st.Gid)
	}
	if md, err := readMetadata(statPath); err == nil && len(md) > 0 {
		e.Metadata = md
	}
	return e
}

func fileType(m fs.FileMode) rpc.FileType {
	switch {
	case m.IsRegular():
		return rpc.FileType_FILE_TYPE_FILE
	case m.IsDir():
		return rpc.FileType_FILE_TYPE_DIRECTORY
	case m&fs.ModeSymlink != 0:
		return rpc.FileType_FILE_TYPE_SYMLINK
	default:
		return rpc.FileType_FILE_TYPE_UNSPECIFIED
	}
}

// Metadata is stored as extended attributes "user.e2b.<key>" (E2B envd >= 0.6.2).
const (
	metadataXattrPrefix = "user.e2b."
	// maxMetadataKeyLen: Linux limits a whole xattr name to 255 bytes.
	maxMetadataKeyLen = 255 - len(metadataXattrPrefix)
	// maxMetadataTotalLen bounds names plus values, so the set fits in one
	// ext4 block alongside the inode's other attributes.
	maxMetadataTotalLen = 4096
)

// validateMetadata rejects metadata that could not be stored, before any
// file is touched.
func validateMetadata(md map[string]string) error {
	total := 0
	for k, v := range md {
		if k == "" {
			return errors.New("metadata key must not be empty")
		}
		if len(k) > maxMetadataKeyLen {
			return fmt.Errorf("metadata key %q is longer than %d bytes", k, maxMetadataKeyLen)
		}
		if err := printableASCII("key "+strconv.Quote(k), k); err != nil {
			return err
		}
		if err := printableASCII("value of key "+strconv.Quote(k), v); err != nil {
			return err
		}
		total += len(metadataXattrPrefix) + len(k) + len(v)
	}
	if total > maxMetadataTotalLen {
		return fmt.Errorf("metadata takes %d bytes, more than the %d allowed", total, maxMetadataTotalLen)
	}
	return nil
}

func printableASCII(what, s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("metadata %s has a non-printable-ASCII byte 0x%02x at offset %d", what, c, i)
		}
	}
	return nil
}

// readMetadata returns the user.e2b.* attributes of path (following
// symlinks), prefix stripped; nil when there are none or the filesystem has
// no xattrs. Entries that are not valid UTF-8 (set by hand inside the
// sandbox) are skipped: a proto string map cannot carry them.
func readMetadata(path string) (map[string]string, error) {
	names, err := listXattrs(func(b []byte) (int, error) { return unix.Listxattr(path, b) })
	if err != nil {
		if xattrUnsupported(err) {
			return nil, nil
		}
		return nil, err
	}
	var md map[string]string
	for _, name := range names {
		key, ok := strings.CutPrefix(name, metadataXattrPrefix)
		if !ok {
			continue
		}
		val, err := getXattr(func(b []byte) (int, error) { return unix.Getxattr(path, name, b) })
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return nil, err
		}
		if !utf8.ValidString(key) || !utf8.Valid(val) {
			continue
		}
		if md == nil {
			md = map[string]string{}
		}
		md[key] = string(val)
	}
	return md, nil
}

// replaceMetadata makes md the complete user.e2b.* set of the open file f:
// keys not in md are removed (an overwrite must not keep stale metadata;
// O_TRUNC keeps xattrs), the others are set. Other xattrs are untouched.
func replaceMetadata(f *os.File, md map[string]string) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	err = rc.Control(func(fdp uintptr) {
		fd := int(fdp)
		existing, err := listXattrs(func(b []byte) (int, error) { return unix.Flistxattr(fd, b) })
		if err != nil {
			opErr = err
			return
		}
		for _, name := range existing {
			key, ok := strings.CutPrefix(name, metadataXattrPrefix)
			if !ok {
				continue
			}
			if _, keep := md[key]; keep {
				continue
			}
			if err := unix.Fremovexattr(fd, name); err != nil && !errors.Is(err, unix.ENODATA) {
				opErr = err
				return
			}
		}
		for k, v := range md {
			if err := unix.Fsetxattr(fd, metadataXattrPrefix+k, []byte(v), 0); err != nil {
				opErr = err
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return opErr
}

func xattrUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// listXattrs calls a listxattr variant with a growing buffer.
func listXattrs(list func([]byte) (int, error)) ([]string, error) {
	for range 8 {
		n, err := list(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = list(buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, err
		}
		var out []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" {
				out = append(out, name)
			}
		}
		return out, nil
	}
	return nil, unix.ERANGE
}

// getXattr calls a getxattr variant with a growing buffer.
func getXattr(get func([]byte) (int, error)) ([]byte, error) {
	for range 8 {
		n, err := get(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return []byte{}, nil
		}
		buf := make([]byte, n)
		n, err = get(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.ERANGE
}
