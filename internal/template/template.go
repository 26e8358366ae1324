// Package template owns sandbox templates: the registry of template records
// and their names (aliases, tags) in the store, the content-addressed layer
// store on disk (read-only directory trees used as overlayfs lower dirs), the
// built-in `base` template, a Debian root filesystem built with debootstrap
// on first use and cached machine-wide, and the built-in
// `code-interpreter-v1` template, built on base by the template builder and
// cached machine-wide too.
package template

import (
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"time"
)

// Errors returned (wrapped) by the registry, so callers can map them to API
// statuses.
var (
	// ErrNotFound: no template (or no such tag of it) under that name or ID.
	ErrNotFound = errors.New("template not found")
	// ErrForbidden: the template exists but is private to another team.
	ErrForbidden = errors.New("template belongs to another team")
	// ErrInvalid: a malformed name, tag, ID or template field.
	ErrInvalid = errors.New("invalid template")
	// ErrExists: a template with that ID already exists.
	ErrExists = errors.New("template already exists")
	// ErrAliasTaken: an alias is already used by another template.
	ErrAliasTaken = errors.New("template alias already taken")
)

// E2B-like defaults for template resources and identity.
const (
	DefaultUser       = "user"
	DefaultWorkdir    = "/home/user"
	DefaultCPUCount   = 2
	DefaultMemoryMB   = 512
	DefaultDiskSizeMB = 10240
)

// Template is one template record: its identity (ID, aliases, team,
// visibility) and its builds. The build fields at the top level (Layers,
// StartCmd, ..., BuildID) are the build the default tag points to; Tags are
// the other tags pointing to that build; Tagged maps the remaining tags to
// other builds (see TagMap).
type Template struct {
	// ID is the opaque template ID (E2B style: 20 characters [a-z0-9]).
	ID string `json:"id"`
	// Aliases are the template's names, each "alias" or "namespace/alias";
	// unique across all templates.
	Aliases []string `json:"aliases,omitempty"`
	// Tags the template answers to besides the implicit DefaultTag.
	Tags []string `json:"tags,omitempty"`
	// Team is the owning team's ID; empty for built-in templates.
	Team string `json:"team,omitempty"`
	// BuiltIn marks templates Paddock creates itself (such as base).
	BuiltIn bool `json:"builtIn,omitempty"`
	// Public templates are usable by every team.
	Public bool `json:"public"`
	// Layers are layer digests, lowest first (see Layers.Path).
	Layers []string `json:"layers"`
	// StartCmd runs when a sandbox starts; ReadyCmd exits 0 once it is ready.
	StartCmd string `json:"startCmd,omitempty"`
	ReadyCmd string `json:"readyCmd,omitempty"`
	// User and Workdir are the defaults of processes in the sandbox.
	User    string `json:"user"`
	Workdir string `json:"workdir"`
	// Env is added to every process's environment.
	Env map[string]string `json:"env,omitempty"`
	// Resources of sandboxes created from the template.
	CPUCount   int `json:"cpuCount"`
	MemoryMB   int `json:"memoryMB"`
	DiskSizeMB int `json:"diskSizeMB"`
	// EnvdVersion is the envd API level of the template; empty means the envd
	// built into the running binary (which every sandbox runs).
	EnvdVersion string `json:"envdVersion,omitempty"`
	// BuildID identifies the build that produced the layers.
	BuildID string `json:"buildID,omitempty"`
	// BuiltAt is when that build finished.
	BuiltAt time.Time `json:"builtAt,omitempty"`
	// Tagged maps tags to builds other than the default tag's.
	Tagged map[string]Build `json:"tagged,omitempty"`
	// Recipe is the digest of the recipe a built-in template was built from.
	Recipe    string    `json:"recipe,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Build is one finished build of a template: what a sandbox created from a
// tag pointing to it starts with.
type Build struct {
	ID          string            `json:"id"`
	Layers      []string          `json:"layers"`
	StartCmd    string            `json:"startCmd,omitempty"`
	ReadyCmd    string            `json:"readyCmd,omitempty"`
	User        string            `json:"user"`
	Workdir     string            `json:"workdir"`
	Env         map[string]string `json:"env,omitempty"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int               `json:"memoryMB"`
	DiskSizeMB  int               `json:"diskSizeMB"`
	EnvdVersion string            `json:"envdVersion,omitempty"`
	CreatedAt   time.Time         `json:"createdAt"`
}

// DefaultBuild is the build the default tag points to.
func (t *Template) DefaultBuild() Build {
	at := t.BuiltAt
	if at.IsZero() {
		at = t.UpdatedAt
	}
	return Build{
		ID: t.BuildID, Layers: slices.Clone(t.Layers), StartCmd: t.StartCmd, ReadyCmd: t.ReadyCmd,
		User: t.User, Workdir: t.Workdir, Env: maps.Clone(t.Env),
		CPUCount: t.CPUCount, MemoryMB: t.MemoryMB, DiskSizeMB: t.DiskSizeMB,
		EnvdVersion: t.EnvdVersion, CreatedAt: at,
	}
}

// setDefault makes b the build of the default tag (top-level fields).
func (t *Template) setDefault(b Build) {
	t.BuildID, t.Layers, t.StartCmd, t.ReadyCmd = b.ID, slices.Clone(b.Layers), b.StartCmd, b.ReadyCmd
	t.User, t.Workdir, t.Env = b.User, b.Workdir, maps.Clone(b.Env)
	t.CPUCount, t.MemoryMB, t.DiskSizeMB = b.CPUCount, b.MemoryMB, b.DiskSizeMB
	t.EnvdVersion, t.BuiltAt = b.EnvdVersion, b.CreatedAt
}

// TagMap returns every tag of the template with the build it points to,
// DefaultTag included.
func (t *Template) TagMap() map[string]Build {
	def := t.DefaultBuild()
	m := map[string]Build{DefaultTag: def}
	for _, tag := range t.Tags {
		m[tag] = def
	}
	for tag, b := range t.Tagged {
		m[tag] = b
	}
	return m
}

// SetTagMap replaces the template's builds by m (tag → build), which must
// have DefaultTag: it becomes the top-level build; tags pointing to the same
// build ID go to Tags, the others to Tagged.
func (t *Template) SetTagMap(m map[string]Build) error {
	def, ok := m[DefaultTag]
	if !ok {
		return fmt.Errorf("%w: template %s: the %q tag cannot be removed", ErrInvalid, t.ID, DefaultTag)
	}
	t.setDefault(def)
	t.Tags, t.Tagged = nil, nil
	tags := make([]string, 0, len(m))
	for tag := range m {
		tags = append(tags, tag)
	}
	sort.Strings(tags)
	for _, tag := range tags {
		b := m[tag]
		switch {
		case tag == DefaultTag:
		case b.ID == def.ID:
			t.Tags = append(t.Tags, tag)
		default:
			if t.Tagged == nil {
				t.Tagged = map[string]Build{}
			}
			t.Tagged[tag] = b
		}
	}
	return nil
}

// BuildFor returns the build a tag (or a build ID) refers to.
func (t *Template) BuildFor(tag string) (Build, bool) {
	if tag == "" {
		tag = DefaultTag
	}
	m := t.TagMap()
	if b, ok := m[tag]; ok {
		return b, true
	}
	for _, b := range m {
		if b.ID != "" && b.ID == tag {
			return b, true
		}
	}
	return Build{}, false
}

// At returns the template as seen through tag: the top-level build fields
// are those of the build the tag (or build ID) points to.
func (t *Template) At(tag string) (Template, bool) {
	b, ok := t.BuildFor(tag)
	if !ok {
		return Template{}, false
	}
	out := *t
	out.setDefault(b)
	return out, true
}

// HasTag reports whether the template answers to tag (DefaultTag always)
// or has a build with that ID.
func (t *Template) HasTag(tag string) bool {
	_, ok := t.BuildFor(tag)
	return ok
}

// AllLayers returns the digests of the layers of every build of the
// template.
func (t *Template) AllLayers() []string {
	out := slices.Clone(t.Layers)
	for _, b := range t.Tagged {
		out = append(out, b.Layers...)
	}
	return out
}

// VisibleTo reports whether team may use the template.
func (t *Template) VisibleTo(team string) bool {
	return t.Public || (t.Team != "" && t.Team == team)
}

// Name is the template's first alias, or its ID when it has none.
func (t *Template) Name() string {
	if len(t.Aliases) > 0 {
		return t.Aliases[0]
	}
	return t.ID
}

// applyDefaults fills zero fields with the E2B-like defaults.
func (t *Template) applyDefaults() {
	if t.User == "" {
		t.User = DefaultUser
	}
	if t.Workdir == "" {
		t.Workdir = DefaultWorkdir
	}
	if t.CPUCount == 0 {
		t.CPUCount = DefaultCPUCount
	}
	if t.MemoryMB == 0 {
		t.MemoryMB = DefaultMemoryMB
	}
	if t.DiskSizeMB == 0 {
		t.DiskSizeMB = DefaultDiskSizeMB
	}
}

var templateIDRe = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

// validate checks a template after defaults are applied.
func (t *Template) validate() error {
	if !templateIDRe.MatchString(t.ID) {
		return fmt.Errorf("%w: ID %q must be 1-64 characters [a-z0-9]", ErrInvalid, t.ID)
	}
	seen := map[string]bool{}
	for _, a := range t.Aliases {
		n, err := ParseName(a)
		if err != nil {
			return err
		}
		if n.Identifier() != a {
			return fmt.Errorf("%w: alias %q must be a normalised name without tag (%q)", ErrInvalid, a, n.Identifier())
		}
		if reservedAlias(a) && !t.BuiltIn {
			return fmt.Errorf("%w: alias %q is reserved for a built-in template", ErrInvalid, a)
		}
		if a == t.ID {
			return fmt.Errorf("%w: alias %q equals the template's ID", ErrInvalid, a)
		}
		if seen[a] {
			return fmt.Errorf("%w: alias %q listed twice", ErrInvalid, a)
		}
		seen[a] = true
	}
	if _, err := ValidateTags(t.Tags); err != nil {
		return err
	}
	if t.Team == "" && !t.BuiltIn {
		return fmt.Errorf("%w: template %s has no owning team and is not built in", ErrInvalid, t.ID)
	}
	if len(t.Layers) == 0 {
		return fmt.Errorf("%w: template %s has no layers", ErrInvalid, t.ID)
	}
	for _, d := range t.AllLayers() {
		if !ValidDigest(d) {
			return fmt.Errorf("%w: layer digest %q is not 64 lowercase hex characters", ErrInvalid, d)
		}
	}
	for tag, b := range t.Tagged {
		if _, err := ValidateTags([]string{tag}); err != nil || tag == DefaultTag || slices.Contains(t.Tags, tag) {
			return fmt.Errorf("%w: template %s: tagged build under invalid or duplicate tag %q", ErrInvalid, t.ID, tag)
		}
		if len(b.Layers) == 0 || b.Workdir == "" || b.Workdir[0] != '/' || b.User == "" {
			return fmt.Errorf("%w: template %s: build %s of tag %q has no layers, user or absolute workdir", ErrInvalid, t.ID, b.ID, tag)
		}
	}
	if t.CPUCount < 0 || t.MemoryMB < 0 || t.DiskSizeMB < 0 {
		return fmt.Errorf("%w: negative resources (cpu %d, memory %d MB, disk %d MB)", ErrInvalid, t.CPUCount, t.MemoryMB, t.DiskSizeMB)
	}
	if t.Workdir[0] != '/' {
		return fmt.Errorf("%w: workdir %q is not absolute", ErrInvalid, t.Workdir)
	}
	return nil
}

// reservedAlias reports whether a is the name of a built-in template.
func reservedAlias(a string) bool {
	return a == BaseAlias || a == CodeInterpreterAlias
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// NewID returns a random template ID: 20 characters [a-z0-9], like E2B's.
func NewID() string {
	return randomString(20)
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return b
}

// randomString returns n characters of idAlphabet, uniformly from crypto/rand.
func randomString(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
		}
		for _, b := range buf {
			// 252 = 7*36: reject the tail so every character is equally likely.
			if b < 252 && len(out) < n {
				out = append(out, idAlphabet[int(b)%len(idAlphabet)])
			}
		}
	}
	return string(out)
}
