package template

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// newTestManager is a Manager over a memStore without a runtime.
func newTestManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Config{DataDir: t.TempDir(), Store: newMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func build(id string, layers ...string) Build {
	return Build{ID: id, Layers: layers, User: "user", Workdir: "/home/user", CPUCount: 2, MemoryMB: 512,
		DiskSizeMB: DefaultDiskSizeMB, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func TestTagMapRoundTrip(t *testing.T) {
	b1, b2 := build("b1", layerA), build("b2", layerA, layerB)
	b2.StartCmd = "serve"
	tpl := Template{ID: "t1"}
	if err := tpl.SetTagMap(map[string]Build{"default": b1, "v1": b1, "prod": b2, "v2": b2}); err != nil {
		t.Fatal(err)
	}
	if tpl.BuildID != "b1" || !reflect.DeepEqual(tpl.Tags, []string{"v1"}) || len(tpl.Tagged) != 2 || tpl.Tagged["prod"].ID != "b2" {
		t.Fatalf("SetTagMap: %+v", tpl)
	}
	m := tpl.TagMap()
	if len(m) != 4 || m["default"].ID != "b1" || m["v1"].ID != "b1" || m["v2"].ID != "b2" {
		t.Errorf("TagMap = %v", m)
	}
	at, ok := tpl.At("prod")
	if !ok || at.BuildID != "b2" || at.StartCmd != "serve" || !reflect.DeepEqual(at.Layers, []string{layerA, layerB}) {
		t.Errorf("At(prod) = %+v, %v", at, ok)
	}
	if at, ok := tpl.At("b2"); !ok || at.BuildID != "b2" {
		t.Errorf("At(build ID b2) = %+v, %v", at, ok)
	}
	if _, ok := tpl.At("nope"); ok {
		t.Errorf("At(nope) found a build")
	}
	if !tpl.HasTag("") || !tpl.HasTag("default") || tpl.HasTag("v3") {
		t.Errorf("HasTag wrong")
	}
	if got := tpl.AllLayers(); !slices.Contains(got, layerB) {
		t.Errorf("AllLayers = %v, misses the tagged build's layer", got)
	}
	delete(m, "default")
	if err := tpl.SetTagMap(m); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetTagMap without default = %v, want ErrInvalid", err)
	}
}

// seedTemplate creates a team template with builds b1 (default, v1) and
// b2 (prod).
func seedTemplate(t *testing.T, m *Manager, id, alias, team string) {
	t.Helper()
	tpl := Template{ID: id, Aliases: []string{alias}, Team: team}
	if err := tpl.SetTagMap(map[string]Build{"default": build("b1", layerA), "v1": build("b1", layerA), "prod": build("b2", layerB)}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.reg.Create(context.Background(), tpl); err != nil {
		t.Fatal(err)
	}
}

func TestResolveTaggedBuilds(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	seedTemplate(t, m, "t1", "app", "team-a")
	for ref, wantBuild := range map[string]string{"app": "b1", "app:default": "b1", "app:v1": "b1", "app:prod": "b2", "app:b2": "b2", "t1:prod": "b2"} {
		got, err := m.reg.Resolve(ctx, ref, "team-a")
		if err != nil || got.BuildID != wantBuild {
			t.Errorf("Resolve(%s) = %s, %v; want build %s", ref, got.BuildID, err, wantBuild)
		}
	}
	if _, err := m.reg.Resolve(ctx, "app:v9", "team-a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(app:v9) = %v, want ErrNotFound", err)
	}
	if _, err := m.reg.Resolve(ctx, "app", "team-b"); !errors.Is(err, ErrForbidden) {
		t.Errorf("Resolve by another team = %v, want ErrForbidden", err)
	}
}

func TestAssignAndRemoveTags(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	seedTemplate(t, m, "t1", "app", "team-a")

	id, tags, err := m.AssignTags(ctx, "team-a", "app:prod", []string{"Stable", "latest"})
	if err != nil || id != "b2" || !reflect.DeepEqual(tags, []string{"stable", "latest"}) {
		t.Fatalf("AssignTags = %s %v %v", id, tags, err)
	}
	// The default tag moves too when assigned.
	if id, _, err := m.AssignTags(ctx, "team-a", "app:prod", []string{"default"}); err != nil || id != "b2" {
		t.Fatalf("AssignTags default = %s, %v", id, err)
	}
	got, _ := m.reg.Resolve(ctx, "app", "team-a")
	if got.BuildID != "b2" {
		t.Errorf("after moving default, app resolves to %s", got.BuildID)
	}
	if got, _ := m.reg.Resolve(ctx, "app:v1", "team-a"); got.BuildID != "b1" {
		t.Errorf("v1 lost its build when default moved: %s", got.BuildID)
	}
	list, err := m.Tags(ctx, "team-a", "app")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ti := range list {
		names = append(names, ti.Tag+"="+ti.BuildID)
	}
	if want := []string{"default=b2", "latest=b2", "prod=b2", "stable=b2", "v1=b1"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Tags = %v, want %v", names, want)
	}

	if err := m.RemoveTags(ctx, "team-a", "app", []string{"latest", "missing"}); err != nil {
		t.Errorf("RemoveTags: %v", err)
	}
	if _, err := m.reg.Resolve(ctx, "app:latest", "team-a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed tag still resolves: %v", err)
	}
	if err := m.RemoveTags(ctx, "team-a", "app", []string{"default"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("removing default = %v, want ErrInvalid", err)
	}
	if _, _, err := m.AssignTags(ctx, "team-a", "app:nope", []string{"x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AssignTags from a missing tag = %v, want ErrNotFound", err)
	}
	if _, _, err := m.AssignTags(ctx, "team-a", "app", []string{"bad tag"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("AssignTags bad tag = %v, want ErrInvalid", err)
	}
	// Another team sees nothing, public or not, for changes.
	if _, _, err := m.AssignTags(ctx, "team-b", "app", []string{"x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AssignTags by another team = %v, want ErrNotFound", err)
	}
	if err := m.RemoveTags(ctx, "team-b", "app", []string{"prod"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveTags by another team = %v, want ErrNotFound", err)
	}
}

func TestVisibilityAndAliasInfo(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	seedTemplate(t, m, "t1", "app", "team-a")
	if _, err := m.AliasInfo(ctx, "team-a", "app"); err != nil {
		t.Errorf("owner AliasInfo: %v", err)
	}
	if _, err := m.AliasInfo(ctx, "team-b", "app"); !errors.Is(err, ErrForbidden) {
		t.Errorf("other team AliasInfo of a private template = %v, want ErrForbidden", err)
	}
	if _, err := m.AliasInfo(ctx, "team-a", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("AliasInfo(nope) = %v, want ErrNotFound", err)
	}
	if _, err := m.Visible(ctx, "team-b", "t1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Visible by another team = %v, want ErrNotFound", err)
	}
	if _, err := m.Tags(ctx, "team-b", "app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tags by another team = %v, want ErrNotFound", err)
	}
	if _, err := m.SetPublic(ctx, "team-b", "app", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPublic by another team = %v, want ErrNotFound", err)
	}
	if _, err := m.SetPublic(ctx, "team-a", "app", true); err != nil {
		t.Fatal(err)
	}
	if tpl, err := m.AliasInfo(ctx, "team-b", "app"); err != nil || !tpl.Public {
		t.Errorf("other team AliasInfo of a public template = %+v, %v", tpl, err)
	}
	if _, err := m.Tags(ctx, "team-b", "app"); err != nil {
		t.Errorf("Tags of a public template by another team: %v", err)
	}
	if _, err := m.Owned(ctx, "team-b", "app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Owned by another team of a public template = %v, want ErrNotFound", err)
	}
	if _, err := m.Delete(ctx, "team-b", "app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete by another team = %v, want ErrNotFound", err)
	}
	if list, _ := m.List(ctx, "team-b"); len(list) != 0 {
		t.Errorf("List of another team = %v", list)
	}
	if _, err := m.Delete(ctx, "team-a", "app"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if _, err := m.AliasInfo(ctx, "team-a", "app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("AliasInfo after delete = %v", err)
	}
}

func TestRequestBuildNames(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	seedTemplate(t, m, "t1", "app", "team-a")

	out, err := m.RequestBuild(ctx, "team-a", BuildRequest{Name: "App:V2", Tags: []string{"prod", "v2"}})
	if err != nil {
		t.Fatal(err)
	}
	if out.TemplateID != "t1" || !reflect.DeepEqual(out.Tags, []string{"v2", "prod"}) || !reflect.DeepEqual(out.Names, []string{"app"}) {
		t.Errorf("RequestBuild of an owned name = %+v", out)
	}
	if _, err := m.RequestBuild(ctx, "team-b", BuildRequest{Name: "app"}); !errors.Is(err, ErrAliasTaken) {
		t.Errorf("RequestBuild of another team's name = %v, want ErrAliasTaken", err)
	}
	if _, err := m.RequestBuild(ctx, "team-a", BuildRequest{Name: "base"}); !errors.Is(err, ErrAliasTaken) {
		t.Errorf("RequestBuild of base = %v, want ErrAliasTaken", err)
	}
	for _, bad := range []BuildRequest{{Name: ""}, {Name: "a b"}, {Name: "x", Tags: []string{"bad tag"}}, {Name: "x", CPUCount: -1}, {Name: "x", MemoryMB: 64}} {
		if _, err := m.RequestBuild(ctx, "team-a", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("RequestBuild(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	n1, err := m.RequestBuild(ctx, "team-a", BuildRequest{Name: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	n2, err := m.RequestBuild(ctx, "team-a", BuildRequest{Name: "fresh:v1"})
	if err != nil {
		t.Fatal(err)
	}
	if n1.TemplateID != n2.TemplateID || n1.BuildID == n2.BuildID || n1.Public {
		t.Errorf("two pending builds of a new name: %+v and %+v; want one template ID, two builds", n1, n2)
	}
	if !uuidRe.MatchString(n1.BuildID) {
		t.Errorf("build ID %q is not a UUID", n1.BuildID)
	}
	// The pending template is the team's for file checks, nobody else's.
	hash := strings.Repeat("c", 64)
	if present, err := m.FileUploaded(ctx, "team-a", n1.TemplateID, hash); err != nil || present {
		t.Errorf("FileUploaded by the owner = %v, %v", present, err)
	}
	if _, err := m.FileUploaded(ctx, "team-b", n1.TemplateID, hash); !errors.Is(err, ErrNotFound) {
		t.Errorf("FileUploaded by another team = %v, want ErrNotFound", err)
	}
	// Status of a waiting build: an empty page, never nil.
	rec, entries, err := m.BuildStatus(ctx, "team-a", n1.TemplateID, n1.BuildID, 0, 100, "")
	if err != nil || rec.Status != BuildWaiting || entries == nil || len(entries) != 0 {
		t.Errorf("BuildStatus of a waiting build = %+v, %v, %v", rec, entries, err)
	}
	if _, _, err := m.BuildStatus(ctx, "team-b", n1.TemplateID, n1.BuildID, 0, 100, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("BuildStatus by another team = %v", err)
	}
	// StartBuild checks the spec before anything runs.
	err = m.StartBuild(ctx, "team-a", n1.TemplateID, n1.BuildID, Spec{FromImage: "ubuntu:24.04"})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("StartBuild of an unsupported image = %v, want ErrInvalid", err)
	}
	err = m.StartBuild(ctx, "team-a", n1.TemplateID, n1.BuildID, Spec{FromTemplate: "base", Steps: []Step{{Type: StepCopy, Args: []string{"a", "/b"}, FilesHash: hash}}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not uploaded") {
		t.Errorf("StartBuild with files never uploaded = %v", err)
	}
}
