package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store/bolt"
)

// newSnapService is newTestService with a snapshot directory; db may be
// shared by consecutive services (restart).
func newSnapService(t *testing.T, rt *fakeRuntime, db, snaps string) *Service {
	t.Helper()
	st, err := bolt.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		Runtime: rt, Store: st, Templates: fakeTemplates{}, Secret: []byte("0123456789abcdef0123"),
		Node: "n1", MaxTimeout: time.Hour, SnapshotDir: snaps,
		NewID: func() string { return "i" + strconv.FormatInt(3000000+idSeq.Add(1), 10) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { s.Close(); st.Close() }) })
	return s
}

// closeService stops a service and its store, as a restart would.
func closeService(s *Service) {
	s.Close()
	s.cfg.Store.Close()
}

// waitSaved waits for the background save of a paused sandbox.
func waitSaved(t *testing.T, s *Service, id, want string) Record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := s.load(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Saved == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: saved %q, want %q", id, r.Saved, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPauseSavesAndConnectRestores(t *testing.T) {
	rt := newFakeRuntime()
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), t.TempDir())
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true,
		EnvVars: map[string]string{"A": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.MemorySnapshots(); got != "available" {
		t.Errorf("MemorySnapshots = %q, want available", got)
	}
	d := rt.daemon(rec.ID)
	res, err := s.Pause(ctx, "t", rec.ID, PauseOptions{})
	if err != nil || res.FilesOnly || res.Notice != "" {
		t.Fatalf("Pause: %+v, %v; want a memory pause", res, err)
	}
	r := waitSaved(t, s, rec.ID, savedMemory)
	if r.State != StatePaused || rt.state(rec.ID) != runtime.StateCheckpointed {
		t.Fatalf("after save: record %s, runtime %s; want paused and checkpointed", r.State, rt.state(rec.ID))
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); !errors.Is(err, ErrConflict) {
		t.Errorf("double pause: %v, want ErrConflict", err)
	}
	page, err := s.List(ctx, ListFilter{Team: "t", States: []State{StatePaused}})
	if err != nil || len(page.Sandboxes) != 1 {
		t.Errorf("list paused: %+v, %v", page, err)
	}

	got, resumed, err := s.Connect(ctx, "t", rec.ID, 10*time.Minute, ResumeOptions{})
	if err != nil || !resumed {
		t.Fatalf("Connect: resumed %v, %v", resumed, err)
	}
	if got.State != StateRunning || got.Saved != "" || !got.EndAt.After(time.Now().Add(9*time.Minute)) {
		t.Errorf("after Connect: %+v; want running with the TTL extended", got)
	}
	if rt.daemon(rec.ID) != d || d.State().Env()["A"] != "1" || d.State().AccessToken() != s.EnvdToken(rec.ID) {
		t.Errorf("envd's memory not restored")
	}
	if _, resumed, err := s.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{}); err != nil || resumed {
		t.Errorf("Connect to a running sandbox: resumed %v, %v; want 200-style", resumed, err)
	}

	// Unknown and killed sandboxes.
	if _, err := s.Pause(ctx, "t", "inope", PauseOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("pause unknown: %v", err)
	}
	if _, err := s.Pause(ctx, "other", rec.ID, PauseOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("pause another team's: %v", err)
	}
	if err := s.Kill(ctx, "t", rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("pause killed: %v", err)
	}
}

func TestPauseFilesOnlyBootsOnResume(t *testing.T) {
	rt := newFakeRuntime()
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), t.TempDir())
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true,
		EnvVars: map[string]string{"A": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	d := rt.daemon(rec.ID)
	if res, err := s.Pause(ctx, "t", rec.ID, PauseOptions{FilesOnly: true}); err != nil || !res.FilesOnly {
		t.Fatalf("Pause files only: %+v, %v", res, err)
	}
	waitSaved(t, s, rec.ID, savedFiles)
	if _, resumed, err := s.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{}); err != nil || !resumed {
		t.Fatalf("Connect: %v", err)
	}
	nd := rt.daemon(rec.ID)
	if nd == d {
		t.Fatal("envd was not started afresh")
	}
	if nd.State().AccessToken() != s.EnvdToken(rec.ID) || nd.State().Env()["A"] != "1" || nd.State().Env()["E2B_SANDBOX_ID"] != rec.ID {
		t.Errorf("fresh envd not initialised: token %v env %v", nd.State().AccessToken() != "", nd.State().Env())
	}

	// A memory pause resumed with memory=false boots afresh too.
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, s, rec.ID, savedMemory)
	if _, _, err := s.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{FilesOnly: true}); err != nil {
		t.Fatal(err)
	}
	if rt.daemon(rec.ID) == nd || rt.daemon(rec.ID).State().AccessToken() != s.EnvdToken(rec.ID) {
		t.Errorf("connect with memory=false did not boot an initialised envd")
	}
}

func TestPauseWithoutMemorySnapshotsSaysSo(t *testing.T) {
	rt := newFakeRuntime()
	rt.memErr = errors.New("criu is too old")
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), t.TempDir())
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Pause(ctx, "t", rec.ID, PauseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.FilesOnly || !strings.Contains(res.Notice, "criu is too old") {
		t.Errorf("Pause: %+v; want files only with a notice naming the reason", res)
	}
	if got := s.MemorySnapshots(); got != "unavailable: criu is too old" {
		t.Errorf("MemorySnapshots = %q", got)
	}
	waitSaved(t, s, rec.ID, savedFiles)
	sn, err := s.CreateSnapshot(ctx, "t", rec.ID, "")
	if err != nil || !sn.FilesOnly {
		t.Errorf("CreateSnapshot without memory: %+v, %v; want files only", sn, err)
	}
}

func TestResumeFailureKeepsSnapshot(t *testing.T) {
	rt := newFakeRuntime()
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), t.TempDir())
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, s, rec.ID, savedMemory)
	rt.failRestore.Store(true)
	_, _, err = s.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{})
	if err == nil || !strings.Contains(err.Error(), "snapshot is kept") {
		t.Fatalf("Connect with a failing restore: %v; want a clear error", err)
	}
	if r, _ := s.load(ctx, rec.ID); r.State != StatePaused || r.Saved != savedMemory {
		t.Fatalf("after a failed resume: %s/%q; want still paused with its memory", r.State, r.Saved)
	}
	rt.failRestore.Store(false)
	if _, resumed, err := s.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{}); err != nil || !resumed {
		t.Fatalf("Connect after the failure: %v", err)
	}
}

// A failed save leaves the sandbox frozen in memory: resume thaws it, and a
// restarted service saves it again.
func TestFailedSaveStaysFrozenAndRestartRetries(t *testing.T) {
	rt := newFakeRuntime()
	db := filepath.Join(t.TempDir(), "db")
	snaps := t.TempDir()
	s := newSnapService(t, rt, db, snaps)
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rt.failCheckpoint.Store(true)
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.waitSave(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.load(ctx, rec.ID); r.State != StatePaused || r.Saved != savedNone || rt.state(rec.ID) != runtime.StatePaused {
		t.Fatalf("after a failed save: record %s/%q, runtime %s; want paused and frozen", r.State, r.Saved, rt.state(rec.ID))
	}
	closeService(s)
	rt.failCheckpoint.Store(false)
	s2 := newSnapService(t, rt, db, snaps)
	waitSaved(t, s2, rec.ID, savedMemory)
	if rt.state(rec.ID) != runtime.StateCheckpointed {
		t.Fatalf("runtime state %s after the restart's save", rt.state(rec.ID))
	}
	if _, resumed, err := s2.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{}); err != nil || !resumed {
		t.Fatalf("Connect after restart: %v", err)
	}
}

// Paused sandboxes survive a restart of the service: recovery adopts a
// sandbox that has no container, only its checkpoint.
func TestRestartKeepsPausedSandboxes(t *testing.T) {
	rt := newFakeRuntime()
	db := filepath.Join(t.TempDir(), "db")
	snaps := t.TempDir()
	s := newSnapService(t, rt, db, snaps)
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, s, rec.ID, savedMemory)
	closeService(s)
	s2 := newSnapService(t, rt, db, snaps)
	r, err := s2.Get(ctx, "t", rec.ID)
	if err != nil || r.State != StatePaused {
		t.Fatalf("after restart: %+v, %v; want paused", r, err)
	}
	if rt.state(rec.ID) != runtime.StateCheckpointed {
		t.Fatalf("recovery changed the runtime state to %s", rt.state(rec.ID))
	}
	if _, resumed, err := s2.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{}); err != nil || !resumed {
		t.Fatalf("Connect after restart: %v", err)
	}
}

// Concurrent first requests to a paused sandbox with auto-resume: one
// resumes it, the others wait and succeed.
func TestConcurrentAutoResume(t *testing.T) {
	rt := newFakeRuntime()
	rt.restoreDelay = 50 * time.Millisecond
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), t.TempDir())
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, AutoPause: true, AutoResume: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, s, rec.ID, savedMemory)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Ingress(ctx, rec.ID); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Ingress: %v", err)
	}
	if n := rt.restores.Load(); n != 1 {
		t.Errorf("%d restores, want 1", n)
	}
	if r, _ := s.load(ctx, rec.ID); r.State != StateRunning {
		t.Errorf("state %s after auto-resume", r.State)
	}
	// Without auto-resume, traffic does not wake a paused sandbox.
	plain, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, "t", plain.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ingress(ctx, plain.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ingress to a paused sandbox without auto-resume: %v", err)
	}
}

func TestAutoPauseFilesOnlyRejectsAutoResume(t *testing.T) {
	rt := newFakeRuntime()
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), t.TempDir())
	_, err := s.Create(context.Background(), CreateRequest{Team: "t", Template: "base", Timeout: time.Minute,
		AutoPause: true, AutoResume: true, AutoPauseFilesOnly: true})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("create: %v, want ErrInvalid", err)
	}
}

func TestSnapshots(t *testing.T) {
	rt := newFakeRuntime()
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), t.TempDir())
	ctx := context.Background()
	src, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true,
		EnvVars: map[string]string{"A": "1"}, PublicTraffic: true})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := s.CreateSnapshot(ctx, "t", src.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sn.ID, "snap") || sn.SnapshotID() != sn.ID+":default" || sn.Names()[0] != "t/"+sn.ID+":default" || sn.FilesOnly {
		t.Errorf("snapshot %+v (names %v)", sn, sn.Names())
	}
	if r, _ := s.load(ctx, src.ID); r.State != StateRunning {
		t.Errorf("source %s after snapshot, want running", r.State)
	}
	if _, err := s.CreateSnapshot(ctx, "other", src.ID, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("snapshot of another team's sandbox: %v", err)
	}
	if _, err := s.CreateSnapshot(ctx, "t", src.ID, "bad name!"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}

	// Many sandboxes from one snapshot, each with its own identity.
	for _, ref := range []string{sn.SnapshotID(), sn.ID, "t/" + sn.ID + ":default"} {
		rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: ref, Timeout: time.Minute, Secure: true,
			EnvVars: map[string]string{"B": "2"}})
		if err != nil {
			t.Fatalf("create from %q: %v", ref, err)
		}
		if rec.ID == src.ID || rec.Snapshot != sn.ID || rec.TemplateID != src.TemplateID {
			t.Errorf("sandbox from snapshot: %+v", rec)
		}
		st := rt.daemon(rec.ID).State()
		if st.AccessToken() != s.EnvdToken(rec.ID) {
			t.Errorf("sandbox %s from snapshot keeps the source's envd token", rec.ID)
		}
		env := st.Env()
		if env["E2B_SANDBOX_ID"] != rec.ID || env["A"] != "1" || env["B"] != "2" {
			t.Errorf("sandbox %s from snapshot: env %v", rec.ID, env)
		}
	}
	if _, err := s.Create(ctx, CreateRequest{Team: "other", Template: sn.SnapshotID(), Timeout: time.Minute}); !errors.Is(err, ErrTemplate) {
		t.Errorf("another team creating from the snapshot: %v, want ErrTemplate (not found)", err)
	}

	// Names: a second snapshot under a name replaces the first's content.
	named, err := s.CreateSnapshot(ctx, "t", src.ID, "mine")
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.CreateSnapshot(ctx, "t", src.ID, "mine")
	if err != nil || again.ID != named.ID {
		t.Errorf("second snapshot named mine: %+v, %v; want the same ID %s", again, err, named.ID)
	}
	if _, err := s.Create(ctx, CreateRequest{Team: "t", Template: "mine:default", Timeout: time.Minute}); err != nil {
		t.Errorf("create from a snapshot by name: %v", err)
	}

	// Listing, with the sandbox filter and pages.
	other, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(ctx, "t", other.ID, ""); err != nil {
		t.Fatal(err)
	}
	var seen []string
	f := SnapshotFilter{Team: "t", SandboxID: src.ID, Limit: 1}
	for i := 0; ; i++ {
		if i > 5 {
			t.Fatal("pagination does not end")
		}
		p, err := s.ListSnapshots(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range p.Snapshots {
			seen = append(seen, x.ID)
		}
		if p.NextToken == "" {
			break
		}
		f.PageToken = p.NextToken
	}
	if len(seen) != 2 || seen[0] == seen[1] {
		t.Errorf("snapshots of %s: %v; want its two", src.ID, seen)
	}
	if p, _ := s.ListSnapshots(ctx, SnapshotFilter{Team: "t", Name: "mine"}); len(p.Snapshots) != 1 || p.Snapshots[0].ID != named.ID {
		t.Errorf("list by name: %+v", p)
	}
	if p, _ := s.ListSnapshots(ctx, SnapshotFilter{Team: "other"}); len(p.Snapshots) != 0 {
		t.Errorf("another team sees %d snapshots", len(p.Snapshots))
	}
	if _, err := s.ListSnapshots(ctx, SnapshotFilter{Team: "t", PageToken: "%%%"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad page token: %v", err)
	}
	if n, _ := s.UsingTemplate(ctx, src.TemplateID); n < 3 {
		t.Errorf("UsingTemplate counts %d; snapshots need the template too", n)
	}

	// Deleting: the snapshot goes, sandboxes made from it stay.
	if err := s.DeleteSnapshot(ctx, "t", sn.SnapshotID()); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, "t", sn.SnapshotID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Create(ctx, CreateRequest{Team: "t", Template: sn.SnapshotID(), Timeout: time.Minute}); !errors.Is(err, ErrTemplate) {
		t.Errorf("create from a deleted snapshot: %v, want ErrTemplate (not found)", err)
	}
	if err := s.DeleteSnapshot(ctx, "other", named.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("another team deleting: %v", err)
	}

	// A restart clears what a crash left beside the recorded snapshots.
	for _, leftover := range []string{named.ID + ".new-abc", "forkxyz"} {
		if err := os.Mkdir(filepath.Join(s.cfg.SnapshotDir, leftover), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.cleanSnapshotDir(ctx); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(s.cfg.SnapshotDir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if p, _ := s.ListSnapshots(ctx, SnapshotFilter{Team: "t"}); len(names) != len(p.Snapshots) {
		t.Errorf("snapshot dir holds %v after cleaning; %d snapshots are recorded", names, len(p.Snapshots))
	}
}

func TestFork(t *testing.T) {
	rt := newFakeRuntime()
	snaps := t.TempDir()
	s := newSnapService(t, rt, filepath.Join(t.TempDir(), "db"), snaps)
	ctx := context.Background()
	src, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true,
		EnvVars: map[string]string{"A": "1"}, Metadata: map[string]string{"m": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Fork(ctx, "t", src.ID, 3, 2*time.Minute)
	if err != nil || len(res) != 3 {
		t.Fatalf("Fork: %d results, %v", len(res), err)
	}
	seen := map[string]bool{src.ID: true}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("fork: %v", r.Err)
		}
		if seen[r.Record.ID] || r.Record.State != StateRunning || r.Record.Metadata["m"] != "1" {
			t.Errorf("fork record %+v", r.Record)
		}
		seen[r.Record.ID] = true
		st := rt.daemon(r.Record.ID).State()
		if st.AccessToken() != s.EnvdToken(r.Record.ID) || st.Env()["A"] != "1" || st.Env()["E2B_SANDBOX_ID"] != r.Record.ID {
			t.Errorf("fork %s: envd not given its own identity", r.Record.ID)
		}
	}
	if ents, _ := os.ReadDir(snaps); len(ents) != 0 {
		t.Errorf("fork left %d entries in the snapshot dir", len(ents))
	}
	if p, _ := s.ListSnapshots(ctx, SnapshotFilter{Team: "t"}); len(p.Snapshots) != 0 {
		t.Errorf("fork listed as a snapshot: %+v", p)
	}
	for _, c := range []struct {
		team, id string
		count    int
		want     error
	}{
		{"t", src.ID, 0, ErrInvalid},
		{"t", src.ID, MaxForks + 1, ErrInvalid},
		{"t", "inope", 1, ErrNotFound},
		{"other", src.ID, 1, ErrNotFound},
	} {
		if _, err := s.Fork(ctx, c.team, c.id, c.count, time.Minute); !errors.Is(err, c.want) {
			t.Errorf("Fork(%s, %s, %d): %v, want %v", c.team, c.id, c.count, err, c.want)
		}
	}
}
