package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/auth"
	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/sandbox"
	"github.com/paddockhq/paddock/internal/store"
	"github.com/paddockhq/paddock/internal/store/bolt"
)

// noRuntime satisfies runtime.Runtime for handlers that never reach the
// runtime (listing): any call panics on the nil embedded interface.
type noRuntime struct{ runtime.Runtime }

// noTemplates satisfies sandbox.Templates the same way.
type noTemplates struct{ sandbox.Templates }

// listFixture is the Platform API on a real bolt store holding n sandbox
// records of one team, with a valid API key for that team.
type listFixture struct {
	handler http.Handler
	svc     *sandbox.Service
	st      store.Store
	key     string
	team    string
}

func newListFixture(tb testing.TB, n int) *listFixture {
	tb.Helper()
	st, err := bolt.Open(filepath.Join(tb.TempDir(), "db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	svc, err := sandbox.New(sandbox.Config{
		Runtime: noRuntime{}, Store: st, Templates: noTemplates{},
		Secret: []byte("0123456789abcdef0123"), Node: "n1",
		NewID: func() string { return "unused" },
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	keys := auth.NewKeys(st)
	key, _, err := keys.Create(ctx, "bench", "bench", nil)
	if err != nil {
		tb.Fatal(err)
	}
	f := &listFixture{svc: svc, st: st, key: key, team: "bench"}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ops := make([]store.Op, 0, n)
	for i := range n {
		ops = append(ops, f.recordOp(tb, i, start.Add(time.Duration(i)*time.Second), sandbox.StateRunning))
	}
	if err := st.Apply(ctx, ops...); err != nil {
		tb.Fatal(err)
	}
	f.handler = New(Config{Sandboxes: svc, Keys: keys, Limiter: auth.NewLimiter(auth.LimiterConfig{})})
	return f
}

// recordOp writes sandbox i as the service would.
func (f *listFixture) recordOp(tb testing.TB, i int, started time.Time, state sandbox.State) store.Op {
	tb.Helper()
	rec := sandbox.Record{
		ID: fmt.Sprintf("i%019d", i), Team: f.team, TemplateID: "tplbase", Alias: "base",
		State: state, Node: "n1", CreatedAt: started, StartedAt: started, EndAt: started.Add(time.Hour),
		Metadata: map[string]string{"bench": "list", "n": fmt.Sprint(i)},
		CPUs:     2, MemoryMB: 512, DiskMB: 1024, EnvdVersion: "0.2.0", Internet: true,
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		tb.Fatal(err)
	}
	return store.Op{Collection: sandbox.Collection, Key: rec.ID, Value: raw}
}

func (f *listFixture) get(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Header.Set("X-API-Key", f.key)
	return r
}

// discardWriter is a ResponseWriter that keeps nothing but the status and
// the byte count, so the benchmark measures the handler, not a recorder.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkListSandboxes is GET /v2/sandboxes (a page of 100 out of 500
// running sandboxes) through the whole handler: auth, query check, CORS,
// listing and encoding.
func BenchmarkListSandboxes(b *testing.B) {
	f := newListFixture(b, 500)
	req := f.get("/v2/sandboxes")
	w := &discardWriter{h: http.Header{}}
	f.handler.ServeHTTP(w, req)
	if w.status != http.StatusOK || w.n < 20000 {
		b.Fatalf("status %d, %d bytes", w.status, w.n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		f.handler.ServeHTTP(w, req)
	}
}

// BenchmarkListSandboxesParallel is the same with concurrent requests, as
// the load test's keep-alive connections make them.
func BenchmarkListSandboxesParallel(b *testing.B) {
	f := newListFixture(b, 500)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := f.get("/v2/sandboxes")
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			f.handler.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
}
