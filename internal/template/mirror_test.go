package template

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Host names under the reserved .test domain: no real mirror is named.
const deb822Sample = `Types: deb
# http://snapshot.debian.test/archive/debian/20250520T000000Z
URIs: http://mirror.debian.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.debian.test/debian-security/
Suites: bookworm-security
Components: main
 contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.debian.test/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.debian.test/debian
Suites: bookworm
Components: main
`

const sourcesListSample = `# main mirror
deb http://one.debian.test/debian bookworm main contrib
deb-src http://src.debian.test/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://two.debian.test/debian/ bookworm-updates main # trailing
deb [ arch=amd64 ] http://three.debian.test/debian trixie main

   # indented comment
deb http://sec.debian.test/debian-security bookworm-security main
`

func TestParseDeb822Sources(t *testing.T) {
	got, err := ParseDeb822Sources(strings.NewReader(deb822Sample))
	if err != nil {
		t.Fatal(err)
	}
	want := []AptSource{
		{URI: "http://mirror.debian.test/debian", Suites: []string{"bookworm", "bookworm-updates"}, Components: []string{"main"}},
		{URI: "http://mirror.debian.test/debian-security/", Suites: []string{"bookworm-security"}, Components: []string{"main", "contrib"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseDeb822Sources =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := ParseDeb822Sources(strings.NewReader("Types: deb\nno colon here\n")); err == nil {
		t.Error("a line without a colon parsed")
	}
	if _, err := ParseDeb822Sources(strings.NewReader(" leading continuation\n")); err == nil {
		t.Error("a continuation line outside a field parsed")
	}
}

func TestParseSourcesList(t *testing.T) {
	got, err := ParseSourcesList(strings.NewReader(sourcesListSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []AptSource{
		{URI: "http://one.debian.test/debian", Suites: []string{"bookworm"}, Components: []string{"main", "contrib"}},
		{URI: "http://two.debian.test/debian/", Suites: []string{"bookworm-updates"}, Components: []string{"main"}},
		{URI: "http://three.debian.test/debian", Suites: []string{"trixie"}, Components: []string{"main"}},
		{URI: "http://sec.debian.test/debian-security", Suites: []string{"bookworm-security"}, Components: []string{"main"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseSourcesList =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := ParseSourcesList(strings.NewReader("deb http://x.test/debian\n")); err == nil {
		t.Error("a deb line without suite parsed")
	}
}

func TestMirrorFor(t *testing.T) {
	srcs, _ := ParseDeb822Sources(strings.NewReader(deb822Sample))
	if m, err := MirrorFor(srcs, "bookworm"); err != nil || m != "http://mirror.debian.test/debian" {
		t.Errorf("MirrorFor(bookworm) = %q, %v", m, err)
	}
	// A trixie host: its plain release mirror also carries bookworm.
	trixie := []AptSource{
		{URI: "http://sec.debian.test/debian-security", Suites: []string{"trixie-security"}},
		{URI: "cdrom:[Debian]/", Suites: []string{"trixie"}},
		{URI: "http://mirror.debian.test/debian/", Suites: []string{"trixie", "trixie-updates"}},
	}
	if m, err := MirrorFor(trixie, "bookworm"); err != nil || m != "http://mirror.debian.test/debian" {
		t.Errorf("MirrorFor on a trixie host = %q, %v", m, err)
	}
	if m, err := MirrorFor(trixie[:1], "bookworm"); err == nil {
		t.Errorf("MirrorFor with only a security source = %q, want an error", m)
	}
	if _, err := MirrorFor(nil, "bookworm"); err == nil {
		t.Error("MirrorFor(nil) did not fail")
	}
}

func TestReadAptSourcesAndOverride(t *testing.T) {
	apt := t.TempDir()
	if err := os.MkdirAll(filepath.Join(apt, "sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(rel, data string) {
		if err := os.WriteFile(filepath.Join(apt, rel), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sources.list.d/debian.sources", deb822Sample)
	write("sources.list.d/other.list.disabled", "deb http://ignored.debian.test/debian bookworm main\n")
	write("sources.list.d/extra.list", "deb http://extra.debian.test/debian bookworm main\n")
	srcs, err := ReadAptSources(apt)
	if err != nil {
		t.Fatal(err)
	}
	if len(srcs) != 3 || srcs[0].URI != "http://extra.debian.test/debian" {
		t.Fatalf("ReadAptSources = %+v", srcs)
	}

	m, err := New(Config{DataDir: t.TempDir(), Store: newMemStore(), AptDir: apt})
	if err != nil {
		t.Fatal(err)
	}
	if mir, _, err := m.mirror(); err != nil || mir != "http://extra.debian.test/debian" {
		t.Errorf("mirror from apt = %q, %v", mir, err)
	}
	m.cfg.Mirror = "http://override.debian.test/debian/"
	if mir, _, err := m.mirror(); err != nil || mir != "http://override.debian.test/debian" {
		t.Errorf("mirror override = %q, %v", mir, err)
	}
	m.cfg.Mirror, m.cfg.AptDir = "", t.TempDir() // no sources at all
	if mir, _, err := m.mirror(); err == nil {
		t.Errorf("mirror without apt sources = %q, want an error", mir)
	}
}

func TestTemplateSources(t *testing.T) {
	srcs, _ := ParseDeb822Sources(strings.NewReader(deb822Sample))
	got := deb822(sourcesFor(srcs, "bookworm", "http://mirror.debian.test/debian"))
	want := `Types: deb
URIs: http://mirror.debian.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.debian.test/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`
	if got != want {
		t.Fatalf("template sources:\n%s\nwant:\n%s", got, want)
	}
	parsed, err := ParseDeb822Sources(strings.NewReader(got))
	if err != nil || len(parsed) != 2 {
		t.Fatalf("rendered sources do not parse back: %+v, %v", parsed, err)
	}
}

func TestRecipeDigest(t *testing.T) {
	r := baseRecipe()
	d := r.digest()
	if !ValidDigest(d) || d != baseRecipe().digest() {
		t.Fatalf("recipe digest %q not stable", d)
	}
	r2 := baseRecipe()
	r2.Packages = append(append([]string(nil), r2.Packages...), "vim")
	r3 := baseRecipe()
	r3.Version++
	r4 := baseRecipe()
	r4.Setup += "true\n"
	for i, x := range []recipe{r2, r3, r4} {
		if x.digest() == d {
			t.Errorf("changed recipe %d has the same digest", i)
		}
	}
}
