package template

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/paddockhq/paddock/internal/store"
)

// Store collections the registry owns.
const (
	// TemplatesCollection holds one JSON Template per template ID.
	TemplatesCollection = "templates"
	// AliasesCollection maps each alias ("alias" or "namespace/alias") to
	// {"templateID": ...}; records change atomically with their template.
	AliasesCollection = "template_aliases"
)

// maxAttempts bounds optimistic-concurrency retries.
const maxAttempts = 100

// Registry stores template records and their alias index in a store.Store.
// It is safe for concurrent use, also by several processes sharing a store.
type Registry struct {
	s   store.Store
	now func() time.Time
}

// NewRegistry returns a registry over s.
func NewRegistry(s store.Store) *Registry {
	return &Registry{s: s, now: func() time.Time { return time.Now().UTC() }}
}

type aliasRecord struct {
	TemplateID string `json:"templateID"`
}

func aliasValue(id string) []byte {
	b, _ := json.Marshal(aliasRecord{TemplateID: id}) // cannot fail
	return b
}

// Get returns the template with that ID; ErrNotFound when absent.
func (r *Registry) Get(ctx context.Context, id string) (Template, error) {
	t, _, err := r.get(ctx, id)
	return t, err
}

func (r *Registry) get(ctx context.Context, id string) (Template, []byte, error) {
	if id == "" {
		return Template{}, nil, fmt.Errorf("get template: %w: empty ID", ErrInvalid)
	}
	raw, err := r.s.Get(ctx, TemplatesCollection, id)
	if errors.Is(err, store.ErrNotFound) {
		return Template{}, nil, fmt.Errorf("template %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Template{}, nil, fmt.Errorf("get template %s: %w", id, err)
	}
	var t Template
	if err := json.Unmarshal(raw, &t); err != nil {
		return Template{}, nil, fmt.Errorf("decode template %s: %w", id, err)
	}
	return t, raw, nil
}

// lookupAlias returns the template ID an alias points to, or "" when the
// alias is unused.
func (r *Registry) lookupAlias(ctx context.Context, alias string) (string, []byte, error) {
	raw, err := r.s.Get(ctx, AliasesCollection, alias)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("look up template alias %s: %w", alias, err)
	}
	var a aliasRecord
	if err := json.Unmarshal(raw, &a); err != nil {
		return "", nil, fmt.Errorf("decode template alias %s: %w", alias, err)
	}
	return a.TemplateID, raw, nil
}

// Resolve returns the template a reference names, as seen by team. The
// reference is "[namespace/]alias[:tag]" or "templateID[:tag]"; aliases win
// over IDs. It fails with ErrInvalid for a malformed reference, ErrNotFound
// when no template (or not that tag) exists, and ErrForbidden when the
// template is private to another team.
func (r *Registry) Resolve(ctx context.Context, ref, team string) (Template, error) {
	n, err := ParseName(ref)
	if err != nil {
		return Template{}, fmt.Errorf("resolve template: %w", err)
	}
	id, _, err := r.lookupAlias(ctx, n.Identifier())
	if err != nil {
		return Template{}, err
	}
	if id == "" {
		if n.Namespace != "" {
			return Template{}, fmt.Errorf("template %q: %w", n.Identifier(), ErrNotFound)
		}
		id = n.Alias
	}
	t, _, err := r.get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Template{}, fmt.Errorf("template %q: %w", n.Identifier(), ErrNotFound)
	}
	if err != nil {
		return Template{}, err
	}
	if !t.VisibleTo(team) {
		return Template{}, fmt.Errorf("template %q: %w", n.Identifier(), ErrForbidden)
	}
	at, ok := t.At(n.Tag)
	if !ok {
		return Template{}, fmt.Errorf("template %q has no tag %q: %w", n.Identifier(), n.Tag, ErrNotFound)
	}
	return at, nil
}

// normalise applies defaults, normalises tags and validates t.
func normalise(t *Template) error {
	t.applyDefaults()
	tags, err := ValidateTags(t.Tags)
	if err != nil {
		return err
	}
	t.Tags = tags
	return t.validate()
}

// Create stores a new template with its aliases, atomically. An empty ID is
// generated; zero fields get the defaults (user "user", workdir /home/user,
// 2 CPUs, 512 MB). It fails with ErrExists when the ID is taken and
// ErrAliasTaken when an alias is, leaving the store unchanged.
func (r *Registry) Create(ctx context.Context, t Template) (Template, error) {
	if t.ID == "" {
		t.ID = NewID()
	}
	if err := normalise(&t); err != nil {
		return Template{}, fmt.Errorf("create template %s: %w", t.ID, err)
	}
	now := r.now()
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	t.UpdatedAt = now
	raw, err := json.Marshal(t)
	if err != nil {
		return Template{}, fmt.Errorf("encode template %s: %w", t.ID, err)
	}
	ops := []store.Op{
		{Collection: TemplatesCollection, Key: t.ID, Value: raw, Cond: store.IfAbsent},
		// No alias may equal the new ID (it would shadow it in Resolve).
		{Collection: AliasesCollection, Key: t.ID, Cond: store.IfAbsent},
	}
	ops = append(ops, addAliasOps(t.ID, t.Aliases)...)
	err = r.s.Apply(ctx, ops...)
	if errors.Is(err, store.ErrConflict) {
		return Template{}, r.explainConflict(ctx, t.ID, t.Aliases, true)
	}
	if err != nil {
		return Template{}, fmt.Errorf("create template %s: %w", t.ID, err)
	}
	return t, nil
}

// addAliasOps claims aliases for id: each alias record must be absent, and
// no template may have the alias as its ID.
func addAliasOps(id string, aliases []string) []store.Op {
	var ops []store.Op
	for _, a := range aliases {
		ops = append(ops,
			store.Op{Collection: AliasesCollection, Key: a, Value: aliasValue(id), Cond: store.IfAbsent},
			store.Op{Collection: TemplatesCollection, Key: a, Cond: store.IfAbsent})
	}
	return ops
}

// dropAliasOps releases aliases that currently point to id. Records that
// point elsewhere (or are gone) are left alone.
func (r *Registry) dropAliasOps(ctx context.Context, id string, aliases []string) ([]store.Op, error) {
	var ops []store.Op
	for _, a := range aliases {
		owner, raw, err := r.lookupAlias(ctx, a)
		if err != nil {
			return nil, err
		}
		if owner == id {
			ops = append(ops, store.Op{Collection: AliasesCollection, Key: a, Cond: store.IfEqual, Old: raw})
		}
	}
	return ops, nil
}

// explainConflict turns a failed claim into ErrExists or ErrAliasTaken.
func (r *Registry) explainConflict(ctx context.Context, id string, aliases []string, creating bool) error {
	if creating {
		if _, err := r.s.Get(ctx, TemplatesCollection, id); err == nil {
			return fmt.Errorf("create template %s: %w", id, ErrExists)
		}
		if owner, _, err := r.lookupAlias(ctx, id); err == nil && owner != "" {
			return fmt.Errorf("create template %s: the ID is another template's alias: %w", id, ErrExists)
		}
	}
	for _, a := range aliases {
		if owner, _, err := r.lookupAlias(ctx, a); err == nil && owner != "" && owner != id {
			return fmt.Errorf("template %s: alias %q is used by another template: %w", id, a, ErrAliasTaken)
		}
		if _, err := r.s.Get(ctx, TemplatesCollection, a); err == nil && a != id {
			return fmt.Errorf("template %s: alias %q is another template's ID: %w", id, a, ErrAliasTaken)
		}
	}
	return fmt.Errorf("template %s: %w", id, store.ErrConflict)
}

// Update changes a template with fn, atomically with its alias index, and
// retries when the record changed concurrently. fn may change anything but
// ID and CreatedAt; its error aborts the update and is returned as is.
func (r *Registry) Update(ctx context.Context, id string, fn func(*Template) error) (Template, error) {
	for attempt := 0; ; attempt++ {
		cur, oldRaw, err := r.get(ctx, id)
		if err != nil {
			return Template{}, err
		}
		next := cur
		next.Aliases = slices.Clone(cur.Aliases)
		next.Tags = slices.Clone(cur.Tags)
		next.Layers = slices.Clone(cur.Layers)
		if cur.Tagged != nil {
			next.Tagged = make(map[string]Build, len(cur.Tagged))
			for k, b := range cur.Tagged {
				b.Layers = slices.Clone(b.Layers)
				b.Env = maps.Clone(b.Env)
				next.Tagged[k] = b
			}
		}
		if cur.Env != nil {
			next.Env = make(map[string]string, len(cur.Env))
			for k, v := range cur.Env {
				next.Env[k] = v
			}
		}
		if err := fn(&next); err != nil {
			return Template{}, err
		}
		next.ID, next.CreatedAt = cur.ID, cur.CreatedAt
		if err := normalise(&next); err != nil {
			return Template{}, fmt.Errorf("update template %s: %w", id, err)
		}
		next.UpdatedAt = r.now()
		raw, err := json.Marshal(next)
		if err != nil {
			return Template{}, fmt.Errorf("encode template %s: %w", id, err)
		}
		ops := []store.Op{{Collection: TemplatesCollection, Key: id, Value: raw, Cond: store.IfEqual, Old: oldRaw}}
		added := diff(next.Aliases, cur.Aliases)
		ops = append(ops, addAliasOps(id, added)...)
		drop, err := r.dropAliasOps(ctx, id, diff(cur.Aliases, next.Aliases))
		if err != nil {
			return Template{}, err
		}
		ops = append(ops, drop...)
		err = r.s.Apply(ctx, ops...)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return Template{}, fmt.Errorf("update template %s: %w", id, err)
		}
		// Retry if the template itself changed; otherwise an alias was taken.
		now, nowErr := r.s.Get(ctx, TemplatesCollection, id)
		if nowErr == nil && bytes.Equal(now, oldRaw) {
			if e := r.explainConflict(ctx, id, added, false); errors.Is(e, ErrAliasTaken) || attempt >= maxAttempts {
				return Template{}, e
			}
		}
		if attempt >= maxAttempts {
			return Template{}, fmt.Errorf("update template %s: %w", id, err)
		}
		if err := ctx.Err(); err != nil {
			return Template{}, err
		}
	}
}

// diff returns the elements of a that are not in b.
func diff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// Delete removes a template and its alias records atomically; ErrNotFound
// when absent. Its layers stay on disk (a garbage collector removes layers
// no template references).
func (r *Registry) Delete(ctx context.Context, id string) error {
	for attempt := 0; ; attempt++ {
		cur, raw, err := r.get(ctx, id)
		if err != nil {
			return err
		}
		ops := []store.Op{{Collection: TemplatesCollection, Key: id, Cond: store.IfEqual, Old: raw}}
		drop, err := r.dropAliasOps(ctx, id, cur.Aliases)
		if err != nil {
			return err
		}
		ops = append(ops, drop...)
		err = r.s.Apply(ctx, ops...)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= maxAttempts {
			return fmt.Errorf("delete template %s: %w", id, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// List returns the templates team owns, ordered by ID.
func (r *Registry) List(ctx context.Context, team string) ([]Template, error) {
	all, err := r.All(ctx)
	if err != nil {
		return nil, err
	}
	var out []Template
	for _, t := range all {
		if t.Team == team && !t.BuiltIn {
			out = append(out, t)
		}
	}
	return out, nil
}

// All returns every template, built-ins included, ordered by ID.
func (r *Registry) All(ctx context.Context) ([]Template, error) {
	recs, err := r.s.List(ctx, TemplatesCollection)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	out := make([]Template, 0, len(recs))
	for _, rec := range recs {
		var t Template
		if err := json.Unmarshal(rec.Value, &t); err != nil {
			return nil, fmt.Errorf("decode template %s: %w", rec.Key, err)
		}
		out = append(out, t)
	}
	return out, nil
}
