package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"connectrpc.com/connect"

	rpc "github.com/paddockhq/paddock/api/envd/filesystem"
)

// Stat describes one filesystem object (not following a final symlink).
func (s *Service) Stat(ctx context.Context, req *connect.Request[rpc.StatRequest]) (*connect.Response[rpc.StatResponse], error) {
	u, err := s.actingUser(req.Header())
	if err != nil {
		return nil, err
	}
	p, err := s.resolve(u, req.Msg.GetPath())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	e, err := entryInfo(p, p, newNames())
	if err != nil {
		return nil, rpcPathError("stat", p, err)
	}
	return connect.NewResponse(&rpc.StatResponse{Entry: e}), nil
}

// MakeDir creates a directory and its missing parents, each owned by the
// acting user. An existing directory is AlreadyExists; an existing
// non-directory is InvalidArgument.
func (s *Service) MakeDir(ctx context.Context, req *connect.Request[rpc.MakeDirRequest]) (*connect.Response[rpc.MakeDirResponse], error) {
	u, err := s.actingUser(req.Header())
	if err != nil {
		return nil, err
	}
	p, err := s.resolve(u, req.Msg.GetPath())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	fi, err := os.Stat(p)
	switch {
	case err == nil && fi.IsDir():
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory '%s' already exists", p))
	case err == nil:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path '%s' already exists and is not a directory", p))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, rpcPathError("make directory", p, err)
	}
	created, err := ensureDirs(p, int(u.UID), int(u.GID))
	if err != nil {
		return nil, rpcPathError("make directory", p, err)
	}
	if len(created) == 0 || created[len(created)-1] != p {
		// Lost a race with another creator of the same directory.
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory '%s' already exists", p))
	}
	e, err := entryInfo(p, p, newNames())
	if err != nil {
		return nil, rpcPathError("stat", p, err)
	}
	s.log.Debug("made directory", "path", p, "user", u.Name, "created", len(created))
	return connect.NewResponse(&rpc.MakeDirResponse{Entry: e}), nil
}

// Move renames source to destination, creating the destination's missing
// parent directories as the acting user (as E2B's envd does). It returns the
// moved entry.
func (s *Service) Move(ctx context.Context, req *connect.Request[rpc.MoveRequest]) (*connect.Response[rpc.MoveResponse], error) {
	u, err := s.actingUser(req.Header())
	if err != nil {
		return nil, err
	}
	if req.Msg.GetSource() == "" || req.Msg.GetDestination() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("source and destination are required"))
	}
	src, err := s.resolve(u, req.Msg.GetSource())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	dst, err := s.resolve(u, req.Msg.GetDestination())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	// Check the source first so a missing one leaves no new directories behind.
	if _, err := os.Lstat(src); err != nil {
		return nil, rpcPathError("move", src, err)
	}
	created, err := ensureDirs(filepath.Dir(dst), int(u.UID), int(u.GID))
	if err != nil {
		return nil, rpcPathError("create parent directories of", dst, err)
	}
	if err := os.Rename(src, dst); err != nil {
		removeDirs(created)
		return nil, renameError(src, dst, err)
	}
	e, err := entryInfo(dst, dst, newNames())
	if err != nil {
		return nil, rpcPathError("stat", dst, err)
	}
	return connect.NewResponse(&rpc.MoveResponse{Entry: e}), nil
}

func renameError(src, dst string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("path '%s' does not exist", src))
	case errors.Is(err, syscall.EEXIST), errors.Is(err, syscall.ENOTEMPTY):
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("move '%s' to '%s': destination is a non-empty directory", src, dst))
	case errors.Is(err, syscall.EISDIR):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("move '%s' to '%s': cannot replace a directory with a non-directory", src, dst))
	case errors.Is(err, syscall.ENOTDIR):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("move '%s' to '%s': cannot replace a non-directory with a directory", src, dst))
	case errors.Is(err, syscall.EINVAL):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("move '%s' to '%s': cannot move a directory into itself", src, dst))
	case errors.Is(err, syscall.EXDEV):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("move '%s' to '%s': source and destination are on different filesystems", src, dst))
	default:
		return rpcPathError("move", src, err)
	}
}

// ListDir lists a directory down to the requested depth (0 means 1). A
// symlink given as the path is followed; symlinks inside are listed, not
// descended. Entry paths are absolute, under the path as requested.
func (s *Service) ListDir(ctx context.Context, req *connect.Request[rpc.ListDirRequest]) (*connect.Response[rpc.ListDirResponse], error) {
	u, err := s.actingUser(req.Header())
	if err != nil {
		return nil, err
	}
	p, err := s.resolve(u, req.Msg.GetPath())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	depth := int(req.Msg.GetDepth())
	if depth == 0 {
		depth = 1
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, rpcPathError("list", p, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, rpcPathError("list", p, err)
	}
	if !fi.IsDir() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path '%s' is not a directory", p))
	}
	l := lister{ctx: ctx, depth: depth, names: newNames()}
	if err := l.walk(real, p, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(ctx)
		}
		return nil, rpcPathError("list", p, err)
	}
	return connect.NewResponse(&rpc.ListDirResponse{Entries: l.entries}), nil
}

type lister struct {
	ctx     context.Context
	depth   int
	names   *names
	entries []*rpc.EntryInfo
}

// walk lists dir (read at realDir, reported as reportDir) at level 1..depth.
func (l *lister) walk(realDir, reportDir string, level int) error {
	if err := l.ctx.Err(); err != nil {
		return err
	}
	des, err := os.ReadDir(realDir)
	if err != nil {
		if level > 1 && errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we listed it
		}
		return err
	}
	for _, de := range des {
		sp := filepath.Join(realDir, de.Name())
		rp := filepath.Join(reportDir, de.Name())
		fi, err := os.Lstat(sp)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		l.entries = append(l.entries, entryFromInfo(sp, rp, fi, l.names))
		if fi.IsDir() && level < l.depth {
			if err := l.walk(sp, rp, level+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove deletes a file or a directory tree. A missing path is not an error
// (E2B's envd uses os.RemoveAll). An empty path is refused rather than
// resolved to the working directory.
func (s *Service) Remove(ctx context.Context, req *connect.Request[rpc.RemoveRequest]) (*connect.Response[rpc.RemoveResponse], error) {
	u, err := s.actingUser(req.Header())
	if err != nil {
		return nil, err
	}
	if req.Msg.GetPath() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("path is required"))
	}
	p, err := s.resolve(u, req.Msg.GetPath())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := os.RemoveAll(p); err != nil {
		return nil, rpcPathError("remove", p, err)
	}
	return connect.NewResponse(&rpc.RemoveResponse{}), nil
}

// notDirError reports an existing non-directory where a directory is needed.
type notDirError struct{ path string }

func (e *notDirError) Error() string {
	return fmt.Sprintf("'%s' exists and is not a directory", e.path)
}

func (e *notDirError) Is(target error) bool { return target == syscall.ENOTDIR }

// ensureDirs creates dir and its missing ancestors (mode 0755 before umask),
// each chowned to uid:gid. It returns the directories it created, top first,
// so a failed operation can remove them again with removeDirs.
func ensureDirs(dir string, uid, gid int) ([]string, error) {
	var missing []string
	for p := filepath.Clean(dir); ; {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return nil, &notDirError{path: p}
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) {
				if fi, serr := os.Stat(d); serr == nil && fi.IsDir() {
					continue // a racing creator made it
				}
			}
			removeDirs(created)
			return nil, err
		}
		created = append(created, d)
		// Lchown: never follow a symlink someone swapped in after Mkdir.
		if err := os.Lchown(d, uid, gid); err != nil {
			removeDirs(created)
			return nil, fmt.Errorf("chown %s: %w", d, err)
		}
	}
	return created, nil
}

// removeDirs removes directories made by ensureDirs, deepest first; a
// directory that is no longer empty is left alone.
func removeDirs(created []string) {
	for i := len(created) - 1; i >= 0; i-- {
		_ = os.Remove(created[i])
	}
}
