package template

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// What teams do with templates through the Platform API. Every operation
// is scoped to a team: another team's private template is reported as not
// found (the alias check says ErrForbidden, as E2B's 403), a public one can
// be used and read but not changed.

// lookup finds a template by name or ID ("[namespace/]alias[:tag]" or
// "id[:tag]"; the tag is ignored) without visibility checks.
func (m *Manager) lookup(ctx context.Context, ref string) (Template, Name, error) {
	n, err := ParseName(ref)
	if err != nil {
		return Template{}, Name{}, err
	}
	id, _, err := m.reg.lookupAlias(ctx, n.Identifier())
	if err != nil {
		return Template{}, n, err
	}
	if id == "" {
		if n.Namespace != "" {
			return Template{}, n, fmt.Errorf("template %q: %w", n.Identifier(), ErrNotFound)
		}
		id = n.Alias
	}
	t, err := m.reg.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Template{}, n, fmt.Errorf("template %q: %w", n.Identifier(), ErrNotFound)
	}
	return t, n, err
}

// Visible returns a template team may use (its own or a public one) by
// name or ID; ErrNotFound otherwise.
func (m *Manager) Visible(ctx context.Context, team, ref string) (Template, error) {
	t, n, err := m.lookup(ctx, ref)
	if err != nil {
		return Template{}, err
	}
	if !t.VisibleTo(team) {
		return Template{}, fmt.Errorf("template %q: %w", n.Identifier(), ErrNotFound)
	}
	return t, nil
}

// Owned returns a template team owns, by name or ID; ErrNotFound for
// anything else (built-ins included), so other teams' templates stay
// invisible.
func (m *Manager) Owned(ctx context.Context, team, ref string) (Template, error) {
	t, n, err := m.lookup(ctx, ref)
	if err != nil {
		return Template{}, err
	}
	if t.Team != team || t.BuiltIn {
		return Template{}, fmt.Errorf("template %q: %w", n.Identifier(), ErrNotFound)
	}
	return t, nil
}

// AliasInfo answers E2B's alias check: the template with that alias when
// team may use it, ErrForbidden when it exists but is another team's
// private template, ErrNotFound when no template has it.
func (m *Manager) AliasInfo(ctx context.Context, team, alias string) (Template, error) {
	n, err := ParseName(alias)
	if err != nil {
		return Template{}, err
	}
	id, _, err := m.reg.lookupAlias(ctx, n.Identifier())
	if err != nil {
		return Template{}, err
	}
	if id == "" {
		return Template{}, fmt.Errorf("template alias %q: %w", n.Identifier(), ErrNotFound)
	}
	t, err := m.reg.Get(ctx, id)
	if err != nil {
		return Template{}, err
	}
	if !t.VisibleTo(team) {
		return Template{}, fmt.Errorf("template alias %q: %w", n.Identifier(), ErrForbidden)
	}
	return t, nil
}

// List returns the templates team owns, ordered by creation time.
func (m *Manager) List(ctx context.Context, team string) ([]Template, error) {
	out, err := m.reg.List(ctx, team)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Builds returns the build records of a template team owns, newest first.
func (m *Manager) Builds(ctx context.Context, team, templateID string) ([]BuildRecord, error) {
	all, err := m.listBuilds(ctx)
	if err != nil {
		return nil, err
	}
	var out []BuildRecord
	for _, b := range all {
		if b.TemplateID == templateID && b.Team == team {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// Delete removes a template team owns (by name or ID). The caller makes
// sure no sandbox of it runs; its layers go with the next garbage
// collection that finds them unreferenced.
func (m *Manager) Delete(ctx context.Context, team, ref string) (Template, error) {
	t, err := m.Owned(ctx, team, ref)
	if err != nil {
		return Template{}, err
	}
	if err := m.reg.Delete(ctx, t.ID); err != nil {
		return Template{}, err
	}
	m.log.Info("template deleted", "template", t.ID, "name", t.Name(), "team", team)
	m.KickGC()
	return t, nil
}

// SetPublic makes a template team owns public or private.
func (m *Manager) SetPublic(ctx context.Context, team, ref string, public bool) (Template, error) {
	t, err := m.Owned(ctx, team, ref)
	if err != nil {
		return Template{}, err
	}
	return m.reg.Update(ctx, t.ID, func(t *Template) error {
		t.Public = public
		return nil
	})
}

// TagInfo is one tag of a template and the build it points to.
type TagInfo struct {
	Tag       string
	BuildID   string
	CreatedAt time.Time
}

// Tags lists the tags of a template team may use, sorted.
func (m *Manager) Tags(ctx context.Context, team, ref string) ([]TagInfo, error) {
	t, err := m.Visible(ctx, team, ref)
	if err != nil {
		return nil, err
	}
	var out []TagInfo
	for tag, b := range t.TagMap() {
		out = append(out, TagInfo{Tag: tag, BuildID: b.ID, CreatedAt: b.CreatedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tag < out[j].Tag })
	return out, nil
}

// AssignTags points tags of a template team owns to the build that target
// ("name:tag" or "name:buildID"; no tag means the default tag) refers to.
// It returns that build's ID and the normalised tags.
func (m *Manager) AssignTags(ctx context.Context, team, target string, tags []string) (string, []string, error) {
	tags, err := ValidateTags(tags)
	if err != nil {
		return "", nil, err
	}
	if len(tags) == 0 {
		return "", nil, fmt.Errorf("%w: no tags given", ErrInvalid)
	}
	t, err := m.Owned(ctx, team, target)
	if err != nil {
		return "", nil, err
	}
	n, _ := ParseName(target)
	var buildID string
	_, err = m.reg.Update(ctx, t.ID, func(t *Template) error {
		b, ok := t.BuildFor(n.Tag)
		if !ok {
			return fmt.Errorf("template %q has no tag or build %q: %w", n.Identifier(), n.Tag, ErrNotFound)
		}
		buildID = b.ID
		tm := t.TagMap()
		for _, tag := range tags {
			tm[tag] = b
		}
		return t.SetTagMap(tm)
	})
	if err != nil {
		return "", nil, err
	}
	m.KickGC() // moving a tag may orphan a build
	return buildID, tags, nil
}

// RemoveTags removes tags from a template team owns (name without tag).
// The default tag cannot be removed (ErrInvalid); absent tags are ignored.
func (m *Manager) RemoveTags(ctx context.Context, team, name string, tags []string) error {
	tags, err := ValidateTags(tags)
	if err != nil {
		return err
	}
	if len(tags) == 0 {
		return fmt.Errorf("%w: no tags given", ErrInvalid)
	}
	t, err := m.Owned(ctx, team, name)
	if err != nil {
		return err
	}
	_, err = m.reg.Update(ctx, t.ID, func(t *Template) error {
		tm := t.TagMap()
		for _, tag := range tags {
			if tag == DefaultTag {
				return fmt.Errorf("%w: the %q tag cannot be removed", ErrInvalid, DefaultTag)
			}
			delete(tm, tag)
		}
		return t.SetTagMap(tm)
	})
	if err != nil {
		return err
	}
	m.KickGC()
	return nil
}
