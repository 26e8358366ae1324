package template

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultTag is the tag a name without ":tag" refers to.
const DefaultTag = "default"

var (
	identRe = regexp.MustCompile(`^[a-z0-9_-]+$`)
	tagRe   = regexp.MustCompile(`^[a-z0-9_.-]+$`)
	uuidRe  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// Name is a parsed template reference: "[namespace/]alias[:tag]", where the
// alias part may also be a template ID.
type Name struct {
	// Namespace is the part before "/", empty when absent.
	Namespace string
	// Alias is the alias or template ID.
	Alias string
	// Tag is the tag, DefaultTag when none was given.
	Tag string
	// TagSet reports whether the reference spelled a tag other than the
	// default one.
	TagSet bool
}

// Identifier is "namespace/alias", or "alias" without a namespace.
func (n Name) Identifier() string {
	if n.Namespace != "" {
		return n.Namespace + "/" + n.Alias
	}
	return n.Alias
}

// String is the full reference, "identifier:tag".
func (n Name) String() string {
	return n.Identifier() + ":" + n.Tag
}

// ParseName parses and normalises (trims, lower-cases) a template reference
// "[namespace/]alias[:tag]" with E2B's rules: namespace and alias match
// ^[a-z0-9-_]+$, the tag ^[a-z0-9-_.]+$; a missing tag means DefaultTag.
func ParseName(ref string) (Name, error) {
	s := strings.ToLower(strings.TrimSpace(ref))
	if s == "" {
		return Name{}, fmt.Errorf("%w: empty template name", ErrInvalid)
	}
	ident, tag, hasTag := strings.Cut(s, ":")
	n := Name{Tag: DefaultTag}
	if hasTag {
		tag = strings.TrimSpace(tag)
		if !tagRe.MatchString(tag) {
			return Name{}, fmt.Errorf("%w: tag %q of %q must match %s", ErrInvalid, tag, ref, tagRe)
		}
		if tag != DefaultTag {
			n.Tag, n.TagSet = tag, true
		}
	}
	ns, alias, hasNS := strings.Cut(ident, "/")
	if hasNS {
		ns = strings.TrimSpace(ns)
		if !identRe.MatchString(ns) {
			return Name{}, fmt.Errorf("%w: namespace %q of %q must match %s", ErrInvalid, ns, ref, identRe)
		}
		n.Namespace = ns
	} else {
		alias = ns
	}
	alias = strings.TrimSpace(alias)
	if !identRe.MatchString(alias) {
		return Name{}, fmt.Errorf("%w: template name %q of %q must match %s", ErrInvalid, alias, ref, identRe)
	}
	n.Alias = alias
	return n, nil
}

// ValidateTags normalises tags (trim, lower-case), checks each against
// ^[a-z0-9-_.]+$ (and that it is not a UUID, as E2B requires) and returns
// them deduplicated in their first-seen order.
func ValidateTags(tags []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, raw := range tags {
		t := strings.ToLower(strings.TrimSpace(raw))
		if !tagRe.MatchString(t) {
			return nil, fmt.Errorf("%w: tag %q must match %s", ErrInvalid, raw, tagRe)
		}
		if uuidRe.MatchString(t) {
			return nil, fmt.Errorf("%w: tag %q must not be a UUID", ErrInvalid, raw)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}
