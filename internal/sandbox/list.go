package sandbox

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
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
	// Sandboxes are the page's records. They are shared with the service's
	// cache and with other callers, and never modified once listed: a
	// changed sandbox is listed as a new *Record. Callers must not modify
	// them (copy a Record to change it), and may key what they derive from
	// one by its pointer.
	Sandboxes []*Record
	// NextToken is empty on the last page.
	NextToken string
	// TotalRunning counts running sandboxes matching the filter.
	TotalRunning int
}

// MaxPageSize is the largest page List returns.
const MaxPageSize = 100

// List returns the team's sandboxes matching f, one page at a time. While
// the store's revision of the collection says no sandbox record changed
// since the last listing, it reuses that listing without reading the
// records.
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
	wantRunning, wantPaused, others := len(f.States) == 0, len(f.States) == 0, false
	for _, st := range f.States {
		switch st {
		case StateRunning:
			wantRunning = true
		case StatePaused:
			wantPaused = true
		default:
			others = true
		}
	}
	wanted := func(st State) bool {
		switch st {
		case StateRunning:
			return wantRunning
		case StatePaused:
			return wantPaused
		}
		return others && slices.Contains(f.States, st)
	}
	l, err := s.listed(ctx)
	if err != nil {
		return Page{}, err
	}
	// The team's records are newest first; filtering keeps that order, so
	// the page is the run of matches past the cursor, with no sort per
	// request.
	all := l.byTeam[f.Team]
	page := Page{Sandboxes: make([]*Record, 0, min(f.Limit, len(all)))}
	more := false
	for i := range all {
		e := &all[i]
		if f.Ascending {
			e = &all[len(all)-1-i]
		}
		if !wanted(e.state) {
			continue
		}
		r := e.rec
		if f.Template != "" && r.TemplateID != f.Template && r.Alias != f.Template {
			continue
		}
		if !f.StartedAfter.IsZero() && !r.StartedAt.After(f.StartedAfter) {
			continue
		}
		if !metadataMatches(r.Metadata, f.Metadata) {
			continue
		}
		if e.state == StateRunning {
			page.TotalRunning++
		}
		if after != nil && !after.before(r, f.Ascending) {
			continue // on an earlier page
		}
		if len(page.Sandboxes) == f.Limit {
			more = true
			continue
		}
		page.Sandboxes = append(page.Sandboxes, r)
	}
	if more {
		last := page.Sandboxes[len(page.Sandboxes)-1]
		page.NextToken = encodeCursor(cursor{StartedAt: last.StartedAt, ID: last.ID})
	}
	return page, nil
}

// newerFirst orders records newest first (StartedAt), then by ID
// descending: List's default order, whose exact reverse is its ascending
// order.
func newerFirst(a, b *Record) int {
	if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
		return c
	}
	return strings.Compare(b.ID, a.ID)
}

// listing is every decodable sandbox record at one time, by team, newest
// first. It is shared (with the cache and other callers) and never modified.
type listing struct {
	byTeam map[string][]listEntry
}

// listEntry is one record of a listing with its state beside it: List
// filters on the state first, through contiguous entries instead of
// records scattered over the heap.
type listEntry struct {
	rec   *Record
	state State
}

func newListing(recs []*Record) *listing {
	slices.SortFunc(recs, newerFirst)
	l := &listing{byTeam: make(map[string][]listEntry)}
	for _, r := range recs {
		l.byTeam[r.Team] = append(l.byTeam[r.Team], listEntry{rec: r, state: r.State})
	}
	return l
}

// listed returns the sandbox records. It reads them from the store only
// when their collection's revision moved since the last call, so it follows
// writes of every replica sharing the store.
func (s *Service) listed(ctx context.Context) (*listing, error) {
	// Read before listing: the listing is then at least as recent as rev,
	// so keeping it under rev can only cost a listing, never hide a write.
	rev, err := s.cfg.Store.Revision(ctx, Collection)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	if l, ok := s.decoded.at(rev); ok {
		return l, nil
	}
	kvs, err := s.cfg.Store.List(ctx, Collection)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	l := newListing(s.decoded.decode(kvs))
	s.decoded.keep(rev, l)
	return l, nil
}

func metadataMatches(have, want map[string]string) bool {
	if len(want) == 0 { // the common case: ranging over nothing is not free
		return true
	}
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

// before reports whether the cursor's record comes before r in the order
// of the listing (ascending or not), that is whether r belongs to a later
// page than the cursor's.
func (c *cursor) before(r *Record, ascending bool) bool {
	o := c.StartedAt.Compare(r.StartedAt)
	if o == 0 {
		o = strings.Compare(c.ID, r.ID)
	}
	if ascending {
		return o < 0
	}
	return o > 0
}

func encodeCursor(c cursor) string {
	var buf, out [128]byte // on the stack for usual IDs
	raw := c.StartedAt.UTC().AppendFormat(buf[:0], time.RFC3339Nano)
	raw = append(append(raw, "__"...), c.ID...)
	n := base64.RawURLEncoding.EncodedLen(len(raw))
	dst := out[:0]
	if n > len(out) {
		dst = make([]byte, 0, n)
	}
	dst = dst[:n]
	base64.RawURLEncoding.Encode(dst, raw)
	return string(dst)
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
// It also keeps the last sorted listing with the collection's revision it
// was read at, reused whole while the revision stays the same.
type recordCache struct {
	mu sync.Mutex
	m  map[string]*cachedRecord

	last   *listing // the last listing, when hasRev
	rev    uint64   // the collection's revision read before that listing
	hasRev bool
}

// at returns the listing kept for revision rev, if any.
func (c *recordCache) at(rev uint64) (*listing, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hasRev || c.rev != rev {
		return nil, false
	}
	return c.last, true
}

// keep remembers a listing read after the collection's revision was rev.
func (c *recordCache) keep(rev uint64, l *listing) {
	c.mu.Lock()
	c.last, c.rev, c.hasRev = l, rev, true
	c.mu.Unlock()
}

type cachedRecord struct {
	raw []byte
	rec *Record
}

// internState returns the constant equal to st, if any: comparing strings
// that share their bytes is one pointer comparison, and List compares
// every record's state on every request.
func internState(st State) State {
	switch st {
	case StateRunning:
		return StateRunning
	case StatePaused:
		return StatePaused
	case StateCreating:
		return StateCreating
	case StateKilling:
		return StateKilling
	}
	return st
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
			r.State = internState(r.State)
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
