package sandbox

import (
	"encoding/json"
	"testing"

	"github.com/paddockhq/paddock/internal/store"
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
