package sandbox

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paddockhq/paddock/internal/store"
)

// ListFilter selects sandboxes for List.
type ListFilter struct {
	Team string
	// Metadata must all match (AND).
	Metadata map[string]string
	// States to include; empty means running and paused.
	States []State
	// Template matches the template ID or alias; empty matches all.
	Template     string
	StartedAfter time.Time
	// Ascending orders oldest first; default newest first.
	Ascending bool
	// Limit caps the page (1..100; 0 means 100).
	Limit int
	// PageToken continues a previous listing.
	PageToken string
}

// Page is one page of a listing.
type Page struct {
	Sandboxes []Record
	// NextToken is empty on the last page.
	NextToken string
	// TotalRunning counts running sandboxes matching the filter.
	TotalRunning int
}

// MaxPageSize is the largest page List returns.
const MaxPageSize = 100

// List returns the team's sandboxes matching f, one page at a time.
func (s *Service) List(ctx context.Context, f ListFilter) (Page, error) {
	if f.Limit < 0 || f.Limit > MaxPageSize {
		return Page{}, fmt.Errorf("%w: limit must be between 1 and %d", ErrInvalid, MaxPageSize)
	}
	if f.Limit == 0 {
		f.Limit = MaxPageSize
	}
	var after *cursor
	if f.PageToken != "" {
		c, err := decodeCursor(f.PageToken)
		if err != nil {
			return Page{}, fmt.Errorf("%w: bad nextToken", ErrInvalid)
		}
		after = &c
	}
	states := map[State]bool{}
	for _, st := range f.States {
		states[st] = true
	}
	if len(states) == 0 {
		states[StateRunning], states[StatePaused] = true, true
	}
	recs, err := s.cfg.Store.List(ctx, Collection)
	if err != nil {
		return Page{}, fmt.Errorf("list sandboxes: %w", err)
	}
	var match []*Record
	page := Page{}
	for _, r := range s.decoded.decode(recs) {
		if r.Team != f.Team || !states[r.State] {
			continue
		}
		if f.Template != "" && r.TemplateID != f.Template && r.Alias != f.Template {
			continue
		}
		if !f.StartedAfter.IsZero() && !r.StartedAt.After(f.StartedAfter) {
			continue
		}
		if !metadataMatches(r.Metadata, f.Metadata) {
			continue
		}
		if r.State == StateRunning {
			page.TotalRunning++
		}
		match = append(match, r)
	}
	less := func(a, b *Record) bool { // newest first, then by ID
		if !a.StartedAt.Equal(b.StartedAt) {
			return a.StartedAt.After(b.StartedAt)
		}
		return a.ID > b.ID
	}
	if f.Ascending {
		desc := less
		less = func(a, b *Record) bool { return desc(b, a) }
	}
	sort.Slice(match, func(i, j int) bool { return less(match[i], match[j]) })
	start := 0
	if after != nil {
		pivot := &Record{ID: after.ID, StartedAt: after.StartedAt}
		start = sort.Search(len(match), func(i int) bool { return less(pivot, match[i]) })
	}
	end := start + f.Limit
	if end < len(match) {
		last := match[end-1]
		page.NextToken = encodeCursor(cursor{StartedAt: last.StartedAt, ID: last.ID})
	} else {
		end = len(match)
	}
	page.Sandboxes = make([]Record, 0, end-start)
	for _, r := range match[start:end] {
		page.Sandboxes = append(page.Sandboxes, *r)
	}
	return page, nil
}

func metadataMatches(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

type cursor struct {
	StartedAt time.Time
	ID        string
}

func encodeCursor(c cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.StartedAt.UTC().Format(time.RFC3339Nano) + "__" + c.ID))
}

func decodeCursor(s string) (cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, err
	}
	ts, id, ok := strings.Cut(string(raw), "__")
	if !ok || id == "" {
		return cursor{}, fmt.Errorf("malformed cursor")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return cursor{}, err
	}
	return cursor{StartedAt: t, ID: id}, nil
}

// recordCache keeps the records List decoded last, by ID with their raw
// bytes: a listing decodes only the records that changed since (JSON
// decoding dominated GET /v2/sandboxes with hundreds of sandboxes). The
// store stays the truth: a record is reused only when its bytes are equal.
type recordCache struct {
	mu sync.Mutex
	m  map[string]*cachedRecord
}

type cachedRecord struct {
	raw []byte
	rec *Record
}

// decode returns the records of recs, skipping undecodable ones. The
// records (and their maps) are shared with the cache and other callers:
// callers must not modify them.
func (c *recordCache) decode(recs []store.Record) []*Record {
	c.mu.Lock()
	old := c.m
	c.mu.Unlock()
	var next map[string]*cachedRecord // built only when something changed
	changed := len(recs) != len(old)
	out := make([]*Record, 0, len(recs))
	for i, kv := range recs {
		e, ok := old[kv.Key]
		if !ok || !bytes.Equal(e.raw, kv.Value) {
			var r Record
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				changed = true
				continue
			}
			e = &cachedRecord{raw: kv.Value, rec: &r}
			changed = true
		}
		if changed && next == nil {
			next = make(map[string]*cachedRecord, len(recs))
			for _, prev := range recs[:i] {
				if pe, ok := old[prev.Key]; ok && bytes.Equal(pe.raw, prev.Value) {
					next[prev.Key] = pe
				}
			}
		}
		if next != nil {
			next[kv.Key] = e
		}
		out = append(out, e.rec)
	}
	if changed {
		if next == nil { // only undecodable records changed
			next = make(map[string]*cachedRecord, len(recs))
			for _, kv := range recs {
				if e, ok := old[kv.Key]; ok && bytes.Equal(e.raw, kv.Value) {
					next[kv.Key] = e
				}
			}
		}
		c.mu.Lock()
		c.m = next
		c.mu.Unlock()
	}
	return out
}
