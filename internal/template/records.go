package template

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/paddockhq/paddock/internal/store"
)

// Store collections of builds.
const (
	// BuildsCollection holds one JSON BuildRecord per build ID.
	BuildsCollection = "template_builds"
	// CacheCollection maps a step's cache key to {"layer": digest}, the
	// layer the step produced ("" when it changed no file).
	CacheCollection = "template_build_cache"
)

// BuildStatus is the state of a build, as E2B names it.
type BuildStatus string

// Build states.
const (
	BuildWaiting  BuildStatus = "waiting"
	BuildBuilding BuildStatus = "building"
	BuildReady    BuildStatus = "ready"
	BuildError    BuildStatus = "error"
)

// BuildReason explains a failed build: the message and the step that
// failed ("base", "1".."n" for the steps, "finalize").
type BuildReason struct {
	Message string `json:"message"`
	Step    string `json:"step,omitempty"`
}

// Step names of a build's phases besides the numbered steps, as the SDK
// maps them to stack traces.
const (
	PhaseBase     = "base"
	PhaseFinalize = "finalize"
)

// BuildRecord is one requested build of a template.
type BuildRecord struct {
	ID         string `json:"id"`
	TemplateID string `json:"templateID"`
	Team       string `json:"team"`
	// Alias is the name the build was requested under (normalised, without
	// tag); Tags are the tags the build gets when it succeeds.
	Alias    string       `json:"alias"`
	Tags     []string     `json:"tags"`
	Status   BuildStatus  `json:"status"`
	Reason   *BuildReason `json:"reason,omitempty"`
	CPUCount int          `json:"cpuCount"`
	MemoryMB int          `json:"memoryMB"`
	// Spec is what was asked to run (set when the build starts).
	Spec       *Spec     `json:"spec,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Finished reports whether the build ended (ready or error).
func (b *BuildRecord) Finished() bool { return b.Status == BuildReady || b.Status == BuildError }

func (m *Manager) getBuild(ctx context.Context, id string) (BuildRecord, error) {
	raw, err := m.cfg.Store.Get(ctx, BuildsCollection, id)
	if errors.Is(err, store.ErrNotFound) {
		return BuildRecord{}, fmt.Errorf("build %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return BuildRecord{}, fmt.Errorf("get build %s: %w", id, err)
	}
	var b BuildRecord
	if err := json.Unmarshal(raw, &b); err != nil {
		return BuildRecord{}, fmt.Errorf("decode build %s: %w", id, err)
	}
	return b, nil
}

// updateBuild changes a build record atomically.
func (m *Manager) updateBuild(ctx context.Context, id string, fn func(*BuildRecord) error) (BuildRecord, error) {
	var out BuildRecord
	err := store.Update(ctx, m.cfg.Store, BuildsCollection, id, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, fmt.Errorf("build %q: %w", id, ErrNotFound)
		}
		var b BuildRecord
		if err := json.Unmarshal(old, &b); err != nil {
			return nil, fmt.Errorf("decode build %s: %w", id, err)
		}
		if err := fn(&b); err != nil {
			return nil, err
		}
		out = b
		return json.Marshal(b)
	})
	return out, err
}

func (m *Manager) listBuilds(ctx context.Context) ([]BuildRecord, error) {
	recs, err := m.cfg.Store.List(ctx, BuildsCollection)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	out := make([]BuildRecord, 0, len(recs))
	for _, r := range recs {
		var b BuildRecord
		if err := json.Unmarshal(r.Value, &b); err != nil {
			m.log.Warn("undecodable build record", "build", r.Key, "err", err)
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// LogEntry is one line of a build's log.
type LogEntry struct {
	Timestamp time.Time `json:"timestamp"`
	Level     string    `json:"level"`
	Message   string    `json:"message"`
	Step      string    `json:"step,omitempty"`
}

// Log levels of build logs.
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

var levelRank = map[string]int{LevelDebug: 0, LevelInfo: 1, LevelWarn: 2, LevelError: 3}

// maxLogEntries caps one build's log; later lines are dropped (a note
// says so).
const maxLogEntries = 100000

// buildLogs keeps the logs of builds: appended to DataDir/builds/<id>.log
// (JSON lines) and, while a build runs, in memory.
type buildLogs struct {
	dir string
	mu  sync.Mutex
	m   map[string]*buildLog
}

type buildLog struct {
	entries []LogEntry
	f       *os.File
	dropped bool
}

func (l *buildLogs) path(id string) string { return filepath.Join(l.dir, id+".log") }

// open starts the in-memory log of a running build (entries already in the
// file are loaded).
func (l *buildLogs) open(id string) error {
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return fmt.Errorf("build log: %w", err)
	}
	prev, _ := l.readFile(id)
	f, err := os.OpenFile(l.path(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("build log: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*buildLog{}
	}
	l.m[id] = &buildLog{entries: prev, f: f}
	return nil
}

// close ends the in-memory log of a build; reads then come from the file.
func (l *buildLogs) close(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if bl := l.m[id]; bl != nil {
		bl.f.Close()
		delete(l.m, id)
	}
}

// add appends an entry to a build's log (a no-op for a build not open).
func (l *buildLogs) add(id string, e LogEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bl := l.m[id]
	if bl == nil {
		return
	}
	if len(bl.entries) >= maxLogEntries {
		if bl.dropped {
			return
		}
		bl.dropped = true
		e = LogEntry{Timestamp: e.Timestamp, Level: LevelWarn, Message: fmt.Sprintf("log limit of %d lines reached; further output is dropped", maxLogEntries), Step: e.Step}
	}
	bl.entries = append(bl.entries, e)
	if b, err := json.Marshal(e); err == nil {
		_, _ = bl.f.Write(append(b, '\n'))
	}
}

func (l *buildLogs) readFile(id string) ([]LogEntry, error) {
	f, err := os.Open(l.path(id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LogEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e LogEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// page returns up to limit entries at or above level from offset on (the
// offset counts entries at or above level).
func (l *buildLogs) page(id string, offset, limit int, level string) []LogEntry {
	var all []LogEntry
	l.mu.Lock()
	if bl := l.m[id]; bl != nil {
		all = bl.entries
	}
	l.mu.Unlock()
	if all == nil {
		all, _ = l.readFile(id)
	}
	return pageEntries(all, offset, limit, level)
}

// pageEntries filters entries by minimum level and returns the page
// [offset, offset+limit); never nil.
func pageEntries(all []LogEntry, offset, limit int, level string) []LogEntry {
	min, filter := levelRank[level]
	out := []LogEntry{}
	if offset < 0 {
		offset = 0
	}
	i := 0
	for _, e := range all {
		if filter && levelRank[e.Level] < min {
			continue
		}
		if i >= offset {
			if len(out) >= limit {
				break
			}
			out = append(out, e)
		}
		i++
	}
	return out
}

// remove deletes a finished build's log file.
func (l *buildLogs) remove(id string) { _ = os.Remove(l.path(id)) }
