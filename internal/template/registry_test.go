package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/paddockhq/paddock/internal/store"
)

var (
	layerA = strings.Repeat("a", 64)
	layerB = strings.Repeat("b", 64)
)

func mustCreate(t *testing.T, r *Registry, tpl Template) Template {
	t.Helper()
	got, err := r.Create(context.Background(), tpl)
	if err != nil {
		t.Fatalf("Create(%+v): %v", tpl, err)
	}
	return got
}

func TestRegistryCreateDefaultsAndGet(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	r := NewRegistry(st)
	got := mustCreate(t, r, Template{Aliases: []string{"my-app"}, Team: "team-a", Layers: []string{layerA}, Tags: []string{"V1", "v1"}})
	if len(got.ID) != 20 || got.User != "user" || got.Workdir != "/home/user" || got.CPUCount != 2 || got.MemoryMB != 512 ||
		got.DiskSizeMB != DefaultDiskSizeMB || got.CreatedAt.IsZero() || !reflect.DeepEqual(got.Tags, []string{"v1"}) {
		t.Fatalf("created template = %+v", got)
	}
	back, err := r.Get(ctx, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, got) {
		t.Fatalf("Get = %+v\nwant %+v", back, got)
	}
	if keys := st.keys(AliasesCollection); !reflect.DeepEqual(keys, []string{"my-app"}) {
		t.Fatalf("alias records = %v", keys)
	}
	raw, _ := st.Get(ctx, AliasesCollection, "my-app")
	var a aliasRecord
	if err := json.Unmarshal(raw, &a); err != nil || a.TemplateID != got.ID {
		t.Fatalf("alias record = %s, %v", raw, err)
	}
	if _, err := r.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(absent) = %v, want ErrNotFound", err)
	}
}

func TestRegistryCreateInvalid(t *testing.T) {
	st := newMemStore()
	r := NewRegistry(st)
	for _, bad := range []Template{
		{Team: "t", Layers: nil},
		{Layers: []string{layerA}}, // no team, not built in
		{Team: "t", Layers: []string{"not-a-digest"}},
		{Team: "t", Layers: []string{layerA}, Aliases: []string{"Bad Alias"}},
		{Team: "t", Layers: []string{layerA}, Aliases: []string{"app:v1"}},
		{Team: "t", Layers: []string{layerA}, Aliases: []string{"App"}}, // not normalised
		{Team: "t", Layers: []string{layerA}, Aliases: []string{"dup", "dup"}},
		{Team: "t", Layers: []string{layerA}, Tags: []string{"bad tag"}},
		{Team: "t", Layers: []string{layerA}, ID: "UPPER"},
		{Team: "t", Layers: []string{layerA}, ID: "same", Aliases: []string{"same"}},
		{Team: "t", Layers: []string{layerA}, Workdir: "relative"},
		{Team: "t", Layers: []string{layerA}, CPUCount: -1},
	} {
		if _, err := r.Create(context.Background(), bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if st.applies != 0 {
		t.Fatalf("invalid creates wrote %d times", st.applies)
	}
}

func TestRegistryVisibility(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(newMemStore())
	priv := mustCreate(t, r, Template{Aliases: []string{"private-app"}, Team: "team-a", Layers: []string{layerA}, Tags: []string{"v1"}})
	pub := mustCreate(t, r, Template{Aliases: []string{"team-a/public-app"}, Team: "team-a", Public: true, Layers: []string{layerA}})
	builtin := mustCreate(t, r, Template{ID: BaseID, Aliases: []string{"base"}, BuiltIn: true, Public: true, Layers: []string{layerA}})

	for _, c := range []struct {
		ref, team, id string
		err           error
	}{
		{"private-app", "team-a", priv.ID, nil},
		{"PRIVATE-APP:default", "team-a", priv.ID, nil},
		{"private-app:v1", "team-a", priv.ID, nil},
		{priv.ID, "team-a", priv.ID, nil},
		{priv.ID + ":v1", "team-a", priv.ID, nil},
		{"private-app:v2", "team-a", "", ErrNotFound},
		{"private-app", "team-b", "", ErrForbidden},
		{priv.ID, "team-b", "", ErrForbidden},
		{"private-app", "", "", ErrForbidden},
		{"team-a/public-app", "team-b", pub.ID, nil},
		{"public-app", "team-b", "", ErrNotFound}, // the alias includes its namespace
		{"other/private-app", "team-a", "", ErrNotFound},
		{"base", "team-b", builtin.ID, nil},
		{"base", "", builtin.ID, nil},
		{BaseID, "team-b", builtin.ID, nil},
		{"missing", "team-a", "", ErrNotFound},
		{"bad name!", "team-a", "", ErrInvalid},
	} {
		got, err := r.Resolve(ctx, c.ref, c.team)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Resolve(%q, %q) = %+v, %v; want %v", c.ref, c.team, got.ID, err, c.err)
			}
			continue
		}
		if err != nil || got.ID != c.id {
			t.Errorf("Resolve(%q, %q) = %q, %v; want %q", c.ref, c.team, got.ID, err, c.id)
		}
	}
	// ErrForbidden and ErrNotFound stay distinct.
	_, err := r.Resolve(ctx, "private-app", "team-b")
	if errors.Is(err, ErrNotFound) {
		t.Fatalf("forbidden resolve also matches ErrNotFound: %v", err)
	}

	list, err := r.List(ctx, "team-a")
	if err != nil || len(list) != 2 {
		t.Fatalf("List(team-a) = %d templates, %v", len(list), err)
	}
	if list, _ := r.List(ctx, "team-b"); len(list) != 0 {
		t.Fatalf("List(team-b) = %+v", list)
	}
	if list, _ := r.List(ctx, ""); len(list) != 0 {
		t.Fatalf("List(\"\") shows built-ins: %+v", list)
	}
	if all, _ := r.All(ctx); len(all) != 3 {
		t.Fatalf("All = %d templates", len(all))
	}
}

func TestRegistryAliasConflicts(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	r := NewRegistry(st)
	a := mustCreate(t, r, Template{Aliases: []string{"app"}, Team: "team-a", Layers: []string{layerA}})

	writes := st.applies
	// Another team cannot take the alias; nothing is written.
	if _, err := r.Create(ctx, Template{Aliases: []string{"fresh", "app"}, Team: "team-b", Layers: []string{layerB}}); !errors.Is(err, ErrAliasTaken) {
		t.Fatalf("Create with a taken alias = %v, want ErrAliasTaken", err)
	}
	if st.applies != writes || len(st.keys(TemplatesCollection)) != 1 {
		t.Fatalf("failed create left records: %v / %v", st.keys(TemplatesCollection), st.keys(AliasesCollection))
	}
	if _, err := r.Get(ctx, "fresh"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("alias fresh claimed by a failed create")
	}
	// Same ID twice.
	if _, err := r.Create(ctx, Template{ID: a.ID, Team: "team-b", Layers: []string{layerB}}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create with a taken ID = %v, want ErrExists", err)
	}
	// An alias equal to an existing ID, and an ID equal to an existing alias.
	if _, err := r.Create(ctx, Template{Aliases: []string{a.ID}, Team: "team-b", Layers: []string{layerB}}); !errors.Is(err, ErrAliasTaken) {
		t.Fatalf("Create with another template's ID as alias = %v, want ErrAliasTaken", err)
	}
	if _, err := r.Create(ctx, Template{ID: "app", Team: "team-b", Layers: []string{layerB}}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create with another template's alias as ID = %v, want ErrExists", err)
	}

	// Update: rename app -> app2 frees app and claims app2 atomically.
	b := mustCreate(t, r, Template{Aliases: []string{"other"}, Team: "team-b", Layers: []string{layerB}})
	up, err := r.Update(ctx, a.ID, func(t *Template) error { t.Aliases = []string{"app2"}; t.StartCmd = "run"; return nil })
	if err != nil || up.StartCmd != "run" || !reflect.DeepEqual(up.Aliases, []string{"app2"}) || up.CreatedAt != a.CreatedAt {
		t.Fatalf("Update = %+v, %v", up, err)
	}
	if keys := st.keys(AliasesCollection); !reflect.DeepEqual(keys, []string{"app2", "other"}) {
		t.Fatalf("aliases after rename = %v", keys)
	}
	// Taking a used alias in an update fails and changes nothing.
	before, _ := st.Get(ctx, TemplatesCollection, b.ID)
	if _, err := r.Update(ctx, b.ID, func(t *Template) error { t.Aliases = append(t.Aliases, "app2"); return nil }); !errors.Is(err, ErrAliasTaken) {
		t.Fatalf("Update taking app2 = %v, want ErrAliasTaken", err)
	}
	after, _ := st.Get(ctx, TemplatesCollection, b.ID)
	if string(before) != string(after) {
		t.Fatal("failed update changed the template")
	}
	// fn's error is returned as is.
	boom := errors.New("boom")
	if _, err := r.Update(ctx, b.ID, func(*Template) error { return boom }); err != boom {
		t.Fatalf("Update fn error = %v", err)
	}
	if _, err := r.Update(ctx, "absent", func(*Template) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update(absent) = %v", err)
	}
	// The freed alias is reusable.
	mustCreate(t, r, Template{Aliases: []string{"app"}, Team: "team-c", Layers: []string{layerA}})
}

func TestRegistryDelete(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	r := NewRegistry(st)
	a := mustCreate(t, r, Template{Aliases: []string{"one", "ns/two"}, Team: "team-a", Layers: []string{layerA}})
	keep := mustCreate(t, r, Template{Aliases: []string{"keep"}, Team: "team-a", Layers: []string{layerA}})
	if err := r.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if keys := st.keys(AliasesCollection); !reflect.DeepEqual(keys, []string{"keep"}) {
		t.Fatalf("alias records after delete = %v", keys)
	}
	if keys := st.keys(TemplatesCollection); !reflect.DeepEqual(keys, []string{keep.ID}) {
		t.Fatalf("templates after delete = %v", keys)
	}
	for _, ref := range []string{"one", "ns/two", a.ID} {
		if _, err := r.Resolve(ctx, ref, "team-a"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve(%q) after delete = %v", ref, err)
		}
	}
	if err := r.Delete(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
}

// TestRegistryDeleteRetriesOnConcurrentUpdate interleaves an update between
// Delete's read and its write: the delete retries and still removes the
// alias the update added.
func TestRegistryDeleteRetriesOnConcurrentUpdate(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	r := NewRegistry(st)
	a := mustCreate(t, r, Template{Aliases: []string{"one"}, Team: "team-a", Layers: []string{layerA}})
	var once sync.Once
	st.beforeApply = func() {
		once.Do(func() {
			st.beforeApply = nil
			if _, err := r.Update(ctx, a.ID, func(t *Template) error { t.Aliases = append(t.Aliases, "two"); return nil }); err != nil {
				panic(err)
			}
		})
	}
	if err := r.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if keys := st.keys(AliasesCollection); len(keys) != 0 {
		t.Fatalf("alias records left: %v", keys)
	}
}

// TestRegistryConcurrentAliasClaims races creates for one alias: exactly one
// wins and the index stays consistent.
func TestRegistryConcurrentAliasClaims(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	r := NewRegistry(st)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = r.Create(ctx, Template{Aliases: []string{"contested"}, Team: fmt.Sprintf("team-%d", i), Layers: []string{layerA}})
		}(i)
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrAliasTaken):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 || len(st.keys(TemplatesCollection)) != 1 || len(st.keys(AliasesCollection)) != 1 {
		t.Fatalf("wins %d, templates %v, aliases %v", wins, st.keys(TemplatesCollection), st.keys(AliasesCollection))
	}
	if _, err := r.Resolve(ctx, "contested", "x"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("Resolve(contested) by a stranger = %v", err)
	}
}

// Registry errors from the store are wrapped, not mistaken for not-found.
func TestRegistryStoreErrors(t *testing.T) {
	r := NewRegistry(failingStore{})
	if _, err := r.Resolve(context.Background(), "x", "t"); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Resolve with a failing store = %v", err)
	}
	if _, err := r.Create(context.Background(), Template{Team: "t", Layers: []string{layerA}}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Create with a failing store = %v", err)
	}
}

type failingStore struct{}

var errFire = errors.New("disk on fire")

func (failingStore) Get(context.Context, string, string) ([]byte, error)  { return nil, errFire }
func (failingStore) List(context.Context, string) ([]store.Record, error) { return nil, errFire }
func (failingStore) Apply(context.Context, ...store.Op) error             { return errFire }
func (failingStore) Revision(context.Context, string) (uint64, error)     { return 0, errFire }
func (failingStore) Close() error                                         { return nil }
