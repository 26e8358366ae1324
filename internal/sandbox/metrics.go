package sandbox

import (
	"context"
	"sync"
	"time"
)

// Metric is one resource sample of a sandbox.
type Metric struct {
	Time       time.Time
	CPUCount   int
	CPUUsedPct float64
	MemUsed    int64
	MemTotal   int64
	MemCache   int64
	DiskUsed   int64
	DiskTotal  int64
}

// sampleEvery is the metrics sampling period; samples are kept for sampleKeep.
const (
	sampleEvery = 5 * time.Second
	sampleKeep  = 15 * time.Minute
)

// sampler keeps recent metric samples per sandbox and the previous CPU
// counter to turn cumulative CPU time into a percentage.
type sampler struct {
	mu      sync.Mutex
	samples map[string][]Metric
	lastCPU map[string]cpuMark
}

type cpuMark struct {
	at    time.Time
	usage time.Duration
}

func newSampler() *sampler {
	return &sampler{samples: map[string][]Metric{}, lastCPU: map[string]cpuMark{}}
}

func (m *sampler) forget(id string) {
	m.mu.Lock()
	delete(m.samples, id)
	delete(m.lastCPU, id)
	m.mu.Unlock()
}

func (s *Service) sampleLoop() {
	defer s.wg.Done()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		ids := make([]string, 0, len(s.deadline))
		for id := range s.deadline {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		// Spread over half the period, so that hundreds of sandboxes do
		// not make a burst of work every sampleEvery.
		gap := sampleEvery / 2 / time.Duration(max(len(ids), 1))
		for i, id := range ids {
			if i > 0 {
				select {
				case <-s.stop:
					return
				case <-time.After(gap):
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), sampleEvery)
			if r, err := s.load(ctx, id); err == nil && r.State == StateRunning {
				if mt, err := s.sample(ctx, r); err == nil {
					s.metrics.add(id, mt)
				}
			}
			cancel()
		}
	}
}

func (m *sampler) add(id string, mt Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := append(m.samples[id], mt)
	cut := 0
	for cut < len(list) && mt.Time.Sub(list[cut].Time) > sampleKeep {
		cut++
	}
	m.samples[id] = list[cut:]
}

// sample reads one metric sample from the runtime.
func (s *Service) sample(ctx context.Context, r Record) (Metric, error) {
	st, err := s.cfg.Runtime.Stats(ctx, r.ID)
	if err != nil {
		return Metric{}, err
	}
	now := s.now().UTC()
	mt := Metric{
		Time:      now,
		CPUCount:  r.CPUs,
		MemUsed:   st.MemoryUsed,
		MemCache:  st.MemoryCache,
		MemTotal:  st.MemoryLimit,
		DiskUsed:  st.DiskUsed,
		DiskTotal: int64(r.DiskMB) << 20,
	}
	if mt.MemTotal == 0 {
		mt.MemTotal = int64(r.MemoryMB) << 20
	}
	s.metrics.mu.Lock()
	prev, ok := s.metrics.lastCPU[r.ID]
	s.metrics.lastCPU[r.ID] = cpuMark{at: now, usage: st.CPUUsage}
	s.metrics.mu.Unlock()
	if ok && now.After(prev.at) && r.CPUs > 0 {
		pct := 100 * float64(st.CPUUsage-prev.usage) / float64(now.Sub(prev.at)) / float64(r.CPUs)
		if pct < 0 {
			pct = 0
		}
		if pct > 100 {
			pct = 100
		}
		mt.CPUUsedPct = pct
	}
	return mt, nil
}

// Metrics returns samples of a sandbox between start and end (zero means
// unbounded), oldest first, including a fresh sample when end is open or
// in the future.
func (s *Service) Metrics(ctx context.Context, team, id string, start, end time.Time) ([]Metric, error) {
	r, err := s.loadForTeam(ctx, team, id)
	if err != nil {
		return nil, err
	}
	if r.State == StateRunning && (end.IsZero() || !end.Before(s.now())) {
		if mt, err := s.sample(ctx, r); err == nil {
			s.metrics.add(id, mt)
		}
	}
	s.metrics.mu.Lock()
	defer s.metrics.mu.Unlock()
	out := []Metric{}
	for _, mt := range s.metrics.samples[id] {
		if (!start.IsZero() && mt.Time.Before(start)) || (!end.IsZero() && mt.Time.After(end)) {
			continue
		}
		out = append(out, mt)
	}
	return out, nil
}
