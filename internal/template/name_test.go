package template

import (
	"errors"
	"testing"
)

func TestParseName(t *testing.T) {
	for _, c := range []struct {
		in                    string
		ns, alias, tag, ident string
		tagSet                bool
	}{
		{in: "base", alias: "base", tag: "default", ident: "base"},
		{in: "  Base  ", alias: "base", tag: "default", ident: "base"},
		{in: "my-app:v1", alias: "my-app", tag: "v1", ident: "my-app", tagSet: true},
		{in: "my_app:v1.2-rc_3", alias: "my_app", tag: "v1.2-rc_3", ident: "my_app", tagSet: true},
		{in: "my-app:default", alias: "my-app", tag: "default", ident: "my-app"},
		{in: "my-app:DEFAULT", alias: "my-app", tag: "default", ident: "my-app"},
		{in: "team-x/my-app", ns: "team-x", alias: "my-app", tag: "default", ident: "team-x/my-app"},
		{in: "Team-X/My-App:Prod", ns: "team-x", alias: "my-app", tag: "prod", ident: "team-x/my-app", tagSet: true},
		{in: "rki5dems9wqfm4r03t7g", alias: "rki5dems9wqfm4r03t7g", tag: "default", ident: "rki5dems9wqfm4r03t7g"},
	} {
		n, err := ParseName(c.in)
		if err != nil {
			t.Errorf("ParseName(%q): %v", c.in, err)
			continue
		}
		if n.Namespace != c.ns || n.Alias != c.alias || n.Tag != c.tag || n.TagSet != c.tagSet || n.Identifier() != c.ident {
			t.Errorf("ParseName(%q) = %+v (identifier %q)", c.in, n, n.Identifier())
		}
		if n.String() != c.ident+":"+c.tag {
			t.Errorf("ParseName(%q).String() = %q", c.in, n.String())
		}
	}
	for _, bad := range []string{"", "   ", ":v1", "app:", "app:v 1", "app:v/1", "app:t:t", "a.b", "a/b/c", "/app", "ns/", "app!", "ns/app:!", "ünï"} {
		if n, err := ParseName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseName(%q) = %+v, %v; want ErrInvalid", bad, n, err)
		}
	}
}

func TestValidateTags(t *testing.T) {
	got, err := ValidateTags([]string{"Prod", "v1.0", "prod", " latest "})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"prod", "v1.0", "latest"}
	if len(got) != len(want) {
		t.Fatalf("ValidateTags = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ValidateTags = %v, want %v", got, want)
		}
	}
	for _, bad := range [][]string{{"a b"}, {""}, {"x/y"}, {"550e8400-e29b-41d4-a716-446655440000"}} {
		if _, err := ValidateTags(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateTags(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != 20 || !templateIDRe.MatchString(id) {
			t.Fatalf("NewID() = %q", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}
