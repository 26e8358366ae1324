package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/envd"
	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store/bolt"
)

// poolTemplates is a template source whose "base" can be rebuilt (its
// layers change) or deleted while the service runs.
type poolTemplates struct {
	mu      sync.Mutex
	build   int
	deleted bool
}

func (p *poolTemplates) Resolve(ctx context.Context, ref, team string) (Template, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ref {
	case "base", "tplbase":
		if p.deleted {
			return Template{}, fmt.Errorf("%w: %s", ErrTemplate, ref)
		}
		return Template{ID: "tplbase", Alias: "base", CPUs: 2, MemoryMB: 512, DiskMB: 1024, EnvdVersion: envd.Version,
			Layers: []string{"/layers/build-" + strconv.Itoa(p.build)}}, nil
	}
	return Template{}, fmt.Errorf("%w: %s", ErrTemplate, ref)
}

func (p *poolTemplates) rebuild() { p.mu.Lock(); p.build++; p.mu.Unlock() }
func (p *poolTemplates) remove()  { p.mu.Lock(); p.deleted = true; p.mu.Unlock() }

// slowRuntime delays creates (a fill in flight at Close).
type slowRuntime struct {
	*fakeRuntime
	delay time.Duration
}

func (r slowRuntime) Create(ctx context.Context, spec runtime.Spec) (runtime.Info, error) {
	select {
	case <-time.After(r.delay):
	case <-ctx.Done():
		return runtime.Info{}, ctx.Err()
	}
	return r.fakeRuntime.Create(ctx, spec)
}

// newPoolService starts a service with a warm pool of base; the test
// closes it (closeService) or cleanup does.
func newPoolService(t *testing.T, rt runtime.Runtime, db string, tpls Templates, size int, tune ...func(*Service)) *Service {
	t.Helper()
	st, err := bolt.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if tpls == nil {
		tpls = &poolTemplates{}
	}
	s, err := New(Config{
		Runtime: rt, Store: st, Templates: tpls, Secret: []byte("0123456789abcdef0123"),
		Node: "n1", MaxTimeout: time.Hour, PoolSize: size, PoolTeam: "default",
		NewID: func() string { return "i" + strconv.FormatInt(5000000+idSeq.Add(1), 10) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tune {
		f(s)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { closeService(s) }) })
	return s
}

// pooledIDs lists the IDs ready in the pool.
func pooledIDs(s *Service) map[string]bool {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	out := map[string]bool{}
	for _, e := range s.pool.ready {
		out[e.id] = true
	}
	return out
}

// waitPool waits until the pool holds n ready sandboxes.
func waitPool(t *testing.T, s *Service, n int) map[string]bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids := pooledIDs(s)
		if len(ids) == n {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d sandboxes, want %d (%s)", len(ids), n, s.PoolStatus())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPoolWarmsTheShell: every pooled sandbox has run one login shell
// through envd before the pool offers it.
func TestPoolWarmsTheShell(t *testing.T) {
	marks := filepath.Join(t.TempDir(), "warm")
	if err := os.WriteFile(marks, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(marks, 0o666); err != nil {
		t.Fatal(err)
	}
	saved := poolWarmScript
	poolWarmScript = `shopt -q login_shell && echo "$SHLVL" >> ` + marks
	t.Cleanup(func() { poolWarmScript = saved })
	rt := newFakeRuntime()
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 3)
	waitPool(t, s, 3)
	b, err := os.ReadFile(marks)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 3 {
		t.Errorf("%d login shells ran for 3 pooled sandboxes:\n%s", lines, b)
	}
}

func TestPoolTakeAndRefill(t *testing.T) {
	rt := newFakeRuntime()
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 2)
	ctx := context.Background()
	before := waitPool(t, s, 2)
	if got := s.PoolStatus(); got != "base 2/2" {
		t.Errorf("PoolStatus = %q", got)
	}

	rec, err := s.Create(ctx, CreateRequest{Team: "t1", Template: "base", Timeout: time.Minute, Secure: true, Internet: true,
		PublicTraffic: true, EnvVars: map[string]string{"FOO": "bar"}, Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if !before[rec.ID] {
		t.Fatalf("create did not take a pooled sandbox: %s not in %v", rec.ID, before)
	}
	if rec.State != StateRunning || rec.Team != "t1" || rec.TemplateID != "tplbase" || rec.Metadata["k"] != "v" ||
		!rec.EndAt.After(rec.StartedAt) {
		t.Fatalf("record %+v", rec)
	}
	st := rt.daemon(rec.ID).State()
	if st.AccessToken() != s.EnvdToken(rec.ID) {
		t.Fatal("envd token is not the sandbox's")
	}
	env := st.Env()
	if env["FOO"] != "bar" || env["E2B_SANDBOX_ID"] != rec.ID || env["E2B_TEMPLATE_ID"] != "tplbase" {
		t.Fatalf("envd env after take: %v", env)
	}
	if got, err := s.Get(ctx, "t1", rec.ID); err != nil || got.Metadata["k"] != "v" {
		t.Fatalf("get taken sandbox: %v %+v", err, got)
	}
	page, err := s.List(ctx, ListFilter{Team: "t1"})
	if err != nil || len(page.Sandboxes) != 1 || page.Sandboxes[0].ID != rec.ID || page.TotalRunning != 1 {
		t.Fatalf("list: %v %+v", err, page)
	}
	s.mu.Lock()
	_, tracked := s.deadline[rec.ID]
	s.mu.Unlock()
	if !tracked {
		t.Fatal("taken sandbox not tracked for expiry")
	}

	// Refilled: two ready again, none of them the taken one.
	after := waitPool(t, s, 2)
	if after[rec.ID] {
		t.Fatal("taken sandbox still pooled")
	}
	if rt.count() != 3 {
		t.Fatalf("runtime has %d sandboxes, want 3", rt.count())
	}

	// A v1 request without secure: envd's token is cleared.
	rec2, err := s.Create(ctx, CreateRequest{Team: "t1", Template: "base", Timeout: time.Minute, Internet: true, PublicTraffic: true})
	if err != nil {
		t.Fatal(err)
	}
	if !after[rec2.ID] {
		t.Fatalf("second create was cold: %s", rec2.ID)
	}
	if tok := rt.daemon(rec2.ID).State().AccessToken(); tok != "" {
		t.Fatal("non-secure sandbox kept an access token")
	}
	if err := s.Kill(ctx, "t1", rec2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.get(rec2.ID); err == nil {
		t.Fatal("killed pooled sandbox still in the runtime")
	}
}

func TestPoolSandboxesAreInvisible(t *testing.T) {
	rt := newFakeRuntime()
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 3)
	ctx := context.Background()
	ids := waitPool(t, s, 3)
	for _, team := range []string{"t1", "default", ""} {
		page, err := s.List(ctx, ListFilter{Team: team, States: []State{StateRunning, StatePaused, StateCreating, StateKilling}})
		if err != nil || len(page.Sandboxes) != 0 || page.TotalRunning != 0 {
			t.Fatalf("team %q lists pooled sandboxes: %v %+v", team, err, page)
		}
	}
	recs, _ := s.cfg.Store.List(ctx, Collection)
	if len(recs) != 0 {
		t.Fatalf("pooled sandboxes have %d records", len(recs))
	}
	if n, err := s.UsingTemplate(ctx, "tplbase"); err != nil || n != 0 {
		t.Fatalf("pooled sandboxes count as template use: %d %v", n, err)
	}
	secure, _ := s.SecureIDs(ctx)
	for id := range ids {
		if _, err := s.Get(ctx, "default", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("get pooled %s: %v", id, err)
		}
		if _, err := s.Ingress(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("ingress to pooled %s: %v", id, err)
		}
		if err := s.Kill(ctx, "default", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("kill pooled %s: %v", id, err)
		}
		if _, err := s.Metrics(ctx, "default", id, time.Time{}, time.Time{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("metrics of pooled %s: %v", id, err)
		}
		for _, sid := range secure {
			if sid == id {
				t.Errorf("pooled %s offered for signed links", id)
			}
		}
	}
	s.mu.Lock()
	tracked := len(s.deadline)
	s.mu.Unlock()
	if tracked != 0 {
		t.Fatalf("%d pooled sandboxes tracked for expiry", tracked)
	}
	if got := waitPool(t, s, 3); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("pool changed without takes: %v → %v", ids, got)
	}
}

func TestPoolConcurrentCreatesNeverShare(t *testing.T) {
	rt := newFakeRuntime()
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 4)
	ctx := context.Background()
	pooled := waitPool(t, s, 4)
	const n = 12
	recs := make([]Record, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			recs[i], errs[i] = s.Create(ctx, CreateRequest{Team: "t" + strconv.Itoa(i%3), Template: "base", Timeout: time.Minute,
				Secure: true, Internet: true, PublicTraffic: true, EnvVars: map[string]string{"N": strconv.Itoa(i)}})
		}()
	}
	close(start)
	wg.Wait()
	seen := map[string]int{}
	fromPool := 0
	for i, rec := range recs {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if j, dup := seen[rec.ID]; dup {
			t.Fatalf("creates %d and %d got the same sandbox %s", j, i, rec.ID)
		}
		seen[rec.ID] = i
		if pooled[rec.ID] {
			fromPool++
		}
		if got := rt.daemon(rec.ID).State().Env()["N"]; got != strconv.Itoa(i) {
			t.Errorf("sandbox %s of create %d has N=%q", rec.ID, i, got)
		}
		if got, err := s.Get(ctx, rec.Team, rec.ID); err != nil || got.Team != "t"+strconv.Itoa(i%3) {
			t.Errorf("sandbox %s: %v %+v", rec.ID, err, got)
		}
	}
	if fromPool == 0 || fromPool > 4 {
		t.Fatalf("%d creates served from a pool of 4", fromPool)
	}
	t.Logf("%d of %d concurrent creates served from the pool", fromPool, n)
	waitPool(t, s, 4)
	waitFor(t, "runtime count", func() bool { return rt.count() == n+4 })
}

func TestPoolIncompatibleRequestsGoCold(t *testing.T) {
	rt := newFakeRuntime()
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 2)
	ctx := context.Background()
	pooled := waitPool(t, s, 2)
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true,
		Internet: false, InternetSet: true, PublicTraffic: true})
	if err != nil {
		t.Fatal(err)
	}
	if pooled[rec.ID] {
		t.Fatal("a request without internet got a pooled sandbox (which has egress)")
	}
	if got := pooledIDs(s); fmt.Sprint(got) != fmt.Sprint(pooled) {
		t.Fatalf("cold create changed the pool: %v → %v", pooled, got)
	}
	// Unknown templates fail as before.
	if _, err := s.Create(ctx, CreateRequest{Team: "t", Template: "nope", Timeout: time.Minute, Internet: true}); !errors.Is(err, ErrTemplate) {
		t.Fatalf("unknown template: %v", err)
	}

	base := Template{ID: "x"}
	withStart := Template{ID: "x", StartCmd: "server"}
	env := map[string]string{"A": "1"}
	cases := []struct {
		req  CreateRequest
		tpl  Template
		want bool
	}{
		{CreateRequest{Internet: true}, base, true},
		{CreateRequest{Internet: true, EnvVars: env, Secure: true}, base, true},
		{CreateRequest{Internet: true, PublicTraffic: false, MaskRequestHost: "h:${PORT}", AutoPause: true, AutoResume: true}, base, true},
		{CreateRequest{Internet: false}, base, false},
		{CreateRequest{Internet: true}, withStart, true},
		{CreateRequest{Internet: true, EnvVars: env}, withStart, false},
		{CreateRequest{Internet: true, EnvVars: env}, Template{ID: "x", ReadyCmd: "true"}, false},
	}
	for i, c := range cases {
		if got := poolCompatible(c.req, c.tpl); got != c.want {
			t.Errorf("case %d: poolCompatible = %v, want %v", i, got, c.want)
		}
	}
}

func TestPoolFailedTakeFallsBackCold(t *testing.T) {
	rt := newFakeRuntime()
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 1)
	ctx := context.Background()
	var broken string
	for id := range waitPool(t, s, 1) {
		broken = id
	}
	// Its envd stops answering (and drops the connections kept alive
	// since the fill): the take's /init fails.
	b, err := rt.setState(broken, runtime.StatePaused)
	if err != nil {
		t.Fatal(err)
	}
	b.d.Close(ctx)
	// With envs the take re-inits envd (a take without only records).
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true, Internet: true,
		EnvVars: map[string]string{"A": "1"}})
	if err != nil {
		t.Fatalf("create did not fall back: %v", err)
	}
	if rec.ID == broken {
		t.Fatal("got the broken pooled sandbox")
	}
	waitFor(t, "the broken sandbox destroyed", func() bool { _, err := rt.get(broken); return err != nil })
	if _, err := s.load(ctx, broken); !errors.Is(err, ErrNotFound) {
		t.Fatalf("broken sandbox has a record: %v", err)
	}
	waitPool(t, s, 1)
}

func TestPoolReplacesUnhealthySandboxes(t *testing.T) {
	rt := newFakeRuntime()
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 2, func(s *Service) { s.pool.recheck = 50 * time.Millisecond })
	ctx := context.Background()
	ids := waitPool(t, s, 2)
	var dead string
	for id := range ids {
		dead = id
		break
	}
	b, err := rt.setState(dead, runtime.StatePaused) // its envd stops answering
	if err != nil {
		t.Fatal(err)
	}
	b.d.Close(ctx)
	waitFor(t, "the unhealthy pooled sandbox replaced", func() bool {
		now := pooledIDs(s)
		return len(now) == 2 && !now[dead]
	})
	waitFor(t, "the unhealthy sandbox destroyed", func() bool { _, err := rt.get(dead); return err != nil })
	// A secure create without envs takes without /init: only healthy ones are left.
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true, Internet: true})
	if err != nil || rec.ID == dead {
		t.Fatalf("create: %v %s", err, rec.ID)
	}
	if rt.daemon(rec.ID).State().AccessToken() != s.EnvdToken(rec.ID) {
		t.Fatal("token of a sandbox taken without /init is not its own")
	}
}

func TestPoolRefillWaitsAfterTakes(t *testing.T) {
	p := &pool{}
	now := time.Now()
	if p.refillWait(now) != 0 {
		t.Fatal("waits without takes")
	}
	p.firstTake, p.lastTake = now, now
	if w := p.refillWait(now); w != poolRefillQuiet {
		t.Fatalf("right after a take: wait %s, want %s", w, poolRefillQuiet)
	}
	p.firstTake = now.Add(-poolRefillMaxWait + 10*time.Millisecond) // takes keep coming
	if w := p.refillWait(now); w != 10*time.Millisecond {
		t.Fatalf("after a second of takes: wait %s, want 10ms", w)
	}
	if w := p.refillWait(now.Add(time.Second)); w != 0 {
		t.Fatalf("later: wait %s", w)
	}
	p.refilled()
	if p.refillWait(now) != 0 {
		t.Fatal("waits after refilled")
	}
}

func TestPoolRefillBacksOffAfterErrors(t *testing.T) {
	rt := newFakeRuntime()
	rt.failNext.Store(true) // the first fill fails
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), nil, 1)
	t0 := time.Now()
	waitPool(t, s, 1)
	if d := time.Since(t0); d < poolBackoffMin/2 {
		t.Fatalf("refilled %s after a failure, want a backoff", d)
	}
	if rt.count() != 1 {
		t.Fatalf("runtime has %d sandboxes after a failed fill", rt.count())
	}
}

func TestPoolTemplateRebuiltOrDeleted(t *testing.T) {
	rt := newFakeRuntime()
	tpls := &poolTemplates{}
	s := newPoolService(t, rt, filepath.Join(t.TempDir(), "db"), tpls, 2)
	ctx := context.Background()
	old := waitPool(t, s, 2)
	tpls.rebuild()
	// A take right after the rebuild never gets a sandbox of the old build.
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Internet: true})
	if err != nil {
		t.Fatal(err)
	}
	if old[rec.ID] {
		t.Fatal("create got a pooled sandbox of the previous build")
	}
	// The refiller replaces the stale ones.
	waitFor(t, "stale pooled sandboxes replaced", func() bool {
		ids := pooledIDs(s)
		for id := range ids {
			if old[id] {
				return false
			}
		}
		return len(ids) == 2
	})
	for id := range old {
		waitFor(t, "stale sandbox destroyed", func() bool { _, err := rt.get(id); return err != nil })
	}
	fresh := pooledIDs(s)
	rec2, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Internet: true})
	if err != nil || !fresh[rec2.ID] {
		t.Fatalf("create after refill was not served from the new build: %v %s", err, rec2.ID)
	}
	// Deleted: the pool empties; nothing of it stays in the runtime.
	tpls.remove()
	s.pool.signal() // the refiller notices within poolRecheck; now, for the test
	waitFor(t, "pool emptied after the template was deleted", func() bool { return len(pooledIDs(s)) == 0 })
	waitFor(t, "pooled sandboxes destroyed", func() bool { return rt.count() == 2 })
}

func TestPoolCloseLeavesNothing(t *testing.T) {
	rt := newFakeRuntime()
	db := filepath.Join(t.TempDir(), "db")
	s := newPoolService(t, rt, db, nil, 3)
	ctx := context.Background()
	waitPool(t, s, 3)
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Hour, Internet: true, Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	closeService(s)
	if rt.count() != 1 {
		t.Fatalf("after Close the runtime has %d sandboxes, want only the user's", rt.count())
	}
	if _, err := rt.get(rec.ID); err != nil {
		t.Fatal("the user's sandbox did not survive Close")
	}

	// A fill in flight at Close leaves nothing either.
	slow := slowRuntime{fakeRuntime: rt, delay: 300 * time.Millisecond}
	s2 := newPoolService(t, slow, db, nil, 2)
	time.Sleep(100 * time.Millisecond)
	closeService(s2)
	if rt.count() != 1 {
		t.Fatalf("after a Close during a fill the runtime has %d sandboxes", rt.count())
	}
	if _, err := rt.get(rec.ID); err != nil {
		t.Fatal("the user's sandbox was not adopted by the restart")
	}
}

func TestPoolLeftoversDestroyedAtRestart(t *testing.T) {
	rt := newFakeRuntime()
	db := filepath.Join(t.TempDir(), "db")
	ctx := context.Background()
	// A crash left pooled sandboxes (no record) and one taken (record).
	for _, id := range []string{"ipool1", "ipool2"} {
		if _, err := rt.Create(ctx, runtime.Spec{ID: id, Labels: map[string]string{poolLabel: "ready", "template": "tplbase"}}); err != nil {
			t.Fatal(err)
		}
	}
	s := newPoolService(t, rt, db, nil, 1)
	for _, id := range []string{"ipool1", "ipool2"} {
		if _, err := rt.get(id); err == nil {
			t.Fatalf("leftover pooled sandbox %s not destroyed", id)
		}
	}
	waitPool(t, s, 1)
	rec, err := s.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Hour, Internet: true})
	if err != nil {
		t.Fatal(err)
	}
	closeService(s)
	s2 := newPoolService(t, rt, db, nil, 1)
	if _, err := s2.Get(ctx, "t", rec.ID); err != nil {
		t.Fatalf("taken sandbox not adopted after restart: %v", err)
	}
	page, _ := s2.List(ctx, ListFilter{Team: "t"})
	if len(page.Sandboxes) != 1 {
		t.Fatalf("list after restart: %+v", page.Sandboxes)
	}
	waitPool(t, s2, 1)
}

func TestPoolConfig(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := Config{Runtime: newFakeRuntime(), Store: st, Templates: &poolTemplates{}, Secret: []byte("0123456789abcdef0123"),
		NewID: func() string { return "i1" }}
	for _, c := range []struct {
		size  int
		pools map[string]int
		ok    bool
		want  string
	}{
		{0, nil, true, ""},
		{2, nil, true, "base 0/2"},
		{-1, nil, false, ""},
		{1, map[string]int{"base": 3, "other": 1}, true, "base 0/3, other 0/1"},
		{2, map[string]int{"base": 0, "other": 1}, true, "other 0/1"},
		{0, map[string]int{"x": -1}, false, ""},
		{0, map[string]int{"": 1}, false, ""},
	} {
		cfg.PoolSize, cfg.Pools = c.size, c.pools
		s, err := New(cfg)
		if (err == nil) != c.ok {
			t.Errorf("size %d pools %v: err %v", c.size, c.pools, err)
			continue
		}
		if err == nil && s.PoolStatus() != c.want {
			t.Errorf("size %d pools %v: status %q, want %q", c.size, c.pools, s.PoolStatus(), c.want)
		}
	}
}

// A take tells Config.Running of the sandbox it hands out; filling the pool
// tells it of nothing.
func TestPoolTakeTellsRunning(t *testing.T) {
	var heard idRecorder
	s := newPoolService(t, newFakeRuntime(), filepath.Join(t.TempDir(), "db"), nil, 1,
		func(s *Service) { s.cfg.Running = heard.add })
	pooled := waitPool(t, s, 1)
	if got := heard.got(); len(got) != 0 {
		t.Fatalf("filling the pool told Running of %v", got)
	}
	rec, err := s.Create(context.Background(), CreateRequest{Team: "t", Template: "base", Timeout: time.Minute, Secure: true, Internet: true, PublicTraffic: true})
	if err != nil {
		t.Fatal(err)
	}
	if !pooled[rec.ID] {
		t.Fatalf("create was cold: %s not in %v", rec.ID, pooled)
	}
	if got := heard.got(); !slices.Equal(got, []string{rec.ID}) {
		t.Fatalf("Running heard %v, want [%s]", got, rec.ID)
	}
}
