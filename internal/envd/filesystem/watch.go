package filesystem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	rpc "github.com/paddockhq/paddock/api/envd/filesystem"
	"github.com/paddockhq/paddock/internal/envd/identity"
	"github.com/paddockhq/paddock/internal/envd/keepalive"
)

// Filesystem magic numbers (linux/magic.h) of network and FUSE filesystems,
// where inotify does not see remote changes.
var networkFSMagics = map[int64]string{
	0x6969:     "nfs",
	0xFF534D42: "cifs",
	0x517B:     "smb",
	0xFE534D42: "smb2",
	0x65735546: "fuse",
}

// watchRequest is what WatchDir and CreateWatcher share.
type watchRequest interface {
	GetPath() string
	GetRecursive() bool
	GetAllowNetworkMounts() bool
}

// startWatch validates a watch request and starts its watcher, registered
// with the service so Close stops it.
func (s *Service) startWatch(u *identity.User, msg watchRequest) (*dirWatcher, string, error) {
	root, err := s.resolve(u, msg.GetPath())
	if err != nil {
		return nil, "", connect.NewError(connect.CodeInvalidArgument, err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, "", rpcPathError("watch", root, err)
	}
	if !fi.IsDir() {
		return nil, "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path '%s' is not a directory", root))
	}
	if !msg.GetAllowNetworkMounts() {
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil {
			return nil, "", rpcPathError("statfs", root, err)
		}
		if kind, ok := networkFSMagics[int64(st.Type)]; ok {
			return nil, "", connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("path '%s' is on a network filesystem (%s); set allowNetworkMounts to watch it", root, kind))
		}
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, "", errShuttingDown()
	}
	s.mu.Unlock()

	w, err := newDirWatcher(root, msg.GetRecursive(), s.log)
	if err != nil {
		switch {
		case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE), errors.Is(err, unix.ENOSPC):
			return nil, "", connect.NewError(connect.CodeResourceExhausted, err)
		default:
			return nil, "", rpcPathError("watch", root, err)
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.Close()
		return nil, "", errShuttingDown()
	}
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	return w, root, nil
}

// stopWatch closes a watcher started by startWatch.
func (s *Service) stopWatch(w *dirWatcher) {
	w.Close()
	s.mu.Lock()
	delete(s.watchers, w)
	s.mu.Unlock()
}

// filesystemEvent builds the message for ev, with the entry when asked for
// and when the path can still be stat-ed.
func filesystemEvent(ev fsEvent, includeEntry bool, nm *names) *rpc.FilesystemEvent {
	out := &rpc.FilesystemEvent{Name: ev.name, Type: ev.op}
	if includeEntry {
		if e, err := entryInfo(ev.path, ev.path, nm); err == nil {
			out.Entry = e
		}
	}
	return out
}

// WatchDir streams the changes under a directory: first a start event, then
// filesystem events and, after each idle Keepalive-Ping-Interval, a keepalive.
// The stream ends with the request (Connect-Timeout-Ms) or with Close.
func (s *Service) WatchDir(ctx context.Context, req *connect.Request[rpc.WatchDirRequest], stream *connect.ServerStream[rpc.WatchDirResponse]) error {
	u, err := s.actingUser(req.Header())
	if err != nil {
		return err
	}
	w, root, err := s.startWatch(u, req.Msg)
	if err != nil {
		return err
	}
	defer s.stopWatch(w)
	log := s.log.With("path", root, "recursive", req.Msg.GetRecursive())
	log.Debug("watch started")

	if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Start{Start: &rpc.WatchDirResponse_StartEvent{}}}); err != nil {
		return connect.NewError(connect.CodeUnknown, fmt.Errorf("send start event: %w", err))
	}
	interval := keepalive.Interval(req.Header())
	timer := time.NewTimer(interval)
	defer timer.Stop()
	nm := newNames()
	for {
		select {
		case <-ctx.Done():
			log.Debug("watch ended", "reason", ctx.Err())
			return ctxError(ctx)
		case <-s.done:
			return errShuttingDown()
		case <-timer.C:
			if err := stream.Send(&rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Keepalive{Keepalive: &rpc.WatchDirResponse_KeepAlive{}}}); err != nil {
				return connect.NewError(connect.CodeUnknown, fmt.Errorf("send keepalive: %w", err))
			}
			timer.Reset(interval)
		case ev, ok := <-w.Events():
			if !ok {
				if err := w.Err(); err != nil {
					log.Warn("watch failed", "err", err)
					return connect.NewError(connect.CodeInternal, fmt.Errorf("watch '%s': %w", root, err))
				}
				return errShuttingDown()
			}
			msg := &rpc.WatchDirResponse{Event: &rpc.WatchDirResponse_Filesystem{
				Filesystem: filesystemEvent(ev, req.Msg.GetIncludeEntry(), nm),
			}}
			if err := stream.Send(msg); err != nil {
				return connect.NewError(connect.CodeUnknown, fmt.Errorf("send filesystem event: %w", err))
			}
			timer.Reset(interval)
		}
	}
}

// pollWatcher buffers a watcher's events until GetWatcherEvents drains them.
type pollWatcher struct {
	w         *dirWatcher
	collected chan struct{} // closed when the collector goroutine ends

	mu     sync.Mutex
	events []*rpc.FilesystemEvent
	err    error // set when the watcher failed or the buffer overflowed
}

// CreateWatcher starts a polling watcher (used by synchronous SDKs).
func (s *Service) CreateWatcher(ctx context.Context, req *connect.Request[rpc.CreateWatcherRequest]) (*connect.Response[rpc.CreateWatcherResponse], error) {
	u, err := s.actingUser(req.Header())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	n := len(s.polls)
	s.mu.Unlock()
	if n >= s.maxPollWatchers {
		return nil, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("too many watchers (%d); remove some with RemoveWatcher", n))
	}
	w, root, err := s.startWatch(u, req.Msg)
	if err != nil {
		return nil, err
	}
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		s.stopWatch(w)
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("generate watcher id: %w", err))
	}
	id := "w" + hex.EncodeToString(raw[:])
	p := &pollWatcher{w: w, collected: make(chan struct{})}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.stopWatch(w)
		return nil, errShuttingDown()
	}
	if len(s.polls) >= s.maxPollWatchers {
		s.mu.Unlock()
		s.stopWatch(w)
		return nil, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("too many watchers (%d); remove some with RemoveWatcher", s.maxPollWatchers))
	}
	s.polls[id] = p
	s.wg.Add(1)
	s.mu.Unlock()

	includeEntry := req.Msg.GetIncludeEntry()
	max := s.maxPolledEvents
	go func() {
		defer s.wg.Done()
		defer close(p.collected)
		nm := newNames()
		for ev := range w.Events() {
			fe := filesystemEvent(ev, includeEntry, nm)
			p.mu.Lock()
			overflow := p.err == nil && len(p.events) >= max
			if overflow {
				p.err = connect.NewError(connect.CodeInternal,
					fmt.Errorf("watcher buffered more than %d events without GetWatcherEvents; events were lost, recreate the watcher", max))
				p.events = nil
			}
			if p.err == nil {
				p.events = append(p.events, fe)
			}
			p.mu.Unlock()
			if overflow {
				w.Close() // free the inotify instance; the range ends when it has stopped
			}
		}
		if err := w.Err(); err != nil {
			p.mu.Lock()
			if p.err == nil {
				p.err = connect.NewError(connect.CodeInternal, fmt.Errorf("watch '%s': %w", root, err))
			}
			p.mu.Unlock()
		}
	}()
	s.log.Debug("polling watcher created", "id", id, "path", root)
	return connect.NewResponse(&rpc.CreateWatcherResponse{WatcherId: id}), nil
}

// GetWatcherEvents returns and forgets the events buffered since the last call.
func (s *Service) GetWatcherEvents(ctx context.Context, req *connect.Request[rpc.GetWatcherEventsRequest]) (*connect.Response[rpc.GetWatcherEventsResponse], error) {
	id := req.Msg.GetWatcherId()
	s.mu.Lock()
	p, ok := s.polls[id]
	s.mu.Unlock()
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher '%s' not found", id))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	events := p.events
	p.events = nil
	return connect.NewResponse(&rpc.GetWatcherEventsResponse{Events: events}), nil
}

// RemoveWatcher stops a polling watcher.
func (s *Service) RemoveWatcher(ctx context.Context, req *connect.Request[rpc.RemoveWatcherRequest]) (*connect.Response[rpc.RemoveWatcherResponse], error) {
	id := req.Msg.GetWatcherId()
	s.mu.Lock()
	p, ok := s.polls[id]
	delete(s.polls, id)
	s.mu.Unlock()
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher '%s' not found", id))
	}
	s.stopWatch(p.w)
	<-p.collected
	return connect.NewResponse(&rpc.RemoveWatcherResponse{}), nil
}
