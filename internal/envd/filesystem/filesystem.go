// Package filesystem owns envd's file access: the Connect RPC service
// filesystem.Filesystem (Stat, MakeDir, Move, ListDir, Remove, WatchDir and
// the polling watchers) and the REST /files endpoint (download, upload,
// signed URLs).
//
// Every request acts as a sandbox user (the "e2b user header" for RPCs, the
// username query parameter for /files). Relative paths resolve against that
// user's home directory, and files and directories the service creates belong
// to that user. The daemon runs as root; it chowns what it creates.
package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"

	"connectrpc.com/connect"

	"github.com/paddockhq/paddock/api/envd/filesystem/filesystemconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

// Limits on the watchers one daemon keeps.
const (
	// defaultMaxPollWatchers caps the polling watchers (CreateWatcher) alive at once.
	defaultMaxPollWatchers = 256
	// defaultMaxPolledEvents caps the events a polling watcher buffers between
	// two GetWatcherEvents calls. Past it the watcher fails rather than
	// silently dropping events.
	defaultMaxPolledEvents = 16384
)

// Service implements filesystemconnect.FilesystemHandler and /files.
type Service struct {
	filesystemconnect.UnimplementedFilesystemHandler
	state *identity.State
	log   *slog.Logger

	maxPollWatchers int
	maxPolledEvents int

	mu       sync.Mutex
	closed   bool
	done     chan struct{}            // closed by Close
	watchers map[*dirWatcher]struct{} // every live inotify watcher (streams and polls)
	polls    map[string]*pollWatcher  // polling watchers by id
	wg       sync.WaitGroup           // goroutines the service started
}

// NewService returns a filesystem service acting with the daemon's identity state.
func NewService(state *identity.State, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{
		state:           state,
		log:             log,
		maxPollWatchers: defaultMaxPollWatchers,
		maxPolledEvents: defaultMaxPolledEvents,
		done:            make(chan struct{}),
		watchers:        map[*dirWatcher]struct{}{},
		polls:           map[string]*pollWatcher{},
	}
}

// Close stops every watcher and the goroutines serving them. Streams still
// open end with Unavailable; later watch requests are refused.
func (s *Service) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	ws := make([]*dirWatcher, 0, len(s.watchers))
	for w := range s.watchers {
		ws = append(ws, w)
	}
	s.watchers = map[*dirWatcher]struct{}{}
	s.polls = map[string]*pollWatcher{}
	s.mu.Unlock()

	for _, w := range ws {
		w.Close()
	}
	s.wg.Wait()
}

// errShuttingDown is returned to requests that arrive during or after Close.
func errShuttingDown() error {
	return connect.NewError(connect.CodeUnavailable, errors.New("envd filesystem service is shutting down"))
}

// actingUser resolves the user a Connect request acts as.
func (s *Service) actingUser(h http.Header) (*identity.User, error) {
	u, err := s.state.ActingUser(h)
	if err != nil {
		if errors.Is(err, identity.ErrUnknownUser) {
			return nil, connect.NewError(connect.CodeUnauthenticated, err)
		}
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return u, nil
}

// resolve turns a request path into an absolute path for u. Paths with NUL
// bytes are refused: no syscall accepts them.
func (s *Service) resolve(u *identity.User, p string) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("path %q contains a NUL byte", p)
	}
	return s.state.ResolvePath(u, p), nil
}

// rpcPathError maps a filesystem error on path p to a Connect error with a
// clear message.
func rpcPathError(op, p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("path '%s' does not exist", p))
	case errors.Is(err, fs.ErrPermission):
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s '%s': permission denied", op, p))
	case errors.Is(err, syscall.ENOTDIR):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s '%s': a path component is not a directory", op, p))
	case errors.Is(err, syscall.ELOOP), strings.Contains(err.Error(), "too many links"): // filepath.EvalSymlinks' own loop error
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s '%s': cyclic symlink or symlink chain too long", op, p))
	case errors.Is(err, syscall.ENAMETOOLONG):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s '%s': name too long", op, p))
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%s '%s': not enough disk space", op, p))
	default:
		return connect.NewError(connect.CodeInternal, fmt.Errorf("%s '%s': %w", op, p, err))
	}
}

// ctxError converts the end of a request context into a Connect error.
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	return connect.NewError(connect.CodeCanceled, ctx.Err())
}
