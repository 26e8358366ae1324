package local_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/runtime/conformance"
)

// phases collects the durations the runtime logs at debug level for each
// create ("sandbox created": overlay, network, config, container).
type phases struct {
	mu  sync.Mutex
	sum map[string]time.Duration
	n   int
}

func (p *phases) Enabled(context.Context, slog.Level) bool { return true }
func (p *phases) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *phases) WithGroup(string) slog.Handler            { return p }
func (p *phases) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "sandbox created" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	r.Attrs(func(a slog.Attr) bool {
		if a.Value.Kind() == slog.KindDuration {
			p.sum[a.Key] += a.Value.Duration()
		}
		return true
	})
	return nil
}

// BenchmarkCreateDestroy measures create → envd /health OK → destroy and
// reports each phase in ms/op: overlay, network, config (libcontainer
// config incl. seccomp profile), container (libcontainer Create+Run),
// ready (Create returned → first /health 204), destroy.
func BenchmarkCreateDestroy(b *testing.B) {
	b.Run("NoNetwork", func(b *testing.B) { benchCreateDestroy(b, newDriver(nil)) })
	b.Run("Network", func(b *testing.B) { benchCreateDestroy(b, newNetDriver(b)) })
}

func benchCreateDestroy(b *testing.B, d *driver) {
	ph := &phases{sum: map[string]time.Duration{}}
	rt := d.open(b, newRoot(b), slog.New(ph))
	defer rt.Close()
	ctx := context.Background()
	spec := runtime.Spec{Layers: layers, Resources: runtime.Resources{CPUs: 1, MemoryBytes: 512 << 20, Pids: 512}}
	var ready, destroy time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		spec.ID = conformance.NewID()
		if _, err := rt.Create(ctx, spec); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		hctx, cancel := context.WithTimeout(ctx, conformance.HealthTimeout)
		err := conformance.WaitHealthy(hctx, rt, spec.ID)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := rt.Destroy(ctx, spec.ID); err != nil {
			b.Fatal(err)
		}
		ready += t1.Sub(t0)
		destroy += time.Since(t1)
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
	ph.mu.Lock()
	defer ph.mu.Unlock()
	for _, k := range []string{"overlay", "network", "config", "container"} {
		b.ReportMetric(ms(ph.sum[k]), k+"-ms/op")
	}
	b.ReportMetric(ms(ready), "ready-ms/op")
	b.ReportMetric(ms(destroy), "destroy-ms/op")
}

// BenchmarkDial measures Dial to envd plus one /health round trip on a
// fresh connection (what the proxy pays per new connection).
func BenchmarkDial(b *testing.B) {
	b.Run("NoNetwork", func(b *testing.B) { benchDial(b, newDriver(nil)) })
	b.Run("Network", func(b *testing.B) { benchDial(b, newNetDriver(b)) })
}

func benchDial(b *testing.B, d *driver) {
	rt := d.open(b, newRoot(b), nil)
	defer rt.Close()
	ctx := context.Background()
	id := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: layers}); err != nil {
		b.Fatal(err)
	}
	defer rt.Destroy(ctx, id)
	hctx, cancel := context.WithTimeout(ctx, conformance.HealthTimeout)
	defer cancel()
	if err := conformance.WaitHealthy(hctx, rt, id); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := rt.Dial(ctx, id, runtime.EnvdPort)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkPauseResume measures one Pause plus one Resume (cgroup freezer).
func BenchmarkPauseResume(b *testing.B) {
	d := newDriver(nil)
	rt := d.open(b, newRoot(b), nil)
	defer rt.Close()
	ctx := context.Background()
	id := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: layers}); err != nil {
		b.Fatal(err)
	}
	defer rt.Destroy(ctx, id)
	hctx, cancel := context.WithTimeout(ctx, conformance.HealthTimeout)
	defer cancel()
	if err := conformance.WaitHealthy(hctx, rt, id); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := rt.Pause(ctx, id); err != nil {
			b.Fatal(err)
		}
		if err := rt.Resume(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckpointRestore measures one memory Checkpoint (the sandbox is
// written to disk and its processes end) plus one Restore until envd
// answers /health again, for an idle sandbox on the network manager.
func BenchmarkCheckpointRestore(b *testing.B) {
	d := newNetDriver(b)
	rt := d.open(b, newRoot(b), nil)
	defer rt.Close()
	ctx := context.Background()
	id := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: layers}); err != nil {
		b.Fatal(err)
	}
	defer rt.Destroy(ctx, id)
	hctx, cancel := context.WithTimeout(ctx, conformance.HealthTimeout)
	defer cancel()
	if err := conformance.WaitHealthy(hctx, rt, id); err != nil {
		b.Fatal(err)
	}
	var dump, restore time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, conformance.HealthTimeout)
		err := conformance.WaitHealthy(wctx, rt, id)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		dump += t1.Sub(t0)
		restore += time.Since(t1)
	}
	b.ReportMetric(float64(dump.Milliseconds())/float64(b.N), "dump-ms/op")
	b.ReportMetric(float64(restore.Milliseconds())/float64(b.N), "restore-ms/op")
}
