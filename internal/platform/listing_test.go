package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/platform/api"
	"github.com/paddockhq/paddock/internal/sandbox"
	"github.com/paddockhq/paddock/internal/store"
)

// encodedListing is what the handlers wrote before listings were
// assembled from cached bytes: writeJSON of the []api.ListedSandbox.
func encodedListing(t *testing.T, recs []*sandbox.Record) []byte {
	t.Helper()
	out := make([]api.ListedSandbox, 0, len(recs))
	for _, r := range recs {
		out = append(out, listed(r))
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(out); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// allPages lists every page of f.
func allPages(t *testing.T, svc *sandbox.Service, f sandbox.ListFilter) []*sandbox.Record {
	t.Helper()
	var recs []*sandbox.Record
	for {
		p, err := svc.List(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, p.Sandboxes...)
		if p.NextToken == "" {
			return recs
		}
		f.PageToken = p.NextToken
	}
}

func (f *listFixture) serve(t *testing.T, target string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, f.get(target))
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", target, w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", target, ct)
	}
	return w
}

func TestListingBodyIsTheJSONEncoding(t *testing.T) {
	f := newListFixture(t, 150)
	ctx := context.Background()
	// Records that exercise the encoding: no alias, no metadata, HTML and
	// line separators to escape, non-ASCII, paused, another team's.
	t0 := time.Date(2027, 3, 4, 5, 6, 7, 891011121, time.UTC)
	odd := []sandbox.Record{
		{ID: "iodd1", Team: f.team, TemplateID: "tpl<1>", State: sandbox.StateRunning, StartedAt: t0, EndAt: t0.Add(time.Minute)},
		{ID: "iodd2", Team: f.team, TemplateID: "tpl", Alias: "a&b", State: sandbox.StatePaused, StartedAt: t0.Add(time.Second),
			Metadata: map[string]string{"<script>": "x&y", "é": "\u2028\u2029\x00\"\\", "": ""}, CPUs: 1 << 20},
		{ID: "iodd3", Team: "other", State: sandbox.StateRunning, StartedAt: t0},
	}
	for _, r := range odd {
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Put(ctx, f.st, sandbox.Collection, r.ID, raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		target string
		filter sandbox.ListFilter
		all    bool // every page (v1)
	}{
		{"/v2/sandboxes", sandbox.ListFilter{}, false},
		{"/v2/sandboxes?limit=7", sandbox.ListFilter{Limit: 7}, false},
		{"/v2/sandboxes?order=asc&state=running,paused", sandbox.ListFilter{Ascending: true, States: []sandbox.State{sandbox.StateRunning, sandbox.StatePaused}}, false},
		{"/v2/sandboxes?state=paused", sandbox.ListFilter{States: []sandbox.State{sandbox.StatePaused}}, false},
		{"/v2/sandboxes?metadata=" + "bench%3Dnothing", sandbox.ListFilter{Metadata: map[string]string{"bench": "nothing"}}, false},
		{"/sandboxes", sandbox.ListFilter{States: []sandbox.State{sandbox.StateRunning}}, true},
	} {
		for round := range 2 { // encoded, then from the cache
			c.filter.Team = f.team
			var recs []*sandbox.Record
			if c.all {
				recs = allPages(t, f.svc, c.filter)
			} else {
				p, err := f.svc.List(ctx, c.filter)
				if err != nil {
					t.Fatal(err)
				}
				recs = p.Sandboxes
			}
			w := f.serve(t, c.target)
			if want := encodedListing(t, recs); !bytes.Equal(w.Body.Bytes(), want) {
				t.Fatalf("GET %s (round %d): body differs from the JSON encoding:\n got %.300s\nwant %.300s", c.target, round, w.Body.Bytes(), want)
			}
		}
	}
	// The first page of the paged listing, with its headers.
	w := f.serve(t, "/v2/sandboxes?limit=100")
	if w.Header().Get("X-Next-Token") == "" || w.Header().Get("X-Total-Running") != "151" {
		t.Fatalf("headers: %v", w.Header())
	}
	var got []api.ListedSandbox
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got) != 100 {
		t.Fatalf("body: %d sandboxes, %v", len(got), err)
	}
}

func TestListingOfNothing(t *testing.T) {
	f := newListFixture(t, 0)
	for _, target := range []string{"/v2/sandboxes", "/sandboxes"} {
		if w := f.serve(t, target); w.Body.String() != "[]\n" {
			t.Fatalf("GET %s: %q", target, w.Body)
		}
	}
}

func TestListingFollowsChanges(t *testing.T) {
	// The cached JSON of a sandbox never outlives the record it encodes.
	f := newListFixture(t, 20)
	ctx := context.Background()
	check := func(what string) {
		t.Helper()
		p, err := f.svc.List(ctx, sandbox.ListFilter{Team: f.team})
		if err != nil {
			t.Fatal(err)
		}
		if w := f.serve(t, "/v2/sandboxes"); !bytes.Equal(w.Body.Bytes(), encodedListing(t, p.Sandboxes)) {
			t.Fatalf("after %s: stale listing %.200s", what, w.Body)
		}
	}
	check("nothing")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	changed := f.recordOp(t, 3, start.Add(3*time.Second), sandbox.StatePaused)
	if err := f.st.Apply(ctx, changed); err != nil {
		t.Fatal(err)
	}
	check("a pause")
	var r sandbox.Record
	if err := json.Unmarshal(changed.Value, &r); err != nil {
		t.Fatal(err)
	}
	r.Metadata["n"] = "changed"
	r.EndAt = r.EndAt.Add(time.Hour)
	raw, _ := json.Marshal(r)
	if err := store.Put(ctx, f.st, sandbox.Collection, r.ID, raw); err != nil {
		t.Fatal(err)
	}
	check("a metadata and timeout change")
	if err := store.Delete(ctx, f.st, sandbox.Collection, r.ID); err != nil {
		t.Fatal(err)
	}
	check("a kill")
	if w := f.serve(t, "/v2/sandboxes"); bytes.Contains(w.Body.Bytes(), []byte(r.ID)) {
		t.Fatalf("killed sandbox still listed")
	}
}

func TestListingCacheIsBounded(t *testing.T) {
	// Churn (sandboxes created and killed, or changed) does not grow the
	// cache; what is still listed stays cached.
	const gen = 16
	c := newListingCache(gen)
	stable := make([]*sandbox.Record, 5)
	for i := range stable {
		stable[i] = &sandbox.Record{ID: "stable" + strconv.Itoa(i), State: sandbox.StateRunning}
	}
	first, err := c.parts(nil, stable)
	if err != nil {
		t.Fatal(err)
	}
	var gone *sandbox.Record
	for round := range 200 {
		recs := append([]*sandbox.Record(nil), stable...)
		for i := range 3 {
			r := &sandbox.Record{ID: fmt.Sprintf("churn%d-%d", round, i), State: sandbox.StateRunning}
			if round == 0 && i == 0 {
				gone = r
			}
			recs = append(recs, r)
		}
		parts, err := c.parts(nil, recs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range stable {
			if &parts[i][0] != &first[i][0] {
				t.Fatalf("round %d: sandbox %d encoded again while listed all along", round, i)
			}
		}
		if n := c.len(); n > 2*gen {
			t.Fatalf("round %d: %d entries, bound %d", round, n, 2*gen)
		}
	}
	c.mu.Lock()
	_, inCur := c.cur[gone]
	_, inOld := c.old[gone]
	c.mu.Unlock()
	if inCur || inOld {
		t.Fatal("a sandbox listed once 200 rounds ago is still cached")
	}
}
