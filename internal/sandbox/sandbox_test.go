package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/envd"
	"github.com/paddockhq/paddock/internal/envd/identity"
	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
	"github.com/paddockhq/paddock/internal/store/bolt"
)

// fakeRuntime runs a real envd daemon per sandbox on a loopback listener
// instead of an isolated environment, so the lifecycle logic can be tested
// without root. A memory checkpoint keeps the daemon (its state is the
// sandbox's "memory") but stops serving; a files-only one drops it.
type fakeRuntime struct {
	mu        sync.Mutex
	boxes     map[string]*fakeBox
	snaps     map[string]fakeSnap // by snapshot dir
	failNext  atomic.Bool
	destroyed atomic.Int32

	memErr         error       // CheckCheckpoint's verdict
	failCheckpoint atomic.Bool // every Checkpoint fails while set
	failRestore    atomic.Bool // every Restore fails while set
	restores       atomic.Int32
	restoreDelay   time.Duration
}

type fakeBox struct {
	info runtime.Info
	d    *envd.Daemon
	l    net.Listener // nil while checkpointed
}

// fakeSnap is what a fake snapshot keeps of envd's memory.
type fakeSnap struct {
	token string
	env   map[string]string
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{boxes: map[string]*fakeBox{}, snaps: map[string]fakeSnap{}}
}

func serveFake(d *envd.Daemon) (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go d.Serve(l)
	return l, nil
}

func (f *fakeRuntime) Create(ctx context.Context, spec runtime.Spec) (runtime.Info, error) {
	if f.failNext.Swap(false) {
		return runtime.Info{}, errors.New("injected create failure")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.boxes[spec.ID]; ok {
		return runtime.Info{}, runtime.ErrExists
	}
	d := envd.New(envd.Config{})
	l, err := serveFake(d)
	if err != nil {
		return runtime.Info{}, err
	}
	info := runtime.Info{ID: spec.ID, State: runtime.StateRunning, CreatedAt: time.Now(), Labels: spec.Labels}
	f.boxes[spec.ID] = &fakeBox{info: info, d: d, l: l}
	return info, nil
}

// get returns a box; callers read or change its fields under f.mu.
func (f *fakeRuntime) get(id string) (*fakeBox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.boxes[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", runtime.ErrNotFound, id)
	}
	return b, nil
}

func (f *fakeRuntime) state(id string) runtime.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.boxes[id]; ok {
		return b.info.State
	}
	return ""
}

func (f *fakeRuntime) daemon(id string) *envd.Daemon {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.boxes[id]; ok {
		return b.d
	}
	return nil
}

// setState changes a box's run state; from lists the states it may be in.
func (f *fakeRuntime) setState(id string, to runtime.State, from ...runtime.State) (*fakeBox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.boxes[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", runtime.ErrNotFound, id)
	}
	if len(from) > 0 && !slices.Contains(from, b.info.State) {
		return nil, fmt.Errorf("sandbox %s is %s", id, b.info.State)
	}
	b.info.State = to
	return b, nil
}

func (f *fakeRuntime) Inspect(ctx context.Context, id string) (runtime.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.boxes[id]
	if !ok {
		return runtime.Info{}, fmt.Errorf("%w: %s", runtime.ErrNotFound, id)
	}
	return b.info, nil
}

func (f *fakeRuntime) List(ctx context.Context) ([]runtime.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runtime.Info
	for _, b := range f.boxes {
		out = append(out, b.info)
	}
	return out, nil
}

func (f *fakeRuntime) Dial(ctx context.Context, id string, port int) (net.Conn, error) {
	f.mu.Lock()
	b, ok := f.boxes[id]
	var addr string
	if ok && b.l != nil && b.info.State == runtime.StateRunning {
		addr = b.l.Addr().String()
	}
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", runtime.ErrNotFound, id)
	}
	if port != runtime.EnvdPort || addr == "" {
		return nil, errors.New("connection refused")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (f *fakeRuntime) Pause(ctx context.Context, id string) error {
	_, err := f.setState(id, runtime.StatePaused, runtime.StateRunning, runtime.StatePaused)
	return err
}

func (f *fakeRuntime) Resume(ctx context.Context, id string) error {
	_, err := f.setState(id, runtime.StateRunning, runtime.StateRunning, runtime.StatePaused)
	return err
}

func (f *fakeRuntime) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	if _, err := f.get(id); err != nil {
		return runtime.Stats{}, err
	}
	return runtime.Stats{MemoryUsed: 1 << 20, MemoryLimit: 512 << 20, CPUUsage: time.Second}, nil
}

func (f *fakeRuntime) ExportChanges(ctx context.Context, id, dst string) error {
	_, err := f.get(id)
	return err
}

func (f *fakeRuntime) Checkpoint(ctx context.Context, id string, opts runtime.CheckpointOptions) error {
	if f.failCheckpoint.Load() {
		return errors.New("injected checkpoint failure")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.boxes[id]
	if !ok {
		return fmt.Errorf("%w: %s", runtime.ErrNotFound, id)
	}
	if b.info.State == runtime.StateCheckpointed {
		return nil
	}
	b.l.Close()
	b.l = nil
	if opts.FilesOnly {
		b.d.Close(ctx)
		b.d = nil
	}
	b.info.State = runtime.StateCheckpointed
	return nil
}

func (f *fakeRuntime) Restore(ctx context.Context, id string, opts runtime.RestoreOptions) (runtime.Info, error) {
	time.Sleep(f.restoreDelay)
	if f.failRestore.Load() {
		return runtime.Info{}, errors.New("injected restore failure")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.boxes[id]
	if !ok {
		return runtime.Info{}, fmt.Errorf("%w: %s", runtime.ErrNotFound, id)
	}
	if b.info.State != runtime.StateCheckpointed {
		b.info.State = runtime.StateRunning
		return b.info, nil
	}
	f.restores.Add(1)
	if b.d == nil || opts.FilesOnly {
		b.d = envd.New(envd.Config{})
	}
	l, err := serveFake(b.d)
	if err != nil {
		return runtime.Info{}, err
	}
	b.l = l
	b.info.State = runtime.StateRunning
	return b.info, nil
}

func (f *fakeRuntime) Snapshot(ctx context.Context, id string, opts runtime.SnapshotOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.boxes[id]
	if !ok {
		return fmt.Errorf("%w: %s", runtime.ErrNotFound, id)
	}
	if err := os.Mkdir(opts.Dir, 0o700); err != nil {
		return err
	}
	snap := fakeSnap{}
	if !opts.FilesOnly && b.d != nil {
		snap.token = b.d.State().AccessToken()
		snap.env = b.d.State().Env()
	}
	f.snaps[opts.Dir] = snap
	return nil
}

func (f *fakeRuntime) CreateFromSnapshot(ctx context.Context, spec runtime.Spec, dir string) (runtime.Info, error) {
	// The service renames a snapshot into place: the fake's record moves
	// with it.
	f.mu.Lock()
	snap, ok := f.snaps[dir]
	if !ok {
		for k, v := range f.snaps {
			if strings.HasPrefix(k, dir+".new-") {
				snap, ok = v, true
			}
		}
	}
	f.mu.Unlock()
	if !ok {
		return runtime.Info{}, fmt.Errorf("no snapshot in %s", dir)
	}
	if _, err := os.Stat(dir); err != nil {
		return runtime.Info{}, err
	}
	info, err := f.Create(ctx, spec)
	if err != nil {
		return runtime.Info{}, err
	}
	if snap.env != nil {
		tok := snap.token
		f.daemon(spec.ID).State().Apply(identity.Init{EnvVars: snap.env, AccessToken: &tok})
	}
	return info, nil
}

func (f *fakeRuntime) CheckCheckpoint(ctx context.Context) error { return f.memErr }

func (f *fakeRuntime) Destroy(ctx context.Context, id string) error {
	f.mu.Lock()
	b, ok := f.boxes[id]
	delete(f.boxes, id)
	f.mu.Unlock()
	if ok {
		if b.d != nil {
			b.d.Close(ctx)
		}
		if b.l != nil {
			b.l.Close()
		}
		f.destroyed.Add(1)
	}
	return nil
}

func (f *fakeRuntime) Close() error { return nil }

func (f *fakeRuntime) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.boxes)
}

type fakeTemplates struct{}

func (fakeTemplates) Resolve(ctx context.Context, ref, team string) (Template, error) {
	switch ref {
	case "base", "tplbase":
		return Template{ID: "tplbase", Alias: "base", CPUs: 2, MemoryMB: 512, DiskMB: 1024, EnvdVersion: envd.Version}, nil
	case "private":
		return Template{}, fmt.Errorf("%w: private", ErrForbidden)
	}
	return Template{}, fmt.Errorf("%w: %s", ErrTemplate, ref)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var idSeq atomic.Int64

func newTestService(t *testing.T, rt *fakeRuntime, dbPath string, clk *clock) *Service {
	t.Helper()
	st, err := bolt.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Runtime: rt, Store: st, Templates: fakeTemplates{}, Secret: []byte("0123456789abcdef0123"),
		Domain: "paddock.test", Node: "n1", MaxTimeout: time.Hour,
		NewID: func() string { return "i" + strconv.FormatInt(1000000+idSeq.Add(1), 10) },
	}
	if clk != nil {
		cfg.Now = clk.now
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); st.Close() })
	return s
}

func TestCreateInitialisesEnvdWithToken(t *testing.T) {
	rt := newFakeRuntime()
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), nil)
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t1", Template: "base", Timeout: time.Minute, Secure: true,
		EnvVars: map[string]string{"FOO": "bar"}, Metadata: map[string]string{"k": "v"}, PublicTraffic: true})
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != StateRunning || rec.TemplateID != "tplbase" || rec.EnvdVersion != envd.Version {
		t.Fatalf("unexpected record %+v", rec)
	}
	st := rt.daemon(rec.ID).State()
	if st.AccessToken() != s.EnvdToken(rec.ID) || st.AccessToken() == "" {
		t.Fatalf("envd token not set by /init")
	}
	env := st.Env()
	if env["FOO"] != "bar" || env["E2B_SANDBOX_ID"] != rec.ID || env["E2B_SANDBOX"] != "true" {
		t.Fatalf("envd env not set: %v", env)
	}
	// The token changes nothing without it: /envs needs it.
	conn, _ := rt.Dial(ctx, rec.ID, runtime.EnvdPort)
	conn.Close()
	got, err := s.Get(ctx, "t1", rec.ID)
	if err != nil || got.Metadata["k"] != "v" {
		t.Fatalf("get: %v %+v", err, got)
	}
	if _, err := s.Get(ctx, "other-team", rec.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other team sees sandbox: %v", err)
	}
}

func TestCreateFailuresLeaveNothing(t *testing.T) {
	rt := newFakeRuntime()
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), nil)
	ctx := context.Background()
	cases := []struct {
		req  CreateRequest
		want error
	}{
		{CreateRequest{Team: "t", Template: "nope", Timeout: time.Minute}, ErrTemplate},
		{CreateRequest{Team: "t", Template: "private", Timeout: time.Minute}, ErrForbidden},
		{CreateRequest{Team: "t", Template: "base", Timeout: -time.Second}, ErrInvalid},
		{CreateRequest{Team: "t", Template: "base", Timeout: 2 * time.Hour}, ErrInvalid},
		{CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, AutoResume: true}, ErrInvalid},
	}
	for _, c := range cases {
		if _, err := s.Create(ctx, c.req); !errors.Is(err, c.want) {
			t.Errorf("create %+v: got %v, want %v", c.req, err, c.want)
		}
	}
	rt.failNext.Store(true)
	if _, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute}); err == nil {
		t.Fatal("injected runtime failure not reported")
	}
	page, err := s.List(ctx, ListFilter{Team: "t", States: []State{StateRunning, StatePaused}})
	if err != nil || len(page.Sandboxes) != 0 {
		t.Fatalf("records left behind: %v %+v", err, page)
	}
	recs, _ := s.cfg.Store.List(ctx, Collection)
	if len(recs) != 0 || rt.count() != 0 {
		t.Fatalf("leaked %d records, %d runtime sandboxes", len(recs), rt.count())
	}
}

// The creating record is written while the runtime creates the sandbox: a
// record that cannot be written (here: the ID is taken) fails the create,
// removes the runtime sandbox it made and leaves the other record alone.
func TestCreateRecordFailureRemovesRuntimeState(t *testing.T) {
	rt := newFakeRuntime()
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), nil)
	ctx := context.Background()
	taken := "i" + strconv.FormatInt(1000000+idSeq.Load()+1, 10) // the next ID
	other := []byte(`{"id":"` + taken + `","team":"someone","state":"running"}`)
	if err := store.Put(ctx, s.cfg.Store, Collection, taken, other); err != nil {
		t.Fatal(err)
	}
	_, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("create with a taken ID: %v, want a store conflict", err)
	}
	got, err := s.cfg.Store.Get(ctx, Collection, taken)
	if err != nil || string(got) != string(other) {
		t.Fatalf("the other record changed: %q %v", got, err)
	}
	if rt.count() != 0 || rt.destroyed.Load() != 1 {
		t.Fatalf("%d runtime sandboxes left, %d destroyed; want 0 and 1", rt.count(), rt.destroyed.Load())
	}
}

func TestTimeoutsExpiryAndConnect(t *testing.T) {
	rt := newFakeRuntime()
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), clk)
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Connect only extends.
	r2, resumed, err := s.Connect(ctx, "t", rec.ID, 5*time.Second, ResumeOptions{})
	if err != nil || resumed || !r2.EndAt.Equal(rec.EndAt) {
		t.Fatalf("connect shortened or resumed: %v %v %v vs %v", err, resumed, r2.EndAt, rec.EndAt)
	}
	r3, _, _ := s.Connect(ctx, "t", rec.ID, 30*time.Second, ResumeOptions{})
	if !r3.EndAt.Equal(clk.now().Add(30 * time.Second)) {
		t.Fatalf("connect did not extend: %v", r3.EndAt)
	}
	// SetTimeout may shorten.
	if err := s.SetTimeout(ctx, "t", rec.ID, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTimeout(ctx, "t", rec.ID, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero timeout accepted: %v", err)
	}
	clk.add(3 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for rt.count() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rt.count() != 0 {
		t.Fatal("expired sandbox not killed")
	}
	if _, err := s.Get(ctx, "t", rec.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired sandbox still listed: %v", err)
	}
	if err := s.Kill(ctx, "t", rec.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second kill: %v", err)
	}
}

func TestPauseResumeAndAutoPause(t *testing.T) {
	rt := newFakeRuntime()
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), clk)
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Second, AutoPause: true, AutoResume: true})
	if err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if r, _ := s.load(ctx, rec.ID); r.State == StatePaused {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r, _ := s.load(ctx, rec.ID); r.State != StatePaused {
		t.Fatalf("auto-pause did not happen: %s", r.State)
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("double pause: %v", err)
	}
	// Auto-resume through ingress.
	if _, err := s.Ingress(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.load(ctx, rec.ID); r.State != StateRunning || !r.EndAt.After(clk.now()) {
		t.Fatalf("ingress did not resume: %+v", r)
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	_, resumed, err := s.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{})
	if err != nil || !resumed {
		t.Fatalf("connect to paused: resumed=%v err=%v", resumed, err)
	}
}

func TestListFiltersAndPagination(t *testing.T) {
	rt := newFakeRuntime()
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), clk)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 5; i++ {
		clk.add(time.Second)
		md := map[string]string{"n": strconv.Itoa(i), "parity": strconv.Itoa(i % 2)}
		rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Hour, Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	if _, err := s.Create(ctx, CreateRequest{Team: "other", Template: "base", Timeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, "t", ids[0], PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	f := ListFilter{Team: "t", Limit: 2}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		p, err := s.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Sandboxes {
			seen = append(seen, r.ID)
		}
		if p.NextToken == "" {
			break
		}
		f.PageToken = p.NextToken
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("pages gave %v, want newest first %v", seen, want)
	}
	p, _ := s.List(ctx, ListFilter{Team: "t", Metadata: map[string]string{"parity": "1"}})
	if len(p.Sandboxes) != 2 {
		t.Fatalf("metadata filter: %d", len(p.Sandboxes))
	}
	p, _ = s.List(ctx, ListFilter{Team: "t", States: []State{StatePaused}})
	if len(p.Sandboxes) != 1 || p.Sandboxes[0].ID != ids[0] {
		t.Fatalf("state filter: %+v", p.Sandboxes)
	}
	p, _ = s.List(ctx, ListFilter{Team: "t", Ascending: true, Limit: 1})
	if p.Sandboxes[0].ID != ids[0] || p.NextToken == "" {
		t.Fatalf("ascending: %+v", p)
	}
	if _, err := s.List(ctx, ListFilter{Team: "t", PageToken: "garbage!"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestRecoveryAdoptsAndReaps(t *testing.T) {
	rt := newFakeRuntime()
	db := filepath.Join(t.TempDir(), "db")
	st, err := bolt.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := New(Config{Runtime: rt, Store: st, Templates: fakeTemplates{}, Secret: []byte("0123456789abcdef0123"), Node: "n1",
		NewID: func() string { return "i" + strconv.FormatInt(2000000+idSeq.Add(1), 10) }})
	s1.Start(context.Background())
	ctx := context.Background()
	keep, err := s1.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A half-created record (crash mid-create) and an orphan runtime sandbox.
	half := Record{ID: "ihalf", Team: "t", State: StateCreating, Node: "n1"}
	raw, _ := jsonMarshal(half)
	st.Apply(ctx, storeOp(Collection, half.ID, raw))
	rt.Create(ctx, runtime.Spec{ID: "ihalf"})
	rt.Create(ctx, runtime.Spec{ID: "iorphan"})
	s1.Close()
	st.Close()

	s2 := newTestService(t, rt, db, nil)
	if _, err := s2.Get(ctx, "t", keep.ID); err != nil {
		t.Fatalf("running sandbox not adopted: %v", err)
	}
	if _, err := rt.get("ihalf"); err == nil {
		t.Fatal("half-created sandbox not reaped")
	}
	if _, err := rt.get("iorphan"); err == nil {
		t.Fatal("orphan runtime sandbox not reaped")
	}
	if _, err := s2.load(ctx, "ihalf"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("half record kept: %v", err)
	}
	// The adopted sandbox still works.
	if err := s2.envd.waitHealthy(ctx, keep.ID); err != nil {
		t.Fatal(err)
	}
	_ = http.StatusOK
}

// idRecorder records the IDs Config.Running is called with.
type idRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *idRecorder) add(id string) { r.mu.Lock(); r.ids = append(r.ids, id); r.mu.Unlock() }

func (r *idRecorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// Config.Running hears of every sandbox that starts running for a client:
// a cold create and a resume, each once; not of a failed create or a pause.
// (Pool takes: TestPoolTakeTellsRunning.)
func TestRunningHook(t *testing.T) {
	rt := newFakeRuntime()
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), nil)
	var heard idRecorder
	s.cfg.Running = heard.add
	ctx := context.Background()
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if got := heard.got(); !slices.Equal(got, []string{rec.ID}) {
		t.Fatalf("after a create: Running heard %v, want [%s]", got, rec.ID)
	}
	rt.failNext.Store(true)
	if _, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute}); err == nil {
		t.Fatal("injected runtime failure not reported")
	}
	if _, err := s.Pause(ctx, "t", rec.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := heard.got(); len(got) != 1 {
		t.Fatalf("after a failed create and a pause: Running heard %v, want only [%s]", got, rec.ID)
	}
	if _, resumed, err := s.Connect(ctx, "t", rec.ID, time.Minute, ResumeOptions{}); err != nil || !resumed {
		t.Fatalf("connect to paused: resumed=%v err=%v", resumed, err)
	}
	if got := heard.got(); !slices.Equal(got, []string{rec.ID, rec.ID}) {
		t.Fatalf("after a resume: Running heard %v, want [%s %s]", got, rec.ID, rec.ID)
	}
}
