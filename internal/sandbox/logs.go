package sandbox

import (
	"context"
	"sync"
	"time"
)

// LogLine is one line of a sandbox's log.
type LogLine struct {
	Time    time.Time
	Level   string
	Message string
	Fields  map[string]string
}

// maxLogLines bounds the lifecycle log kept per sandbox.
const maxLogLines = 1000

// eventLog keeps recent lifecycle events per sandbox in memory.
type eventLog struct {
	mu    sync.Mutex
	lines map[string][]LogLine
}

func (l *eventLog) add(id string, line LogLine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines == nil {
		l.lines = map[string][]LogLine{}
	}
	lines := append(l.lines[id], line)
	if len(lines) > maxLogLines {
		lines = lines[len(lines)-maxLogLines:]
	}
	l.lines[id] = lines
}

func (l *eventLog) forget(id string) {
	l.mu.Lock()
	delete(l.lines, id)
	l.mu.Unlock()
}

func (l *eventLog) since(id string, start time.Time, limit int) []LogLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []LogLine{}
	for _, ln := range l.lines[id] {
		if !start.IsZero() && ln.Time.Before(start) {
			continue
		}
		out = append(out, ln)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out
}

// event records a lifecycle event of a sandbox in its log and the server log.
func (s *Service) event(id, msg string, kv ...string) {
	fields := map[string]string{"sandboxID": id}
	for i := 0; i+1 < len(kv); i += 2 {
		fields[kv[i]] = kv[i+1]
	}
	s.events.add(id, LogLine{Time: s.now().UTC(), Level: "info", Message: msg, Fields: fields})
}

// Logs returns a sandbox's log lines from start (zero: from the beginning),
// at most limit (0: all).
func (s *Service) Logs(ctx context.Context, team, id string, start time.Time, limit int) ([]LogLine, error) {
	if _, err := s.loadForTeam(ctx, team, id); err != nil {
		return nil, err
	}
	return s.events.since(id, start, limit), nil
}
