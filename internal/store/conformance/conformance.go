// Package conformance owns the behaviour every store.Store driver must show.
// A driver's test calls Run with a function that opens a fresh, empty store;
// the suite is the definition of the contract written in store.go.
package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/paddockhq/paddock/internal/store"
)

// Open returns a new, empty store for one subtest. Run closes it when the
// subtest ends (Close must be harmless to call twice).
type Open func(t *testing.T) store.Store

// Run runs the whole suite, each case as a subtest on its own store.
func Run(t *testing.T, open Open) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutGetOverwrite", testPutGetOverwrite},
		{"ListEmpty", testListEmpty},
		{"ListSorted", testListSorted},
		{"ListIsolation", testListIsolation},
		{"CondAlways", testCondAlways},
		{"CondIfAbsent", testCondIfAbsent},
		{"CondIfPresent", testCondIfPresent},
		{"CondIfEqual", testCondIfEqual},
		{"CondOnDelete", testCondOnDelete},
		{"DeleteAbsent", testDeleteAbsent},
		{"MultiOpAtomic", testMultiOpAtomic},
		{"MultiOpAcrossCollections", testMultiOpAcrossCollections},
		{"CondsSeePriorState", testCondsSeePriorState},
		{"EmptyApply", testEmptyApply},
		{"InvalidInput", testInvalidInput},
		{"BinaryValues", testBinaryValues},
		{"EmptyValue", testEmptyValue},
		{"OddKeys", testOddKeys},
		{"LargeValue", testLargeValue},
		{"ManyRecords", testManyRecords},
		{"ValuesAreCopies", testValuesAreCopies},
		{"ContextCanceled", testContextCanceled},
		{"Update", testUpdate},
		{"UpdateConcurrent", testUpdateConcurrent},
		{"ApplyConcurrentIfAbsent", testApplyConcurrentIfAbsent},
		{"UseAfterClose", testUseAfterClose},
		{"Revision", testRevision},
		{"RevisionIgnoresFailures", testRevisionIgnoresFailures},
		{"RevisionPerCollection", testRevisionPerCollection},
		{"RevisionConcurrent", testRevisionConcurrent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			c.fn(t, s)
		})
	}
}

// RunShared checks that two stores opened on the same backing state (two
// clients of one server, two processes on one file) see each other's
// writes and that preconditions hold across them. a and b stay open.
func RunShared(t *testing.T, a, b store.Store) {
	t.Helper()
	ctx := context.Background()
	t.Run("SeeEachOthersWrites", func(t *testing.T) {
		mustApply(t, a, store.Op{Collection: "shared", Key: "k", Value: []byte("from a")})
		expectValue(t, b, "shared", "k", "from a")
		mustApply(t, b, store.Op{Collection: "shared", Key: "k", Value: []byte("from b"), Cond: store.IfEqual, Old: []byte("from a")})
		expectValue(t, a, "shared", "k", "from b")
		mustApply(t, a, store.Op{Collection: "shared", Key: "k"})
		expectMissing(t, b, "shared", "k")
	})
	t.Run("ConflictAcross", func(t *testing.T) {
		mustApply(t, a, store.Op{Collection: "shared", Key: "lock", Value: []byte("a"), Cond: store.IfAbsent})
		expectConflict(t, b.Apply(ctx, store.Op{Collection: "shared", Key: "lock", Value: []byte("b"), Cond: store.IfAbsent}))
		expectConflict(t, b.Apply(ctx,
			store.Op{Collection: "shared", Key: "other", Value: []byte("b")},
			store.Op{Collection: "shared", Key: "lock", Value: []byte("b"), Cond: store.IfEqual, Old: []byte("stale")}))
		expectMissing(t, a, "shared", "other")
		expectValue(t, a, "shared", "lock", "a")
	})
	t.Run("RevisionAcross", func(t *testing.T) {
		r0 := revision(t, a, "shared-rev")
		if got := revision(t, b, "shared-rev"); got != r0 {
			t.Fatalf("revision: %d through one handle, %d through the other", r0, got)
		}
		mustApply(t, a, store.Op{Collection: "shared-rev", Key: "k", Value: []byte("from a")})
		r1 := revision(t, b, "shared-rev")
		if r1 == r0 {
			t.Fatalf("a's write left the revision b reads at %d", r0)
		}
		if got := revision(t, a, "shared-rev"); got != r1 {
			t.Fatalf("revision after a's write: a reads %d, b reads %d", got, r1)
		}
		mustApply(t, b, store.Op{Collection: "shared-rev", Key: "k"})
		r2 := revision(t, a, "shared-rev")
		if r2 == r1 || r2 == r0 {
			t.Fatalf("b's delete: revision %d, before %d and %d", r2, r1, r0)
		}
		expectConflict(t, b.Apply(ctx, store.Op{Collection: "shared-rev", Key: "k", Value: []byte("x"), Cond: store.IfPresent}))
		mustApply(t, b, store.Op{Collection: "shared-other", Key: "k", Value: []byte("x")})
		if got := revision(t, a, "shared-rev"); got != r2 {
			t.Fatalf("revision moved from %d to %d without a write to its collection", r2, got)
		}
	})
	t.Run("UpdateConcurrentAcross", func(t *testing.T) {
		const workers, each = 10, 30
		var wg sync.WaitGroup
		errs := make(chan error, 2*workers)
		for i := range 2 * workers {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				for range each {
					if err := store.Update(ctx, s, "shared", "counter", increment); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("update: %v", err)
		}
		expectValue(t, a, "shared", "counter", strconv.Itoa(2*workers*each))
	})
}

func testGetMissing(t *testing.T, s store.Store) {
	expectMissing(t, s, "never", "k")
	mustApply(t, s, store.Op{Collection: "c", Key: "present", Value: []byte("v")})
	expectMissing(t, s, "c", "absent")
	expectMissing(t, s, "c", "presen") // a prefix of a key is not the key
	expectMissing(t, s, "c", "present2")
}

func testPutGetOverwrite(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := store.Put(ctx, s, "c", "k", []byte("one")); err != nil {
		t.Fatalf("put: %v", err)
	}
	expectValue(t, s, "c", "k", "one")
	if err := store.Put(ctx, s, "c", "k", []byte("two")); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	expectValue(t, s, "c", "k", "two")
	if err := store.Delete(ctx, s, "c", "k"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	expectMissing(t, s, "c", "k")
}

func testListEmpty(t *testing.T, s store.Store) {
	expectList(t, s, "never", nil)
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("v")})
	mustApply(t, s, store.Op{Collection: "c", Key: "k"})
	expectList(t, s, "c", nil)
}

func testListSorted(t *testing.T, s store.Store) {
	keys := []string{"b", "a", "c", "aa", "A", "0", "b1", "~", "a-", "Z", "é", "a/b", "ab"}
	want := make(map[string]string)
	for i, k := range keys {
		v := fmt.Sprintf("value %d", i)
		mustApply(t, s, store.Op{Collection: "sorted", Key: k, Value: []byte(v)})
		want[k] = v
	}
	expectList(t, s, "sorted", want)
}

func testListIsolation(t *testing.T, s store.Store) {
	// Collections whose names are prefixes of one another, or that look like
	// key paths, must not see each other's records.
	cols := []string{"a", "a:b", "ab", "a/b", "b"}
	for _, c := range cols {
		mustApply(t, s,
			store.Op{Collection: c, Key: "shared", Value: []byte("in " + c)},
			store.Op{Collection: c, Key: "only-" + c, Value: []byte(c)})
	}
	for _, c := range cols {
		expectList(t, s, c, map[string]string{"shared": "in " + c, "only-" + c: c})
		expectValue(t, s, c, "shared", "in "+c)
	}
	mustApply(t, s, store.Op{Collection: "a", Key: "shared"})
	expectMissing(t, s, "a", "shared")
	expectValue(t, s, "a:b", "shared", "in a:b")
}

func testCondAlways(t *testing.T, s store.Store) {
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("1"), Cond: store.Always})
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("2"), Cond: store.Always})
	expectValue(t, s, "c", "k", "2")
}

func testCondIfAbsent(t *testing.T, s store.Store) {
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("first"), Cond: store.IfAbsent})
	expectValue(t, s, "c", "k", "first")
	expectConflict(t, s.Apply(context.Background(), store.Op{Collection: "c", Key: "k", Value: []byte("second"), Cond: store.IfAbsent}))
	expectValue(t, s, "c", "k", "first")
}

func testCondIfPresent(t *testing.T, s store.Store) {
	ctx := context.Background()
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("x"), Cond: store.IfPresent}))
	expectMissing(t, s, "c", "k")
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("1")})
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("2"), Cond: store.IfPresent})
	expectValue(t, s, "c", "k", "2")
}

func testCondIfEqual(t *testing.T, s store.Store) {
	ctx := context.Background()
	// Absent record: IfEqual never holds, not even against an empty Old.
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("x"), Cond: store.IfEqual, Old: []byte("")}))
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("x"), Cond: store.IfEqual}))
	expectMissing(t, s, "c", "k")

	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("v1")})
	for _, old := range []string{"v2", "v", "v1 ", "V1", ""} {
		expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("x"), Cond: store.IfEqual, Old: []byte(old)}))
	}
	expectValue(t, s, "c", "k", "v1")
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("v2"), Cond: store.IfEqual, Old: []byte("v1")})
	expectValue(t, s, "c", "k", "v2")
}

func testCondOnDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("v")})
	// Compare-and-delete.
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "k", Cond: store.IfEqual, Old: []byte("other")}))
	expectValue(t, s, "c", "k", "v")
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "k", Cond: store.IfAbsent}))
	expectValue(t, s, "c", "k", "v")
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Cond: store.IfEqual, Old: []byte("v")})
	expectMissing(t, s, "c", "k")
	// Deleting an absent record only when present is a conflict.
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "k", Cond: store.IfPresent}))
	mustApply(t, s, store.Op{Collection: "c", Key: "k2", Value: []byte("v")})
	mustApply(t, s, store.Op{Collection: "c", Key: "k2", Cond: store.IfPresent})
	expectMissing(t, s, "c", "k2")
}

func testDeleteAbsent(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := store.Delete(ctx, s, "never", "k"); err != nil {
		t.Fatalf("delete in a missing collection: %v", err)
	}
	mustApply(t, s, store.Op{Collection: "c", Key: "other", Value: []byte("v")})
	if err := store.Delete(ctx, s, "c", "k"); err != nil {
		t.Fatalf("delete of an absent key: %v", err)
	}
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Cond: store.IfAbsent})
	expectMissing(t, s, "c", "k")
	expectValue(t, s, "c", "other", "v")
}

func testMultiOpAtomic(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustApply(t, s,
		store.Op{Collection: "c", Key: "keep", Value: []byte("old")},
		store.Op{Collection: "c", Key: "guard", Value: []byte("g1")})
	for _, bad := range []store.Op{
		{Collection: "c", Key: "guard", Value: []byte("x"), Cond: store.IfEqual, Old: []byte("g0")},
		{Collection: "c", Key: "guard", Value: []byte("x"), Cond: store.IfAbsent},
		{Collection: "c", Key: "nope", Value: []byte("x"), Cond: store.IfPresent},
		{Collection: "c", Key: "nope", Cond: store.IfEqual, Old: []byte("x")},
	} {
		err := s.Apply(ctx,
			store.Op{Collection: "c", Key: "new", Value: []byte("1"), Cond: store.IfAbsent},
			store.Op{Collection: "c", Key: "keep", Value: []byte("changed")},
			bad,
			store.Op{Collection: "c", Key: "after", Value: []byte("4")})
		expectConflict(t, err)
		expectMissing(t, s, "c", "new")
		expectMissing(t, s, "c", "after")
		expectMissing(t, s, "c", "nope")
		expectValue(t, s, "c", "keep", "old")
		expectValue(t, s, "c", "guard", "g1")
	}
	// Deletes in a failed batch are not applied either.
	expectConflict(t, s.Apply(ctx,
		store.Op{Collection: "c", Key: "keep"},
		store.Op{Collection: "c", Key: "guard", Cond: store.IfAbsent}))
	expectValue(t, s, "c", "keep", "old")
	expectList(t, s, "c", map[string]string{"keep": "old", "guard": "g1"})
}

func testMultiOpAcrossCollections(t *testing.T, s store.Store) {
	// A record and its index, as the sandbox service writes them.
	mustApply(t, s,
		store.Op{Collection: "sandboxes", Key: "i1", Value: []byte(`{"state":"running"}`), Cond: store.IfAbsent},
		store.Op{Collection: "sandboxes-by-team", Key: "t1/i1", Value: []byte{}, Cond: store.IfAbsent},
		store.Op{Collection: "counters", Key: "running", Value: []byte("1")})
	expectValue(t, s, "sandboxes", "i1", `{"state":"running"}`)
	expectValue(t, s, "sandboxes-by-team", "t1/i1", "")
	expectValue(t, s, "counters", "running", "1")
	expectConflict(t, s.Apply(context.Background(),
		store.Op{Collection: "sandboxes", Key: "i1"},
		store.Op{Collection: "sandboxes-by-team", Key: "t1/i1"},
		store.Op{Collection: "counters", Key: "running", Value: []byte("0"), Cond: store.IfEqual, Old: []byte("2")}))
	expectValue(t, s, "sandboxes", "i1", `{"state":"running"}`)
	expectValue(t, s, "sandboxes-by-team", "t1/i1", "")
	mustApply(t, s,
		store.Op{Collection: "sandboxes", Key: "i1", Cond: store.IfPresent},
		store.Op{Collection: "sandboxes-by-team", Key: "t1/i1", Cond: store.IfPresent},
		store.Op{Collection: "counters", Key: "running", Value: []byte("0"), Cond: store.IfEqual, Old: []byte("1")})
	expectMissing(t, s, "sandboxes", "i1")
	expectMissing(t, s, "sandboxes-by-team", "t1/i1")
	expectValue(t, s, "counters", "running", "0")
}

func testCondsSeePriorState(t *testing.T, s store.Store) {
	// Every precondition is checked against the state before the Apply; ops
	// then run in order, so the last write to a key wins.
	mustApply(t, s,
		store.Op{Collection: "c", Key: "k", Value: []byte("1"), Cond: store.IfAbsent},
		store.Op{Collection: "c", Key: "k", Value: []byte("2"), Cond: store.IfAbsent})
	expectValue(t, s, "c", "k", "2")
	expectConflict(t, s.Apply(context.Background(),
		store.Op{Collection: "c", Key: "k", Value: []byte("3"), Cond: store.IfEqual, Old: []byte("2")},
		store.Op{Collection: "c", Key: "k", Value: []byte("4"), Cond: store.IfEqual, Old: []byte("3")}))
	expectValue(t, s, "c", "k", "2")
	mustApply(t, s,
		store.Op{Collection: "c", Key: "k", Value: []byte("5")},
		store.Op{Collection: "c", Key: "k"})
	expectMissing(t, s, "c", "k")
}

func testEmptyApply(t *testing.T, s store.Store) {
	if err := s.Apply(context.Background()); err != nil {
		t.Fatalf("apply of no ops: %v", err)
	}
}

func testInvalidInput(t *testing.T, s store.Store) {
	ctx := context.Background()
	long := string(bytes.Repeat([]byte("k"), store.MaxNameLen+1))
	bad := []store.Op{
		{Collection: "", Key: "k", Value: []byte("v")},
		{Collection: "c", Key: "", Value: []byte("v")},
		{Collection: long, Key: "k", Value: []byte("v")},
		{Collection: "c", Key: long, Value: []byte("v")},
		{Collection: "c", Key: "k", Value: []byte("v"), Cond: store.Cond(42)},
		{Collection: "c", Key: "k", Value: []byte("v"), Cond: store.Cond(-1)},
	}
	for _, op := range bad {
		err := s.Apply(ctx, store.Op{Collection: "c", Key: "ok", Value: []byte("v")}, op)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("apply %+v: want ErrInvalid, got %v", op, err)
		}
	}
	expectMissing(t, s, "c", "ok")
	if _, err := s.Get(ctx, "", "k"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("get with empty collection: want ErrInvalid, got %v", err)
	}
	if _, err := s.Get(ctx, "c", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("get with empty key: want ErrInvalid, got %v", err)
	}
	if _, err := s.List(ctx, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("list with empty collection: want ErrInvalid, got %v", err)
	}
	// The longest valid names work.
	maxName := string(bytes.Repeat([]byte("n"), store.MaxNameLen))
	mustApply(t, s, store.Op{Collection: maxName, Key: maxName, Value: []byte("v")})
	expectValue(t, s, maxName, maxName, "v")
}

func testBinaryValues(t *testing.T, s store.Store) {
	all := make([]byte, 0, 512)
	for i := range 256 {
		all = append(all, byte(i))
	}
	for i := range 256 {
		all = append(all, byte(255-i))
	}
	values := map[string][]byte{
		"all-bytes":   all,
		"nul":         {0},
		"nuls":        {0, 0, 0, 'a', 0},
		"bad-utf8":    {0xff, 0xfe, 0xc3, 0x28},
		"crlf":        []byte("a\r\nb\n"),
		"lua-special": []byte("%s %d \\0 ]] [[ --"),
		"nil-word":    []byte("nil"),
		"false-word":  []byte("false"),
	}
	for k, v := range values {
		mustApply(t, s, store.Op{Collection: "bin", Key: k, Value: v})
	}
	for k, v := range values {
		got, err := s.Get(context.Background(), "bin", k)
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		if !bytes.Equal(got, v) {
			t.Errorf("get %s: got %x, want %x", k, got, v)
		}
	}
	// IfEqual compares bytes exactly, NULs included.
	expectConflict(t, s.Apply(context.Background(), store.Op{Collection: "bin", Key: "nuls", Value: []byte("x"), Cond: store.IfEqual, Old: []byte{0, 0, 0, 'a'}}))
	mustApply(t, s, store.Op{Collection: "bin", Key: "nuls", Value: []byte("x"), Cond: store.IfEqual, Old: []byte{0, 0, 0, 'a', 0}})
	want := make(map[string]string)
	for k, v := range values {
		want[k] = string(v)
	}
	want["nuls"] = "x"
	expectList(t, s, "bin", want)
}

func testEmptyValue(t *testing.T, s store.Store) {
	ctx := context.Background()
	// An empty (non-nil) value is a present record, not a delete.
	mustApply(t, s, store.Op{Collection: "c", Key: "empty", Value: []byte{}})
	got, err := s.Get(ctx, "c", "empty")
	if err != nil {
		t.Fatalf("get empty value: %v", err)
	}
	if got == nil || len(got) != 0 {
		t.Fatalf("get empty value: got %#v, want a non-nil empty slice", got)
	}
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "c", Key: "empty", Value: []byte("x"), Cond: store.IfAbsent}))
	mustApply(t, s, store.Op{Collection: "c", Key: "empty", Value: []byte{}, Cond: store.IfPresent})
	mustApply(t, s, store.Op{Collection: "c", Key: "empty", Value: []byte{}, Cond: store.IfEqual, Old: nil})
	recs, err := s.List(ctx, "c")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(recs) != 1 || recs[0].Key != "empty" || recs[0].Value == nil || len(recs[0].Value) != 0 {
		t.Fatalf("list: got %#v, want one record with an empty non-nil value", recs)
	}
	// store.Update sees the record as present (non-nil old).
	err = store.Update(ctx, s, "c", "empty", func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, errors.New("update got nil for a present empty record")
		}
		return []byte("filled"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	expectValue(t, s, "c", "empty", "filled")
}

func testOddKeys(t *testing.T, s store.Store) {
	keys := []string{"with space", "colon:sep", "slash/sep", "{braces}", "*", "?", "[x]", "é日本", "tab\tkey", "nul\x00key", "\xff\xfe", "-1", "0", "k\n"}
	want := make(map[string]string)
	for i, k := range keys {
		v := strconv.Itoa(i)
		mustApply(t, s, store.Op{Collection: "odd:col/{x} *", Key: k, Value: []byte(v), Cond: store.IfAbsent})
		want[k] = v
	}
	for k, v := range want {
		expectValue(t, s, "odd:col/{x} *", k, v)
	}
	expectList(t, s, "odd:col/{x} *", want)
}

func testLargeValue(t *testing.T, s store.Store) {
	ctx := context.Background()
	big1 := randomBytes(t, 1<<20)
	big2 := randomBytes(t, 1<<20+7)
	mustApply(t, s, store.Op{Collection: "large", Key: "k", Value: big1})
	got, err := s.Get(ctx, "large", "k")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if !bytes.Equal(got, big1) {
		t.Fatalf("1 MiB value corrupted (len %d)", len(got))
	}
	// Compare a 1 MiB Old that differs only in its last byte.
	stale := bytes.Clone(big1)
	stale[len(stale)-1] ^= 1
	expectConflict(t, s.Apply(ctx, store.Op{Collection: "large", Key: "k", Value: big2, Cond: store.IfEqual, Old: stale}))
	mustApply(t, s, store.Op{Collection: "large", Key: "k", Value: big2, Cond: store.IfEqual, Old: big1})
	recs, err := s.List(ctx, "large")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(recs) != 1 || !bytes.Equal(recs[0].Value, big2) {
		t.Fatalf("list after large IfEqual: %d records, value intact=%v", len(recs), len(recs) == 1 && bytes.Equal(recs[0].Value, big2))
	}
}

func testManyRecords(t *testing.T, s store.Store) {
	const n = 1000
	want := make(map[string]string, n)
	ops := make([]store.Op, 0, 100)
	for i := range n {
		k := fmt.Sprintf("rec-%d", i) // not zero padded: sort is bytewise
		want[k] = strconv.Itoa(i * i)
		ops = append(ops, store.Op{Collection: "many", Key: k, Value: []byte(want[k]), Cond: store.IfAbsent})
		if len(ops) == cap(ops) {
			mustApply(t, s, ops...)
			ops = ops[:0]
		}
	}
	expectList(t, s, "many", want)
}

func testValuesAreCopies(t *testing.T, s store.Store) {
	ctx := context.Background()
	in := []byte("original")
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: in})
	copy(in, "CHANGED!")
	expectValue(t, s, "c", "k", "original")
	got, err := s.Get(ctx, "c", "k")
	if err != nil {
		t.Fatal(err)
	}
	copy(got, "mutated!")
	expectValue(t, s, "c", "k", "original")
	recs, err := s.List(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	copy(recs[0].Value, "mutated!")
	expectValue(t, s, "c", "k", "original")
}

func testContextCanceled(t *testing.T, s store.Store) {
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("v")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Get(ctx, "c", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("get with canceled context: want context.Canceled, got %v", err)
	}
	if _, err := s.List(ctx, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("list with canceled context: want context.Canceled, got %v", err)
	}
	if err := s.Apply(ctx, store.Op{Collection: "c", Key: "k2", Value: []byte("v")}); !errors.Is(err, context.Canceled) {
		t.Errorf("apply with canceled context: want context.Canceled, got %v", err)
	}
	err := store.Update(ctx, s, "c", "k", func(old []byte) ([]byte, error) { return []byte("new"), nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("update with canceled context: want context.Canceled, got %v", err)
	}
	expectMissing(t, s, "c", "k2")
	expectValue(t, s, "c", "k", "v")
}

func testUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	var sawNil bool
	err := store.Update(ctx, s, "c", "k", func(old []byte) ([]byte, error) {
		sawNil = old == nil
		return []byte("created"), nil
	})
	if err != nil || !sawNil {
		t.Fatalf("update of an absent record: err=%v, fn saw nil=%v", err, sawNil)
	}
	expectValue(t, s, "c", "k", "created")
	boom := errors.New("boom")
	err = store.Update(ctx, s, "c", "k", func(old []byte) ([]byte, error) { return []byte("never"), boom })
	if err != boom {
		t.Fatalf("update whose fn fails: want the fn's error as is, got %v", err)
	}
	expectValue(t, s, "c", "k", "created")
	err = store.Update(ctx, s, "c", "k", func(old []byte) ([]byte, error) {
		if string(old) != "created" {
			return nil, fmt.Errorf("fn got %q", old)
		}
		return nil, nil
	})
	if err != nil {
		t.Fatalf("update to delete: %v", err)
	}
	expectMissing(t, s, "c", "k")
}

func testUpdateConcurrent(t *testing.T, s store.Store) {
	const workers, each = 20, 50
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				if err := store.Update(ctx, s, "counters", "n", increment); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("update: %v", err)
	}
	expectValue(t, s, "counters", "n", strconv.Itoa(workers*each))
}

func testApplyConcurrentIfAbsent(t *testing.T, s store.Store) {
	// Many writers race to create the same records: exactly one wins each.
	const workers, keys = 16, 20
	ctx := context.Background()
	var wg sync.WaitGroup
	wins := make([][]int, workers)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for k := range keys {
				err := s.Apply(ctx,
					store.Op{Collection: "claims", Key: strconv.Itoa(k), Value: []byte(strconv.Itoa(w)), Cond: store.IfAbsent},
					store.Op{Collection: "owners", Key: strconv.Itoa(k), Value: []byte(strconv.Itoa(w)), Cond: store.IfAbsent})
				switch {
				case err == nil:
					wins[w] = append(wins[w], k)
				case !errors.Is(err, store.ErrConflict):
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("apply: %v", err)
	}
	owner := make(map[int]int)
	for w, ks := range wins {
		for _, k := range ks {
			if prev, dup := owner[k]; dup {
				t.Fatalf("key %d claimed by both %d and %d", k, prev, w)
			}
			owner[k] = w
		}
	}
	if len(owner) != keys {
		t.Fatalf("%d keys claimed, want %d", len(owner), keys)
	}
	for k, w := range owner {
		expectValue(t, s, "claims", strconv.Itoa(k), strconv.Itoa(w))
		expectValue(t, s, "owners", strconv.Itoa(k), strconv.Itoa(w))
	}
}

func testUseAfterClose(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("v")})
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := s.Get(ctx, "c", "k"); err == nil {
		t.Error("get after close: want an error")
	}
	if _, err := s.List(ctx, "c"); err == nil {
		t.Error("list after close: want an error")
	}
	if err := s.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("w")}); err == nil {
		t.Error("apply after close: want an error")
	}
}

func revision(t *testing.T, s store.Store, collection string) uint64 {
	t.Helper()
	rev, err := s.Revision(context.Background(), collection)
	if err != nil {
		t.Fatalf("revision of %q: %v", collection, err)
	}
	return rev
}

// revisions checks a collection's revision after each write: it never comes
// back to a value seen before, and reads without a write agree.
type revisions struct {
	t    *testing.T
	s    store.Store
	col  string
	last uint64
	seen map[uint64]bool
}

func newRevisions(t *testing.T, s store.Store, col string) *revisions {
	r := &revisions{t: t, s: s, col: col, last: revision(t, s, col), seen: map[uint64]bool{}}
	r.seen[r.last] = true
	return r
}

// changed checks the revision moved to a value never seen before.
func (r *revisions) changed(what string) {
	r.t.Helper()
	got := revision(r.t, r.s, r.col)
	if r.seen[got] {
		r.t.Fatalf("revision of %q after %s: %d, seen before (last %d)", r.col, what, got, r.last)
	}
	r.seen[got], r.last = true, got
}

// same checks the revision did not move.
func (r *revisions) same(what string) {
	r.t.Helper()
	if got := revision(r.t, r.s, r.col); got != r.last {
		r.t.Fatalf("revision of %q after %s: %d, want it unchanged at %d", r.col, what, got, r.last)
	}
}

func testRevision(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := newRevisions(t, s, "c")
	r.same("nothing")
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("1")})
	r.changed("the first write")
	r.same("nothing")
	expectValue(t, s, "c", "k", "1")
	expectList(t, s, "c", map[string]string{"k": "1"})
	r.same("reads")
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("2")})
	r.changed("an overwrite")
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("2")})
	r.changed("an overwrite with the same value")
	mustApply(t, s, store.Op{Collection: "c", Key: "k2", Value: []byte("x"), Cond: store.IfAbsent})
	r.changed("a conditional write")
	mustApply(t, s, store.Op{Collection: "c", Key: "k"})
	r.changed("a delete")
	if err := store.Update(ctx, s, "c", "k2", func([]byte) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	r.changed("the delete of the last record")
	expectList(t, s, "c", nil)
	mustApply(t, s, store.Op{Collection: "c", Key: "k", Value: []byte("back")})
	r.changed("a write to the emptied collection")
	for range 20 {
		mustApply(t, s,
			store.Op{Collection: "c", Key: "a", Value: []byte("1")},
			store.Op{Collection: "c", Key: "b", Value: []byte("2")},
			store.Op{Collection: "c", Key: "a"})
		r.changed("a batch of three ops")
	}
	if _, err := s.Revision(ctx, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("revision of an empty collection name: want ErrInvalid, got %v", err)
	}
	if _, err := s.Revision(ctx, string(bytes.Repeat([]byte("n"), store.MaxNameLen+1))); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("revision of a too long collection name: want ErrInvalid, got %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Revision(canceled, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("revision with a canceled context: want context.Canceled, got %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revision(ctx, "c"); err == nil {
		t.Error("revision after close: want an error")
	}
}

func testRevisionIgnoresFailures(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustApply(t, s, store.Op{Collection: "c", Key: "guard", Value: []byte("g")})
	r := newRevisions(t, s, "c")
	other := newRevisions(t, s, "other")
	for _, bad := range []store.Op{
		{Collection: "c", Key: "guard", Value: []byte("x"), Cond: store.IfAbsent},
		{Collection: "c", Key: "guard", Value: []byte("x"), Cond: store.IfEqual, Old: []byte("stale")},
		{Collection: "c", Key: "absent", Value: []byte("x"), Cond: store.IfPresent},
		{Collection: "c", Key: "absent", Cond: store.IfPresent},
	} {
		expectConflict(t, s.Apply(ctx,
			store.Op{Collection: "c", Key: "new", Value: []byte("1")},
			store.Op{Collection: "other", Key: "k", Value: []byte("1")},
			bad))
		r.same(fmt.Sprintf("a failed Apply (%+v)", bad))
		other.same("a failed Apply with an op on it")
	}
	err := s.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("v")}, store.Op{Collection: "c", Key: ""})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("apply with an empty key: want ErrInvalid, got %v", err)
	}
	r.same("a rejected Apply")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Apply(canceled, store.Op{Collection: "c", Key: "k", Value: []byte("v")}); err == nil {
		t.Fatal("apply with a canceled context: want an error")
	}
	r.same("an Apply with a canceled context")
	if err := s.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	r.same("an Apply of no ops")
}

func testRevisionPerCollection(t *testing.T, s store.Store) {
	// Collections whose names are prefixes of one another do not share a
	// revision.
	cols := []string{"a", "ab", "a:b", "b"}
	revs := make(map[string]*revisions)
	for _, c := range cols {
		revs[c] = newRevisions(t, s, c)
	}
	for _, c := range cols {
		mustApply(t, s, store.Op{Collection: c, Key: "k", Value: []byte(c)})
		for _, o := range cols {
			if o == c {
				revs[o].changed("a write to it")
			} else {
				revs[o].same("a write to " + c)
			}
		}
	}
	mustApply(t, s,
		store.Op{Collection: "a", Key: "k2", Value: []byte("x")},
		store.Op{Collection: "b", Key: "k"})
	revs["a"].changed("an Apply across collections")
	revs["b"].changed("an Apply across collections")
	revs["ab"].same("an Apply to a and b")
	revs["a:b"].same("an Apply to a and b")
}

func testRevisionConcurrent(t *testing.T, s store.Store) {
	// Concurrent writers: a reader's revision differs from the one before
	// the first write once any write is done, and a final read without
	// writes agrees with itself.
	const workers, each = 8, 20
	ctx := context.Background()
	before := revision(t, s, "c")
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if err := store.Put(ctx, s, "c", fmt.Sprintf("w%d-%d", w, i), []byte("v")); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("put: %v", err)
	}
	after := revision(t, s, "c")
	if after == before {
		t.Fatalf("revision unchanged at %d after %d writes", after, workers*each)
	}
	if again := revision(t, s, "c"); again != after {
		t.Fatalf("revision %d then %d without writes", after, again)
	}
}

// increment is an Update function on a decimal counter.
func increment(old []byte) ([]byte, error) {
	n := 0
	if old != nil {
		var err error
		if n, err = strconv.Atoi(string(old)); err != nil {
			return nil, fmt.Errorf("counter %q: %w", old, err)
		}
	}
	return []byte(strconv.Itoa(n + 1)), nil
}

func mustApply(t *testing.T, s store.Store, ops ...store.Op) {
	t.Helper()
	if err := s.Apply(context.Background(), ops...); err != nil {
		t.Fatalf("apply %d ops: %v", len(ops), err)
	}
}

func expectConflict(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("want ErrConflict, got %v", err)
	}
}

func expectValue(t *testing.T, s store.Store, collection, key, want string) {
	t.Helper()
	got, err := s.Get(context.Background(), collection, key)
	if err != nil {
		t.Fatalf("get %q/%q: %v", collection, key, err)
	}
	if string(got) != want {
		t.Fatalf("get %q/%q = %q, want %q", collection, key, got, want)
	}
}

func expectMissing(t *testing.T, s store.Store, collection, key string) {
	t.Helper()
	got, err := s.Get(context.Background(), collection, key)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get %q/%q: want ErrNotFound, got value %q, err %v", collection, key, got, err)
	}
	if got != nil {
		t.Fatalf("get %q/%q: ErrNotFound with a value %q", collection, key, got)
	}
}

// expectList checks List returns exactly want, sorted bytewise by key.
func expectList(t *testing.T, s store.Store, collection string, want map[string]string) {
	t.Helper()
	recs, err := s.List(context.Background(), collection)
	if err != nil {
		t.Fatalf("list %q: %v", collection, err)
	}
	wantKeys := make([]string, 0, len(want))
	for k := range want {
		wantKeys = append(wantKeys, k)
	}
	slices.Sort(wantKeys) // Go string order is bytewise
	gotKeys := make([]string, len(recs))
	for i, r := range recs {
		gotKeys[i] = r.Key
	}
	if !slices.Equal(gotKeys, wantKeys) {
		t.Fatalf("list %q keys = %q, want %q", collection, gotKeys, wantKeys)
	}
	for _, r := range recs {
		if string(r.Value) != want[r.Key] {
			t.Fatalf("list %q: %q = %q, want %q", collection, r.Key, r.Value, want[r.Key])
		}
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
