package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/store"
	"github.com/paddockhq/paddock/internal/store/bolt"
	"github.com/paddockhq/paddock/internal/store/redis"
	"github.com/paddockhq/paddock/internal/store/redis/redistest"
)

func TestRecordCacheFollowsTheStore(t *testing.T) {
	enc := func(r Record) []byte {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var c recordCache
	a := Record{ID: "ia", Team: "t", State: StateRunning, Metadata: map[string]string{"k": "1"}}
	b := Record{ID: "ib", Team: "t", State: StateRunning}
	recs := []store.Record{{Key: "ia", Value: enc(a)}, {Key: "ib", Value: enc(b)}, {Key: "ibad", Value: []byte("{")}}
	got := c.decode(recs)
	if len(got) != 2 || got[0].ID != "ia" || got[0].Metadata["k"] != "1" || got[1].ID != "ib" {
		t.Fatalf("first decode: %+v", got)
	}
	// A changed record is decoded again, an unchanged one reused, a
	// deleted one dropped from the cache.
	a.Metadata = map[string]string{"k": "2"}
	got = c.decode([]store.Record{{Key: "ia", Value: enc(a)}})
	if len(got) != 1 || got[0].Metadata["k"] != "2" {
		t.Fatalf("after change: %+v", got)
	}
	if _, ok := c.m["ib"]; ok || len(c.m) != 1 {
		t.Fatalf("cache keeps deleted records: %v", c.m)
	}
	first := c.m["ia"].rec.Metadata
	got = c.decode([]store.Record{{Key: "ia", Value: enc(a)}})
	if len(got) != 1 || got[0].Metadata["k"] != "2" {
		t.Fatalf("unchanged: %+v", got)
	}
	got[0].Metadata["probe"] = "x" // shares the cached map: proves reuse
	if first["probe"] != "x" {
		t.Fatal("unchanged record was decoded again instead of reused")
	}
	// An undecodable record joining keeps the others cached.
	again := c.decode([]store.Record{{Key: "ia", Value: enc(a)}, {Key: "ibad", Value: []byte("{")}})
	if len(again) != 1 || again[0] != got[0] || len(c.m) != 1 {
		t.Fatalf("with a bad record: %+v, cache %v", again, c.m)
	}
}

// countingStore counts the listings of the sandbox collection it serves,
// and has revisions only when its driver has.
type countingStore struct {
	store.Store
	lists atomic.Int64
}

func (c *countingStore) List(ctx context.Context, collection string) ([]store.Record, error) {
	if collection == Collection {
		c.lists.Add(1)
	}
	return c.Store.List(ctx, collection)
}

// newListService builds a Service on st, started (recovery, loops) when
// rt is not nil.
func newListService(t *testing.T, st store.Store, rt *fakeRuntime, node string) *Service {
	t.Helper()
	cfg := Config{
		Runtime: rt, Store: st, Templates: fakeTemplates{}, Secret: []byte("0123456789abcdef0123"),
		Node: node, MaxTimeout: time.Hour,
		NewID: func() string { return "i" + strconv.FormatInt(3000000+idSeq.Add(1), 10) },
	}
	if rt == nil {
		cfg.Runtime = newFakeRuntime()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rt != nil {
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Close)
	return s
}

func putRecord(t *testing.T, st store.Store, r Record) {
	t.Helper()
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(context.Background(), st, Collection, r.ID, raw); err != nil {
		t.Fatal(err)
	}
}

func listIDs(t *testing.T, s *Service, f ListFilter) (ids []string, p Page) {
	t.Helper()
	p, err := s.List(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Sandboxes {
		ids = append(ids, r.ID)
	}
	return ids, p
}

func TestListReadsTheStoreOnlyAfterAWrite(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	counted := &countingStore{Store: st}
	s := newListService(t, counted, nil, "n1")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		putRecord(t, st, Record{ID: fmt.Sprintf("i%d", i), Team: "t", State: StateRunning, StartedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	f := ListFilter{Team: "t"}
	first, p1 := listIDs(t, s, f)
	for range 5 {
		if again, _ := listIDs(t, s, f); fmt.Sprint(again) != fmt.Sprint(first) {
			t.Fatalf("listing changed without a write: %v, then %v", first, again)
		}
	}
	if n := counted.lists.Load(); n != 1 {
		t.Fatalf("6 listings without a write read the records %d times, want once", n)
	}
	// A write to the collection (here another team's record) is a new
	// revision: the next listing reads again; records that did not change
	// are the same *Record, a changed one is a new one.
	putRecord(t, st, Record{ID: "i1", Team: "t", State: StatePaused, StartedAt: t0.Add(time.Second)})
	_, p2 := listIDs(t, s, f)
	if n := counted.lists.Load(); n != 2 {
		t.Fatalf("listing after a write read the records %d times in all, want 2", n)
	}
	if len(p2.Sandboxes) != 3 || p2.Sandboxes[1].State != StatePaused {
		t.Fatalf("after the write: %+v", p2.Sandboxes)
	}
	if p2.Sandboxes[0] != p1.Sandboxes[0] || p2.Sandboxes[2] != p1.Sandboxes[2] || p2.Sandboxes[1] == p1.Sandboxes[1] {
		t.Fatal("unchanged records must keep their *Record and the changed one get a new one")
	}
	if p1.Sandboxes[1].State != StateRunning {
		t.Fatal("a listed record was modified")
	}
}

func TestListSeesWritesOfAnotherService(t *testing.T) {
	// Two services on one store handle (bolt: one process), and two
	// replicas on two handles of one Redis, each with its own runtime.
	t.Run("bolt", func(t *testing.T) {
		st, err := bolt.Open(filepath.Join(t.TempDir(), "db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testListSeesWritesOfAnotherService(t, st, st)
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		open := func() store.Store {
			st, err := redis.Open(context.Background(), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		testListSeesWritesOfAnotherService(t, open(), open())
	})
}

func testListSeesWritesOfAnotherService(t *testing.T, st1, st2 store.Store) {
	ctx := context.Background()
	s1 := newListService(t, st1, newFakeRuntime(), "n1")
	s2 := newListService(t, st2, newFakeRuntime(), "n2")
	f := ListFilter{Team: "t"}
	if ids, _ := listIDs(t, s2, f); len(ids) != 0 {
		t.Fatalf("empty store lists %v", ids)
	}
	a, err := s1.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ids, p := listIDs(t, s2, f); fmt.Sprint(ids) != fmt.Sprint([]string{a.ID}) || p.TotalRunning != 1 {
		t.Fatalf("s2 after s1's create: %v (%d running)", ids, p.TotalRunning)
	}
	b, err := s2.Create(ctx, CreateRequest{Team: "t", Template: "base", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := listIDs(t, s1, f)
	if len(ids) != 2 {
		t.Fatalf("s1 after s2's create: %v", ids)
	}
	listIDs(t, s2, f) // s2's listing is current too
	if _, err := s1.Pause(ctx, "t", a.ID, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	_, p := listIDs(t, s2, f)
	if p.TotalRunning != 1 || len(p.Sandboxes) != 2 {
		t.Fatalf("s2 after s1's pause: %d running of %d", p.TotalRunning, len(p.Sandboxes))
	}
	for _, r := range p.Sandboxes {
		if r.ID == a.ID && r.State != StatePaused {
			t.Fatalf("s2 lists %s as %s after s1 paused it", r.ID, r.State)
		}
	}
	if err := s2.Kill(ctx, "t", b.ID); err != nil {
		t.Fatal(err)
	}
	if ids, _ := listIDs(t, s1, f); fmt.Sprint(ids) != fmt.Sprint([]string{a.ID}) {
		t.Fatalf("s1 after s2's kill: %v", ids)
	}
}

func TestListOrderAndPagesFromTheCache(t *testing.T) {
	// Pages in both orders, ties on StartedAt broken by ID, cursors of
	// sandboxes that are gone: the same results as sorting every time.
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := newListService(t, st, nil, "n1")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var want []*Record // newest first, then by ID descending
	for i := range 23 {
		r := &Record{ID: fmt.Sprintf("i%02d", i), Team: "t", State: StateRunning, StartedAt: t0.Add(time.Duration(i/3) * time.Second)}
		if i%4 == 0 {
			r.State = StatePaused
		}
		putRecord(t, st, *r)
		putRecord(t, st, Record{ID: fmt.Sprintf("o%02d", i), Team: "other", State: StateRunning, StartedAt: r.StartedAt})
		want = append(want, r)
	}
	slices.SortFunc(want, func(a, b *Record) int {
		if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	var desc []string
	for _, r := range want {
		desc = append(desc, r.ID)
	}
	asc := slices.Clone(desc)
	slices.Reverse(asc)
	for _, ascending := range []bool{false, true} {
		for _, limit := range []int{1, 4, 23, 100} {
			var got []string
			f := ListFilter{Team: "t", Ascending: ascending, Limit: limit}
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatal("paging does not end")
				}
				ids, p := listIDs(t, s, f)
				if p.TotalRunning != 17 {
					t.Fatalf("TotalRunning %d, want 17", p.TotalRunning)
				}
				if len(ids) > limit {
					t.Fatalf("page of %d with limit %d", len(ids), limit)
				}
				got = append(got, ids...)
				if p.NextToken == "" {
					break
				}
				f.PageToken = p.NextToken
			}
			exp := desc
			if ascending {
				exp = asc
			}
			if fmt.Sprint(got) != fmt.Sprint(exp) {
				t.Fatalf("ascending=%v limit=%d: %v, want %v", ascending, limit, got, exp)
			}
		}
	}
	// Filters: state, started after, team.
	if ids, _ := listIDs(t, s, ListFilter{Team: "t", States: []State{StatePaused}}); len(ids) != 6 {
		t.Fatalf("paused: %v", ids)
	}
	if ids, _ := listIDs(t, s, ListFilter{Team: "t", States: []State{StateCreating}}); len(ids) != 0 {
		t.Fatalf("creating: %v", ids)
	}
	if ids, _ := listIDs(t, s, ListFilter{Team: "t", StartedAfter: t0.Add(5 * time.Second)}); fmt.Sprint(ids) != fmt.Sprint(desc[:5]) {
		t.Fatalf("started after: %v, want %v", ids, desc[:5])
	}
	if ids, _ := listIDs(t, s, ListFilter{Team: "nobody"}); len(ids) != 0 {
		t.Fatalf("unknown team: %v", ids)
	}
	// A cursor stays valid when its sandbox is gone.
	_, p := listIDs(t, s, ListFilter{Team: "t", Limit: 5})
	if err := store.Delete(context.Background(), st, Collection, p.Sandboxes[4].ID); err != nil {
		t.Fatal(err)
	}
	ids, _ := listIDs(t, s, ListFilter{Team: "t", Limit: 3, PageToken: p.NextToken})
	if fmt.Sprint(ids) != fmt.Sprint(desc[5:8]) {
		t.Fatalf("after a deleted cursor record: %v, want %v", ids, desc[5:8])
	}
}
