package filesystem

// The directory watcher talks to inotify directly (golang.org/x/sys/unix)
// rather than through github.com/fsnotify/fsnotify:
//   - fsnotify v1.10.1 keeps recursive watching behind a test-only switch, so
//     recursion has to be layered on top of it, and
//   - layering it on fsnotify races with fsnotify's own bookkeeping: its watch
//     table is keyed by path and it drops the watch of a directory on
//     IN_MOVE_SELF, while we need the IN_ISDIR bit and the move cookie order
//     to re-home the watches of a moved subdirectory.
// inotify itself is small: one non-blocking fd read through the runtime
// poller (so Close unblocks the reader), a wd -> directory map, and a parser.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	rpc "github.com/paddockhq/paddock/api/envd/filesystem"
)

// watchMask is what every watched directory reports.
const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_DELETE_SELF |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_MOVE_SELF | unix.IN_ATTRIB

// fsEvent is one change under a watched directory.
type fsEvent struct {
	name string // relative to the watched directory ("." for the directory itself)
	path string // absolute
	op   rpc.EventType
}

// errQueueOverflow reports that the kernel dropped events: the consumer fell
// behind. The watcher stops; its events can no longer be trusted.
var errQueueOverflow = errors.New("inotify event queue overflowed; events were lost")

// dirWatcher watches one directory (and, when recursive, every directory
// below it, including ones created later) and turns inotify events into
// fsEvents. Its reader goroutine is owned by the watcher and ends on Close,
// on a read error or on a queue overflow; Events is closed then.
type dirWatcher struct {
	root      string
	recursive bool
	log       *slog.Logger

	file   *os.File
	events chan fsEvent
	stop   chan struct{}
	exited chan struct{}

	closeOnce sync.Once
	errMu     sync.Mutex
	err       error

	// Touched only by the reader goroutine once it runs.
	dirs   map[int32]string // watch descriptor -> directory path
	rootWd int32
}

// newDirWatcher starts watching root, which must be an existing directory.
func newDirWatcher(root string, recursive bool, log *slog.Logger) (*dirWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("create inotify instance: %w", err)
	}
	w := &dirWatcher{
		root:      root,
		recursive: recursive,
		log:       log,
		file:      os.NewFile(uintptr(fd), "inotify"),
		events:    make(chan fsEvent, 256),
		stop:      make(chan struct{}),
		exited:    make(chan struct{}),
		dirs:      map[int32]string{},
		rootWd:    -1,
	}
	wd, err := w.addWatch(root, false)
	if err != nil {
		_ = w.file.Close()
		return nil, fmt.Errorf("watch %s: %w", root, err)
	}
	w.rootWd = wd
	if recursive {
		if err := w.addTree(root, false); err != nil {
			_ = w.file.Close()
			return nil, err
		}
	}
	go w.run()
	return w, nil
}

// Events delivers the changes; it is closed when the watcher stops.
func (w *dirWatcher) Events() <-chan fsEvent { return w.events }

// Err tells why the watcher stopped on its own (nil after Close).
func (w *dirWatcher) Err() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.err
}

// Close stops the watcher and waits for its goroutine to end.
func (w *dirWatcher) Close() {
	w.closeOnce.Do(func() {
		close(w.stop)
		_ = w.file.Close() // unblocks the pending Read
	})
	<-w.exited
}

func (w *dirWatcher) fail(err error) {
	select {
	case <-w.stop:
		return // closed on purpose; whatever failed is a consequence
	default:
	}
	w.errMu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.errMu.Unlock()
}

// addWatch watches one directory. Subdirectories are added without following
// symlinks (a symlink swapped in after the walk must not widen the watch);
// the root may be given through a symlink.
func (w *dirWatcher) addWatch(dir string, noFollow bool) (int32, error) {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return -1, err
	}
	mask := uint32(watchMask | unix.IN_ONLYDIR)
	if noFollow {
		mask |= unix.IN_DONT_FOLLOW
	}
	wd := -1
	var addErr error
	// Control keeps the fd from being closed (and reused) under us.
	if err := rc.Control(func(fd uintptr) {
		wd, addErr = unix.InotifyAddWatch(int(fd), dir, mask)
	}); err != nil {
		return -1, err
	}
	if addErr != nil {
		if errors.Is(addErr, unix.ENOSPC) {
			return -1, fmt.Errorf("inotify watch limit reached (fs.inotify.max_user_watches): %w", addErr)
		}
		return -1, addErr
	}
	w.dirs[int32(wd)] = dir
	return int32(wd), nil
}

// addTree watches every directory below dir (not dir itself). With synth it
// also reports a CREATE for every entry found: they appeared before the new
// directory's watch existed (mkdir -p a/b/c, or a file written right after
// its directory was made).
func (w *dirWatcher) addTree(dir string, synth bool) error {
	// A trailing slash makes WalkDir follow a symlinked root; the paths it
	// reports below stay under dir.
	walkRoot := dir
	if !strings.HasSuffix(walkRoot, "/") {
		walkRoot += "/"
	}
	return filepath.WalkDir(walkRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == walkRoot && !synth {
				return err
			}
			// Vanished or unreadable subtree: nothing to watch there.
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p == walkRoot {
			return nil
		}
		if synth && !w.emit(w.event(p, rpc.EventType_EVENT_TYPE_CREATE)) {
			return fs.SkipAll
		}
		if d.IsDir() {
			if _, err := w.addWatch(p, true); err != nil {
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
					return fs.SkipDir
				}
				return fmt.Errorf("watch %s: %w", p, err)
			}
		}
		return nil
	})
}

// removeTree forgets the watches on dir and everything below it.
func (w *dirWatcher) removeTree(dir string) {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return
	}
	prefix := dir + string(filepath.Separator)
	for wd, p := range w.dirs {
		if wd == w.rootWd || (p != dir && !strings.HasPrefix(p, prefix)) {
			continue
		}
		delete(w.dirs, wd)
		_ = rc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) })
	}
}

// removeAll drops every watch.
func (w *dirWatcher) removeAll() {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return
	}
	for wd := range w.dirs {
		delete(w.dirs, wd)
		_ = rc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) })
	}
}

func (w *dirWatcher) event(p string, op rpc.EventType) fsEvent {
	name, err := filepath.Rel(w.root, p)
	if err != nil {
		name = p
	}
	return fsEvent{name: name, path: p, op: op}
}

// emit hands an event to the consumer; false when the watcher is stopping.
func (w *dirWatcher) emit(ev fsEvent) bool {
	select {
	case w.events <- ev:
		return true
	case <-w.stop:
		return false
	}
}

func (w *dirWatcher) run() {
	defer close(w.exited)
	defer close(w.events)
	buf := make([]byte, 64*1024)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.fail(fmt.Errorf("read inotify events: %w", err))
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			start := off + unix.SizeofInotifyEvent
			if start+nameLen > n {
				w.fail(errors.New("read inotify events: truncated event"))
				return
			}
			name := strings.TrimRight(string(buf[start:start+nameLen]), "\x00")
			off = start + nameLen
			if mask&unix.IN_Q_OVERFLOW != 0 {
				w.fail(errQueueOverflow)
				return
			}
			if err := w.handle(wd, mask, name); err != nil {
				w.fail(err)
				return
			}
			select {
			case <-w.stop:
				return
			default:
			}
		}
	}
}

// handle turns one inotify event into fsEvents, keeping the watch set in
// step with the tree when recursive.
func (w *dirWatcher) handle(wd int32, mask uint32, name string) error {
	dir, ok := w.dirs[wd]
	if !ok {
		return nil // a watch we dropped; late events
	}
	if mask&unix.IN_IGNORED != 0 {
		delete(w.dirs, wd)
		return nil
	}
	p := dir
	if name != "" {
		p = filepath.Join(dir, name)
	}
	self := name == ""
	if self && wd != w.rootWd {
		// A watched subdirectory's own deletion or move is reported by its
		// parent's watch (IN_DELETE / IN_MOVED_FROM).
		return nil
	}
	isDir := mask&unix.IN_ISDIR != 0

	if w.recursive && isDir && mask&unix.IN_MOVED_FROM != 0 {
		w.removeTree(p)
	}
	// Same order as E2B's envd for an event with several bits.
	for _, m := range []struct {
		bits uint32
		op   rpc.EventType
	}{
		{unix.IN_CREATE | unix.IN_MOVED_TO, rpc.EventType_EVENT_TYPE_CREATE},
		{unix.IN_MOVED_FROM | unix.IN_MOVE_SELF, rpc.EventType_EVENT_TYPE_RENAME},
		{unix.IN_ATTRIB, rpc.EventType_EVENT_TYPE_CHMOD},
		{unix.IN_MODIFY, rpc.EventType_EVENT_TYPE_WRITE},
		{unix.IN_DELETE | unix.IN_DELETE_SELF, rpc.EventType_EVENT_TYPE_REMOVE},
	} {
		if mask&m.bits != 0 && !w.emit(w.event(p, m.op)) {
			return nil
		}
	}
	if self && mask&unix.IN_MOVE_SELF != 0 {
		// The watched directory itself moved away: its path no longer names
		// it, so stop watching (as fsnotify, hence E2B's envd, does).
		w.removeAll()
		return nil
	}
	if w.recursive && isDir && mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
		if _, err := w.addWatch(p, true); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				return nil // already gone again
			}
			return fmt.Errorf("watch new directory %s: %w", p, err)
		}
		// Entries made before the watch existed are reported for a new
		// directory; a directory moved in is only watched.
		if err := w.addTree(p, mask&unix.IN_CREATE != 0); err != nil {
			return err
		}
	}
	return nil
}
