package filesystem

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	rpc "github.com/paddockhq/paddock/api/envd/filesystem"
	"github.com/paddockhq/paddock/api/envd/filesystem/filesystemconnect"
)

// watchStream records a WatchDir stream: it checks the first message is
// start, then collects the rest in the background.
type watchStream struct {
	msgs   chan *rpc.WatchDirResponse
	done   chan error
	cancel context.CancelFunc
	seen   []*rpc.FilesystemEvent
}

func startWatch(t *testing.T, c filesystemconnect.FilesystemClient, req *connect.Request[rpc.WatchDirRequest]) *watchStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.WatchDir(ctx, req)
	if err != nil {
		cancel()
		t.Fatalf("WatchDir: %v", err)
	}
	if !stream.Receive() {
		cancel()
		t.Fatalf("WatchDir ended before its first message: %v", stream.Err())
	}
	if stream.Msg().GetStart() == nil {
		cancel()
		t.Fatalf("first message is %v, want start", stream.Msg())
	}
	ws := &watchStream{msgs: make(chan *rpc.WatchDirResponse, 1024), done: make(chan error, 1), cancel: cancel}
	go func() {
		for stream.Receive() {
			ws.msgs <- stream.Msg()
		}
		ws.done <- stream.Err()
		close(ws.msgs)
	}()
	t.Cleanup(func() {
		cancel()
		_ = stream.Close()
	})
	return ws
}

// expect waits for a filesystem event matching name and one of types.
func (ws *watchStream) expect(t *testing.T, name string, types ...rpc.EventType) *rpc.FilesystemEvent {
	t.Helper()
	for _, ev := range ws.seen {
		if ev.GetName() == name && typeIn(ev.GetType(), types) {
			return ev
		}
	}
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-ws.msgs:
			if !ok {
				t.Fatalf("stream ended (%v) before an event %q %v; saw %v", <-ws.done, name, types, describe(ws.seen))
			}
			ev := m.GetFilesystem()
			if ev == nil {
				continue
			}
			ws.seen = append(ws.seen, ev)
			if ev.GetName() == name && typeIn(ev.GetType(), types) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event %q %v; saw %v", name, types, describe(ws.seen))
		}
	}
}

func (ws *watchStream) sawName(name string) bool {
	for _, ev := range ws.seen {
		if ev.GetName() == name {
			return true
		}
	}
	return false
}

func typeIn(t rpc.EventType, types []rpc.EventType) bool {
	if len(types) == 0 {
		return true
	}
	for _, x := range types {
		if x == t {
			return true
		}
	}
	return false
}

func describe(evs []*rpc.FilesystemEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "[%s %s] ", e.GetName(), strings.TrimPrefix(e.GetType().String(), "EVENT_TYPE_"))
	}
	return b.String()
}

const (
	evCreate = rpc.EventType_EVENT_TYPE_CREATE
	evWrite  = rpc.EventType_EVENT_TYPE_WRITE
	evRemove = rpc.EventType_EVENT_TYPE_REMOVE
	evRename = rpc.EventType_EVENT_TYPE_RENAME
	evChmod  = rpc.EventType_EVENT_TYPE_CHMOD
)

func TestWatchDirEventTypes(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	ws := startWatch(t, h.json, connect.NewRequest(&rpc.WatchDirRequest{Path: dir, IncludeEntry: true}))

	a := filepath.Join(dir, "a.txt")
	if err := os.WriteFile(a, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	created := ws.expect(t, "a.txt", evCreate)
	if e := created.GetEntry(); e == nil || e.GetPath() != a || e.GetType() != rpc.FileType_FILE_TYPE_FILE {
		t.Errorf("create event entry = %v", created.GetEntry())
	}
	ws.expect(t, "a.txt", evWrite)
	if err := os.Chmod(a, 0o600); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, "a.txt", evChmod)
	b := filepath.Join(dir, "b.txt")
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, "a.txt", evRename)
	ws.expect(t, "b.txt", evCreate)
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	removed := ws.expect(t, "b.txt", evRemove)
	if removed.Entry != nil {
		t.Errorf("a removed path cannot be stat-ed, yet the event has entry %v", removed.Entry)
	}
}

func TestWatchDirNonRecursiveIgnoresSubdirectories(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "sub", "old"), "")
	ws := startWatch(t, h.binary, connect.NewRequest(&rpc.WatchDirRequest{Path: dir}))
	mustWrite(t, filepath.Join(dir, "sub", "nested.txt"), "n")
	mustWrite(t, filepath.Join(dir, "marker"), "m")
	// inotify delivers one instance's events in order: had the nested write
	// been reported, it would precede the marker.
	ws.expect(t, "marker", evCreate)
	if ws.sawName("sub/nested.txt") {
		t.Errorf("a non-recursive watch reported a nested file: %s", describe(ws.seen))
	}
	if ws.expect(t, "marker", evCreate).Entry != nil {
		t.Errorf("entry sent without includeEntry")
	}
}

func TestWatchDirRecursive(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	ws := startWatch(t, h.json, connect.NewRequest(&rpc.WatchDirRequest{Path: dir, Recursive: true}))

	mustWrite(t, filepath.Join(dir, "sub", "new.txt"), "watched")
	ws.expect(t, "sub/new.txt", evCreate)

	// A directory created after the watch started is watched too, including
	// a file written right after it was made.
	mustWrite(t, filepath.Join(dir, "later", "f.txt"), "f")
	ws.expect(t, "later", evCreate)
	ws.expect(t, "later/f.txt", evCreate, evWrite)
	mustWrite(t, filepath.Join(dir, "later", "g.txt"), "g")
	ws.expect(t, "later/g.txt", evCreate)

	// mkdir -p: every level is reported.
	if err := os.MkdirAll(filepath.Join(dir, "p", "q", "r"), 0o755); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, "p/q/r", evCreate)
	ws.expect(t, "p/q", evCreate)
	mustWrite(t, filepath.Join(dir, "p", "q", "r", "deep.txt"), "d")
	ws.expect(t, "p/q/r/deep.txt", evCreate)

	// A watched directory moved inside the tree is followed to its new name.
	if err := os.Rename(filepath.Join(dir, "sub"), filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, "sub", evRename)
	ws.expect(t, "moved", evCreate)
	mustWrite(t, filepath.Join(dir, "moved", "after.txt"), "a")
	ws.expect(t, "moved/after.txt", evCreate)
	if ws.sawName("sub/after.txt") {
		t.Errorf("event reported under the old directory name: %s", describe(ws.seen))
	}

	// A directory moved out of the tree is no longer reported.
	outside := t.TempDir()
	if err := os.Rename(filepath.Join(dir, "moved"), filepath.Join(outside, "gone")); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, "moved", evRename)
	mustWrite(t, filepath.Join(outside, "gone", "x.txt"), "x")
	mustWrite(t, filepath.Join(dir, "marker"), "m")
	ws.expect(t, "marker", evCreate)
	if ws.sawName("moved/x.txt") {
		t.Errorf("a directory moved out of the tree is still reported: %s", describe(ws.seen))
	}

	// Removing a watched subtree reports the removal.
	if err := os.RemoveAll(filepath.Join(dir, "p")); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, "p/q/r/deep.txt", evRemove)
	ws.expect(t, "p", evRemove)
}

func TestWatchDirRootRemoved(t *testing.T) {
	h := newHarness(t)
	dir := filepath.Join(t.TempDir(), "w")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ws := startWatch(t, h.json, connect.NewRequest(&rpc.WatchDirRequest{Path: dir}))
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, ".", evRemove)
}

func TestWatchDirKeepalive(t *testing.T) {
	h := newHarness(t)
	req := connect.NewRequest(&rpc.WatchDirRequest{Path: t.TempDir()})
	req.Header().Set("Keepalive-Ping-Interval", "0.05")
	ws := startWatch(t, h.json, req)
	select {
	case m := <-ws.msgs:
		if m.GetKeepalive() == nil {
			t.Fatalf("want a keepalive on an idle stream, got %v", m)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no keepalive on an idle stream")
	}
}

// TestWatchDirHonoursConnectTimeout drives the stream with raw HTTP, as
// connect-es does: one enveloped JSON request, enveloped responses, and an
// end-stream frame carrying the error once Connect-Timeout-Ms has passed.
func TestWatchDirHonoursConnectTimeout(t *testing.T) {
	h := newHarness(t)
	body, _ := json.Marshal(map[string]any{"path": t.TempDir(), "recursive": true})
	var env bytes.Buffer
	env.WriteByte(0)
	_ = binary.Write(&env, binary.BigEndian, uint32(len(body)))
	env.Write(body)
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+"/filesystem.Filesystem/WatchDir", &env)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Connect-Timeout-Ms", "300")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/connect+json" {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(resp.Body)
	var frames []struct {
		flags byte
		data  string
	}
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				break
			}
			t.Fatalf("read frame: %v", err)
		}
		data := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, struct {
			flags byte
			data  string
		}{hdr[0], string(data)})
	}
	if len(frames) < 2 || frames[0].flags != 0 || frames[0].data != `{"start":{}}` {
		t.Fatalf("frames = %v, want start first", frames)
	}
	last := frames[len(frames)-1]
	if last.flags != 2 || !strings.Contains(last.data, `"deadline_exceeded"`) {
		t.Fatalf("last frame = %d %s, want an end-stream frame with deadline_exceeded", last.flags, last.data)
	}
}

func TestWatchDirErrors(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "file"), "")
	recv := func(req *connect.Request[rpc.WatchDirRequest]) error {
		t.Helper()
		stream, err := h.json.WatchDir(context.Background(), req)
		if err != nil {
			return err
		}
		defer stream.Close()
		if stream.Receive() {
			t.Fatalf("want an error, got message %v", stream.Msg())
		}
		return stream.Err()
	}
	wantCode(t, recv(connect.NewRequest(&rpc.WatchDirRequest{Path: filepath.Join(dir, "missing")})), connect.CodeNotFound)
	wantCode(t, recv(connect.NewRequest(&rpc.WatchDirRequest{Path: filepath.Join(dir, "file")})), connect.CodeInvalidArgument)
	wantCode(t, recv(asUser(connect.NewRequest(&rpc.WatchDirRequest{Path: dir}), "no-such-user-paddock")), connect.CodeUnauthenticated)
	_, err := h.json.CreateWatcher(context.Background(), connect.NewRequest(&rpc.CreateWatcherRequest{Path: filepath.Join(dir, "missing")}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = h.binary.CreateWatcher(context.Background(), connect.NewRequest(&rpc.CreateWatcherRequest{Path: filepath.Join(dir, "file")}))
	wantCode(t, err, connect.CodeInvalidArgument)
	h.svc.mu.Lock()
	n := len(h.svc.watchers)
	h.svc.mu.Unlock()
	if n != 0 {
		t.Errorf("%d watchers left after failed requests", n)
	}
}

func TestPollingWatcher(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	res, err := h.json.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir, Recursive: true, IncludeEntry: true}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetWatcherId()
	if !strings.HasPrefix(id, "w") {
		t.Errorf("watcher id %q", id)
	}
	mustWrite(t, filepath.Join(dir, "sub", "f.txt"), "data")
	var got []*rpc.FilesystemEvent
	has := func(name string, typ rpc.EventType) bool {
		for _, e := range got {
			if e.GetName() == name && e.GetType() == typ {
				return true
			}
		}
		return false
	}
	// sub/f.txt is written right after sub is made, possibly before sub's
	// watch exists: it is reported as created either way.
	waitFor(t, "sub and sub/f.txt create events", func() bool {
		r, err := h.json.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			t.Fatalf("GetWatcherEvents: %v", err)
		}
		got = append(got, r.Msg.GetEvents()...)
		return has("sub", evCreate) && has("sub/f.txt", evCreate)
	})
	// Later writes to a known file are reported as writes.
	if err := os.WriteFile(filepath.Join(dir, "sub", "f.txt"), []byte("more"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sub/f.txt write event", func() bool {
		r, err := h.json.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			t.Fatalf("GetWatcherEvents: %v", err)
		}
		got = append(got, r.Msg.GetEvents()...)
		return has("sub/f.txt", evWrite)
	})
	for _, e := range got {
		if e.GetName() == "sub/f.txt" && e.GetType() == evCreate && e.GetEntry().GetPath() != filepath.Join(dir, "sub", "f.txt") {
			t.Errorf("create event entry = %v", e.GetEntry())
		}
	}
	// GetWatcherEvents drains: an event is returned by exactly one call.
	mustWrite(t, filepath.Join(dir, "marker"), "")
	count := func() int {
		n := 0
		for _, e := range got {
			if e.GetName() == "marker" && e.GetType() == evCreate {
				n++
			}
		}
		return n
	}
	waitFor(t, "the marker create event", func() bool {
		r, err := h.binary.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			t.Fatalf("GetWatcherEvents: %v", err)
		}
		got = append(got, r.Msg.GetEvents()...)
		return count() > 0
	})
	r, err := h.binary.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, r.Msg.GetEvents()...)
	if count() != 1 {
		t.Errorf("the marker's create event was returned %d times: %s", count(), describe(got))
	}

	if _, err := h.json.RemoveWatcher(ctx, connect.NewRequest(&rpc.RemoveWatcherRequest{WatcherId: id})); err != nil {
		t.Fatal(err)
	}
	_, err = h.json.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = h.json.RemoveWatcher(ctx, connect.NewRequest(&rpc.RemoveWatcherRequest{WatcherId: id}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = h.json.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: "wnope"}))
	wantCode(t, err, connect.CodeNotFound)
	h.svc.mu.Lock()
	n := len(h.svc.watchers)
	h.svc.mu.Unlock()
	if n != 0 {
		t.Errorf("%d inotify watchers alive after RemoveWatcher", n)
	}
}

func TestPollingWatcherLimits(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.svc.maxPolledEvents = 3
	h.svc.maxPollWatchers = 1
	dir := t.TempDir()
	res, err := h.json.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.json.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
	wantCode(t, err, connect.CodeResourceExhausted)

	for i := range 5 {
		mustWrite(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), "x")
	}
	waitFor(t, "the event buffer overflow to be reported", func() bool {
		_, err := h.json.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: res.Msg.GetWatcherId()}))
		if err == nil {
			return false
		}
		ce := wantCode(t, err, connect.CodeInternal)
		if !strings.Contains(ce.Message(), "events were lost") {
			t.Errorf("message %q", ce.Message())
		}
		return true
	})
}

func TestCloseStopsWatchers(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	ws := startWatch(t, h.json, connect.NewRequest(&rpc.WatchDirRequest{Path: dir, Recursive: true}))
	res, err := h.json.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
	if err != nil {
		t.Fatal(err)
	}

	h.svc.Close()

	select {
	case err := <-ws.done:
		wantCode(t, err, connect.CodeUnavailable)
	case <-time.After(15 * time.Second):
		t.Fatal("an open WatchDir stream did not end on Close")
	}
	_, err = h.json.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: res.Msg.GetWatcherId()}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = h.json.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: dir}))
	wantCode(t, err, connect.CodeUnavailable)
	waitFor(t, "the stream handler to release its watcher", func() bool {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		return len(h.svc.watchers) == 0
	})
	h.svc.Close() // idempotent
}

func TestWatchDirRootMoved(t *testing.T) {
	h := newHarness(t)
	base := t.TempDir()
	dir := filepath.Join(base, "w")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ws := startWatch(t, h.json, connect.NewRequest(&rpc.WatchDirRequest{Path: dir, Recursive: true}))
	if err := os.Rename(dir, filepath.Join(base, "elsewhere")); err != nil {
		t.Fatal(err)
	}
	ws.expect(t, ".", evRename)
	// A new directory under the old name is not the watched one.
	mustWrite(t, filepath.Join(base, "elsewhere", "late.txt"), "x")
	req := connect.NewRequest(&rpc.WatchDirRequest{Path: base})
	other := startWatch(t, h.json, req)
	mustWrite(t, filepath.Join(base, "marker"), "m")
	other.expect(t, "marker", evCreate)
	// Absence cannot be awaited; give a stale watch a moment to misreport
	// (this can only pass wrongly, never fail wrongly).
	grace := time.After(200 * time.Millisecond)
	for {
		select {
		case m := <-ws.msgs:
			if ev := m.GetFilesystem(); ev != nil {
				t.Fatalf("event after the watched directory moved away: %v", ev)
			}
		case <-grace:
			return
		}
	}
}
