package template

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// AptSource is one "deb" source of an apt configuration.
type AptSource struct {
	URI        string
	Suites     []string
	Components []string
}

// ReadAptSources reads the "deb" sources of the apt configuration in aptDir
// (normally /etc/apt): sources.list and sources.list.d/*.list in the
// one-line format, sources.list.d/*.sources in the deb822 format. Disabled
// stanzas and deb-src entries are skipped.
func ReadAptSources(aptDir string) ([]AptSource, error) {
	var out []AptSource
	files := []string{filepath.Join(aptDir, "sources.list")}
	listD, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*.list"))
	sourcesD, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*.sources"))
	files = append(files, listD...)
	files = append(files, sourcesD...)
	for _, f := range files {
		data, err := os.Open(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read apt sources: %w", err)
		}
		var srcs []AptSource
		if strings.HasSuffix(f, ".sources") {
			srcs, err = ParseDeb822Sources(data)
		} else {
			srcs, err = ParseSourcesList(data)
		}
		data.Close()
		if err != nil {
			return nil, fmt.Errorf("read apt sources %s: %w", f, err)
		}
		out = append(out, srcs...)
	}
	return out, nil
}

// ParseSourcesList parses apt's one-line format:
// "deb [options] uri suite [component...]".
func ParseSourcesList(r io.Reader) ([]AptSource, error) {
	var out []AptSource
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		f := strings.Fields(s)
		if len(f) == 0 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if len(f) > 0 && strings.HasPrefix(f[0], "[") {
			// Options run up to the field ending with "]".
			for len(f) > 0 {
				end := strings.HasSuffix(f[0], "]")
				f = f[1:]
				if end {
					break
				}
			}
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: deb entry without URI and suite", line)
		}
		out = append(out, AptSource{URI: f[0], Suites: []string{f[1]}, Components: f[2:]})
	}
	return out, sc.Err()
}

// ParseDeb822Sources parses apt's deb822 format (stanzas of "Field: value"
// lines separated by blank lines).
func ParseDeb822Sources(r io.Reader) ([]AptSource, error) {
	var out []AptSource
	fields := map[string]string{}
	last := ""
	flush := func() {
		defer func() { fields, last = map[string]string{}, "" }()
		if len(fields) == 0 {
			return
		}
		if en := strings.ToLower(fields["enabled"]); en == "no" || en == "false" {
			return
		}
		if !slices.Contains(strings.Fields(fields["types"]), "deb") {
			return
		}
		uris := strings.Fields(fields["uris"])
		suites := strings.Fields(fields["suites"])
		if len(uris) == 0 || len(suites) == 0 {
			return
		}
		comps := strings.Fields(fields["components"])
		for _, u := range uris {
			out = append(out, AptSource{URI: u, Suites: suites, Components: comps})
		}
	}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		switch {
		case strings.TrimSpace(s) == "":
			flush()
		case strings.HasPrefix(s, "#"):
		case s[0] == ' ' || s[0] == '\t':
			if last == "" {
				return nil, fmt.Errorf("line %d: continuation line outside a field", line)
			}
			fields[last] += " " + strings.TrimSpace(s)
		default:
			k, v, ok := strings.Cut(s, ":")
			if !ok {
				return nil, fmt.Errorf("line %d: %q is not a \"Field: value\" line", line, s)
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return out, nil
}

// usableMirror reports whether debootstrap can fetch from uri.
func usableMirror(uri string) bool {
	for _, p := range []string{"http://", "https://", "file:/", "ftp://"} {
		if strings.HasPrefix(uri, p) {
			return true
		}
	}
	return false
}

// MirrorFor picks the Debian mirror for suite among sources: the first one
// that lists suite itself; failing that, the first one listing a plain
// release suite (no "-updates"/"-security" suffix), since a Debian mirror
// carries every release.
func MirrorFor(sources []AptSource, suite string) (string, error) {
	for _, s := range sources {
		if usableMirror(s.URI) && slices.Contains(s.Suites, suite) {
			return strings.TrimRight(s.URI, "/"), nil
		}
	}
	for _, s := range sources {
		if !usableMirror(s.URI) {
			continue
		}
		for _, su := range s.Suites {
			if !strings.Contains(su, "-") && !strings.Contains(su, "/") {
				return strings.TrimRight(s.URI, "/"), nil
			}
		}
	}
	return "", fmt.Errorf("no Debian mirror for %q in the apt sources (%d found); configure one or pass a mirror explicitly", suite, len(sources))
}

// sourcesFor returns the host sources of suite's family (suite,
// suite-updates, suite-security...) to write into the template's apt
// configuration, with mirror replacing the main one.
func sourcesFor(sources []AptSource, suite, mirror string) []AptSource {
	out := []AptSource{{URI: mirror, Suites: []string{suite}, Components: []string{"main"}}}
	for _, s := range sources {
		if !usableMirror(s.URI) || strings.HasPrefix(s.URI, "file:") {
			continue
		}
		var family []string
		for _, su := range s.Suites {
			if strings.HasPrefix(su, suite+"-") || strings.HasPrefix(su, suite+"/") {
				family = append(family, su)
			}
		}
		if len(family) == 0 {
			continue
		}
		uri := strings.TrimRight(s.URI, "/")
		if uri == mirror {
			out[0].Suites = append(out[0].Suites, family...)
			continue
		}
		out = append(out, AptSource{URI: uri, Suites: family, Components: []string{"main"}})
	}
	return out
}

// deb822 renders sources in the deb822 format.
func deb822(sources []AptSource) string {
	var b strings.Builder
	for i, s := range sources {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
			s.URI, strings.Join(s.Suites, " "), strings.Join(s.Components, " "))
	}
	return b.String()
}
