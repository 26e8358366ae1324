// Package conformance owns the behaviour every runtime.Runtime driver must
// show, as one test suite (Run) that each driver's tests call with a Harness,
// plus helpers those tests share (envd health polling, sandbox IDs, and
// fixtures: a static paddock binary and a tiny busybox root filesystem).
//
// The suite talks to sandboxes only through the Runtime interface and envd's
// /health endpoint; driver-specific checks (namespaces, cgroups, seccomp)
// live in the driver's own tests.
package conformance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// Harness describes the driver under test.
type Harness struct {
	// New opens a runtime over fresh, empty state. The suite closes it.
	New func(t *testing.T) runtime.Runtime
	// Reopen opens a second runtime over the same state as rt, as a
	// restarted control plane would. The suite has closed rt before.
	Reopen func(t *testing.T, rt runtime.Runtime) runtime.Runtime
	// Layers are the root filesystem layers (lowest first) of every sandbox
	// the suite creates. The top layer must provide what envd needs.
	Layers []string
	// Traces lists what the driver left on the host for sandbox id in rt
	// (mounts, cgroups, state files, network devices); nil means none.
	// Optional.
	Traces func(t *testing.T, rt runtime.Runtime, id string) []string
	// Resources counts the host resources the driver uses, by kind (mounts,
	// cgroup dirs, network devices, files under its root). The counts must
	// be the same before and after many create/destroy cycles. Optional.
	Resources func(t *testing.T, rt runtime.Runtime) map[string]int
	// Cycles is the number of create/destroy cycles of the leak test
	// (default 20).
	Cycles int
	// NewLayerDir returns a new empty host directory that may be used as a
	// layer of a sandbox (searchable by sandboxes), for ExportChanges.
	NewLayerDir func(t *testing.T) string
	// MemoryCheckpoints says the driver's memory checkpoints work on this
	// host: CheckCheckpoint must succeed, and processes must survive
	// Checkpoint and Restore. Without it only files-only checkpoints and
	// snapshots are exercised.
	MemoryCheckpoints bool
}

// HealthTimeout is how long a new sandbox's envd may take to answer /health.
const HealthTimeout = 10 * time.Second

// Run runs the conformance suite against the driver h describes.
func Run(t *testing.T, h Harness) {
	if h.New == nil || len(h.Layers) == 0 || h.NewLayerDir == nil {
		t.Fatal("conformance: Harness needs New, Layers and NewLayerDir")
	}
	if h.Cycles == 0 {
		h.Cycles = 20
	}
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, h) })
	t.Run("Errors", func(t *testing.T) { testErrors(t, h) })
	t.Run("Resources", func(t *testing.T) { testResources(t, h) })
	t.Run("DestroyAtOnce", func(t *testing.T) { testDestroyAtOnce(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("Restart", func(t *testing.T) { testRestart(t, h) })
	t.Run("ExportChanges", func(t *testing.T) { testExportChanges(t, h) })
	t.Run("Checkpoint", func(t *testing.T) { testCheckpoint(t, h) })
	t.Run("Snapshot", func(t *testing.T) { testSnapshot(t, h) })
	t.Run("CheckpointRestart", func(t *testing.T) { testCheckpointRestart(t, h) })
	t.Run("NoLeaks", func(t *testing.T) { testNoLeaks(t, h) })
}

// NewID returns a fresh sandbox ID in Paddock's format (`i` + 20 [a-z0-9]).
func NewID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "i" + string(b)
}

// Health sends one GET /health to the sandbox's envd through rt.Dial on a
// fresh connection and reports whether it answered 204 within timeout.
func Health(ctx context.Context, rt runtime.Runtime, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rt.Dial(ctx, id, runtime.EnvdPort)
		},
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://envd/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("GET /health: status %d, want 204", resp.StatusCode)
	}
	return nil
}

// WaitHealthy polls envd's /health in the sandbox until it answers 204 or
// ctx ends.
func WaitHealthy(ctx context.Context, rt runtime.Runtime, id string) error {
	var last error
	for {
		if last = Health(ctx, rt, id, time.Second); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd in %s not healthy: %w (last error: %v)", id, ctx.Err(), last)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, h Harness) runtime.Runtime {
	t.Helper()
	rt := h.New(t)
	t.Cleanup(func() { rt.Close() })
	return rt
}

// create creates a sandbox, waits for envd and registers its destruction.
func create(t *testing.T, rt runtime.Runtime, spec runtime.Spec) runtime.Info {
	t.Helper()
	ctx := ctxT(t)
	info, err := rt.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create(%s): %v", spec.ID, err)
	}
	t.Cleanup(func() { _ = rt.Destroy(context.Background(), spec.ID) })
	hctx, cancel := context.WithTimeout(ctx, HealthTimeout)
	defer cancel()
	if err := WaitHealthy(hctx, rt, spec.ID); err != nil {
		t.Fatal(err)
	}
	return info
}

func checkNoTraces(t *testing.T, h Harness, rt runtime.Runtime, id string) {
	t.Helper()
	if h.Traces == nil {
		return
	}
	if tr := h.Traces(t, rt, id); len(tr) > 0 {
		t.Errorf("sandbox %s left traces on the host: %v", id, tr)
	}
}

func listed(t *testing.T, rt runtime.Runtime, id string) (runtime.Info, bool) {
	t.Helper()
	infos, err := rt.List(ctxT(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, i := range infos {
		if i.ID == id {
			return i, true
		}
	}
	return runtime.Info{}, false
}

func testLifecycle(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	id := NewID()
	labels := map[string]string{"paddock.test/owner": "conformance", "template": "base"}
	before := time.Now().Add(-time.Second)
	info := create(t, rt, runtime.Spec{ID: id, Layers: h.Layers, Labels: labels})
	if info.ID != id || info.State != runtime.StateRunning {
		t.Errorf("Create returned %+v, want ID %s running", info, id)
	}

	got, err := rt.Inspect(ctx, id)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if got.State != runtime.StateRunning {
		t.Errorf("Inspect state %q, want running", got.State)
	}
	if !maps.Equal(got.Labels, labels) {
		t.Errorf("Inspect labels %v, want %v", got.Labels, labels)
	}
	if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("Inspect CreatedAt %v, not around now", got.CreatedAt)
	}
	if l, ok := listed(t, rt, id); !ok {
		t.Errorf("List does not contain %s", id)
	} else if l.State != runtime.StateRunning || !maps.Equal(l.Labels, labels) {
		t.Errorf("List entry %+v, want running with labels %v", l, labels)
	}

	st, err := rt.Stats(ctx, id)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.MemoryUsed <= 0 || st.Pids < 1 || st.CPUUsage <= 0 {
		t.Errorf("Stats %+v: want memory, pids and CPU time above zero", st)
	}

	if err := rt.Pause(ctx, id); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := rt.Pause(ctx, id); err != nil {
		t.Errorf("second Pause: %v", err)
	}
	if got, err := rt.Inspect(ctx, id); err != nil || got.State != runtime.StatePaused {
		t.Errorf("Inspect after Pause: %+v, %v; want paused", got, err)
	}
	if err := Health(ctx, rt, id, 300*time.Millisecond); err == nil {
		t.Errorf("envd answered /health while paused")
	}
	if err := rt.Resume(ctx, id); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if err := rt.Resume(ctx, id); err != nil {
		t.Errorf("second Resume: %v", err)
	}
	if got, err := rt.Inspect(ctx, id); err != nil || got.State != runtime.StateRunning {
		t.Errorf("Inspect after Resume: %+v, %v; want running", got, err)
	}
	if err := Health(ctx, rt, id, 5*time.Second); err != nil {
		t.Errorf("envd after Resume: %v", err)
	}

	// Destroying a paused sandbox works too.
	if err := rt.Pause(ctx, id); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := rt.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := rt.Destroy(ctx, id); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if _, err := rt.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Inspect after Destroy: %v, want ErrNotFound", err)
	}
	if _, ok := listed(t, rt, id); ok {
		t.Errorf("List still contains %s after Destroy", id)
	}
	if c, err := rt.Dial(ctx, id, runtime.EnvdPort); err == nil {
		c.Close()
		t.Errorf("Dial after Destroy succeeded")
	}
	checkNoTraces(t, h, rt, id)
}

func testErrors(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	id := NewID()
	create(t, rt, runtime.Spec{ID: id, Layers: h.Layers, Labels: map[string]string{"k": "v"}})

	_, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: h.Layers})
	if !errors.Is(err, runtime.ErrExists) {
		t.Errorf("Create with an existing ID: %v, want ErrExists", err)
	}
	// The failed create must not have harmed the existing sandbox.
	if got, err := rt.Inspect(ctx, id); err != nil || got.State != runtime.StateRunning || got.Labels["k"] != "v" {
		t.Errorf("existing sandbox after a duplicate Create: %+v, %v", got, err)
	}
	if err := Health(ctx, rt, id, 5*time.Second); err != nil {
		t.Errorf("existing sandbox after a duplicate Create: %v", err)
	}

	unknown := NewID()
	if _, err := rt.Inspect(ctx, unknown); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Inspect unknown: %v, want ErrNotFound", err)
	}
	if err := rt.Pause(ctx, unknown); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Pause unknown: %v, want ErrNotFound", err)
	}
	if err := rt.Resume(ctx, unknown); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Resume unknown: %v, want ErrNotFound", err)
	}
	if _, err := rt.Stats(ctx, unknown); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Stats unknown: %v, want ErrNotFound", err)
	}
	if _, err := rt.Dial(ctx, unknown, runtime.EnvdPort); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Dial unknown: %v, want ErrNotFound", err)
	}
	if err := rt.Destroy(ctx, unknown); err != nil {
		t.Errorf("Destroy unknown: %v, want nil", err)
	}
	for _, bad := range []string{"", "../x", "a/b", "-x"} {
		if _, err := rt.Inspect(ctx, bad); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("Inspect(%q): %v, want ErrNotFound", bad, err)
		}
	}

	// Bad specs fail cleanly and leave nothing behind.
	bad := []runtime.Spec{
		{ID: "bad/id", Layers: h.Layers},
		{ID: "", Layers: h.Layers},
		{ID: NewID()},
		{ID: NewID(), Layers: []string{"/nonexistent/paddock/layer"}},
		{ID: NewID(), Layers: append(slices.Clone(h.Layers), "relative/layer")},
		{ID: NewID(), Layers: h.Layers, Resources: runtime.Resources{MemoryBytes: -1}},
		{ID: NewID(), Layers: h.Layers, Hostname: "bad host name"},
	}
	for _, spec := range bad {
		if _, err := rt.Create(ctx, spec); err == nil {
			t.Errorf("Create(%+v) succeeded, want an error", spec)
			_ = rt.Destroy(ctx, spec.ID)
			continue
		}
		if _, ok := listed(t, rt, spec.ID); ok && spec.ID != "" {
			t.Errorf("failed Create(%+v) left a listed sandbox", spec)
		}
		if spec.ID != "" && spec.ID != "bad/id" {
			checkNoTraces(t, h, rt, spec.ID)
		}
	}

	// A cancelled context fails the create and leaves nothing behind.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	cid := NewID()
	if _, err := rt.Create(cctx, runtime.Spec{ID: cid, Layers: h.Layers}); err == nil {
		t.Errorf("Create with a cancelled context succeeded")
		_ = rt.Destroy(ctx, cid)
	}
	if _, err := rt.Inspect(ctx, cid); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Inspect after a cancelled Create: %v, want ErrNotFound", err)
	}
	checkNoTraces(t, h, rt, cid)
}

func testResources(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	id := NewID()
	res := runtime.Resources{CPUs: 0.5, MemoryBytes: 256 << 20, Pids: 128}
	create(t, rt, runtime.Spec{ID: id, Layers: h.Layers, Resources: res, Hostname: "conformance"})
	st, err := rt.Stats(ctx, id)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.CPUs != res.CPUs {
		t.Errorf("Stats CPUs %v, want %v", st.CPUs, res.CPUs)
	}
	if st.MemoryLimit != res.MemoryBytes {
		t.Errorf("Stats MemoryLimit %d, want %d", st.MemoryLimit, res.MemoryBytes)
	}
	if st.MemoryUsed <= 0 || st.MemoryUsed > res.MemoryBytes {
		t.Errorf("Stats MemoryUsed %d, want in (0, %d]", st.MemoryUsed, res.MemoryBytes)
	}
	if st.Pids < 1 || st.Pids > res.Pids {
		t.Errorf("Stats Pids %d, want in [1, %d]", st.Pids, res.Pids)
	}
	if err := rt.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	checkNoTraces(t, h, rt, id)
}

// testDestroyAtOnce destroys sandboxes right after Create returns, while
// envd may still be starting.
func testDestroyAtOnce(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	for range 3 {
		id := NewID()
		if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: h.Layers}); err != nil {
			t.Fatalf("Create: %v", err)
		}
		if err := rt.Destroy(ctx, id); err != nil {
			t.Fatalf("Destroy right after Create: %v", err)
		}
		if _, err := rt.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("Inspect after Destroy: %v, want ErrNotFound", err)
		}
		checkNoTraces(t, h, rt, id)
	}
}

func testConcurrent(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	const n = 4
	ids := make([]string, n)
	for i := range ids {
		ids[i] = NewID()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: h.Layers}); err != nil {
				errs <- err
				return
			}
			hctx, cancel := context.WithTimeout(ctx, HealthTimeout)
			defer cancel()
			if err := WaitHealthy(hctx, rt, id); err != nil {
				errs <- err
			}
		}()
	}
	// The same ID created twice at once: exactly one wins.
	dup := NewID()
	var wins, exists int
	var mu sync.Mutex
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := rt.Create(ctx, runtime.Spec{ID: dup, Layers: h.Layers})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, runtime.ErrExists):
				exists++
			default:
				errs <- fmt.Errorf("racing Create: %w", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if wins != 1 || exists != 1 {
		t.Errorf("two racing Creates of one ID: %d succeeded, %d got ErrExists; want 1 and 1", wins, exists)
	}
	all := append(ids, dup)
	errs = make(chan error, len(all))
	for _, id := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rt.Destroy(ctx, id); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, id := range all {
		checkNoTraces(t, h, rt, id)
	}
	infos, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Errorf("List after destroying everything: %+v", infos)
	}
}

func testRestart(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Fatal("conformance: Harness.Reopen is required")
	}
	rt1 := h.New(t)
	ctx := ctxT(t)
	id := NewID()
	labels := map[string]string{"restart": "yes"}
	if _, err := rt1.Create(ctx, runtime.Spec{ID: id, Layers: h.Layers, Labels: labels}); err != nil {
		rt1.Close()
		t.Fatalf("Create: %v", err)
	}
	hctx, cancel := context.WithTimeout(ctx, HealthTimeout)
	defer cancel()
	if err := WaitHealthy(hctx, rt1, id); err != nil {
		t.Error(err)
	}
	if err := rt1.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	rt2 := h.Reopen(t, rt1)
	defer rt2.Close()
	defer rt2.Destroy(context.Background(), id)

	got, err := rt2.Inspect(ctx, id)
	if err != nil {
		t.Fatalf("Inspect after reopen: %v", err)
	}
	if got.State != runtime.StateRunning || !maps.Equal(got.Labels, labels) {
		t.Errorf("Inspect after reopen: %+v, want running with %v", got, labels)
	}
	if _, ok := listed(t, rt2, id); !ok {
		t.Errorf("List after reopen does not contain %s", id)
	}
	if err := Health(ctx, rt2, id, 5*time.Second); err != nil {
		t.Errorf("envd through the reopened runtime: %v", err)
	}
	if err := rt2.Pause(ctx, id); err != nil {
		t.Errorf("Pause after reopen: %v", err)
	}
	if err := rt2.Resume(ctx, id); err != nil {
		t.Errorf("Resume after reopen: %v", err)
	}
	if _, err := rt2.Stats(ctx, id); err != nil {
		t.Errorf("Stats after reopen: %v", err)
	}
	if err := rt2.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy after reopen: %v", err)
	}
	if _, err := rt2.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Inspect after Destroy: %v, want ErrNotFound", err)
	}
	checkNoTraces(t, h, rt2, id)
}

func testNoLeaks(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	// One cycle first so lazily created shared things (parent cgroups,
	// bridges, state dirs) exist before counting.
	cycle := func() {
		id := NewID()
		if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: h.Layers, Resources: runtime.Resources{MemoryBytes: 128 << 20, Pids: 64, CPUs: 1}}); err != nil {
			t.Fatalf("Create: %v", err)
		}
		hctx, cancel := context.WithTimeout(ctx, HealthTimeout)
		defer cancel()
		if err := WaitHealthy(hctx, rt, id); err != nil {
			t.Error(err)
		}
		if err := rt.Destroy(ctx, id); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
	}
	cycle()
	var before map[string]int
	if h.Resources != nil {
		before = h.Resources(t, rt)
	}
	for range h.Cycles {
		cycle()
		if t.Failed() {
			return
		}
	}
	infos, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Errorf("List after %d cycles: %+v", h.Cycles, infos)
	}
	if h.Resources != nil {
		after := h.Resources(t, rt)
		if !maps.Equal(before, after) {
			t.Errorf("host resources before %d create/destroy cycles %v, after %v", h.Cycles, before, after)
		}
	}
}
