package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallWritesOnceAndReplacesOtherVersions(t *testing.T) {
	dir := t.TempDir()
	v1 := []byte("\x7fELF version one")
	p1, err := install(dir, v1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(p1), "paddock-guest-") {
		t.Fatalf("installed as %s", p1)
	}
	st, err := os.Stat(p1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", st.Mode().Perm())
	}
	// Same content: same path, file untouched.
	again, err := install(dir, v1)
	if err != nil || again != p1 {
		t.Fatalf("second install: %q, %v (want %q)", again, err, p1)
	}
	st2, _ := os.Stat(p1)
	if !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("identical install rewrote the file")
	}
	// A corrupted file under the name is replaced.
	if err := os.WriteFile(p1, []byte("junk"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := install(dir, v1); err != nil {
		t.Fatal(err)
	}
	if have, _ := os.ReadFile(p1); !bytes.Equal(have, v1) {
		t.Errorf("corrupted file not replaced: %q", have)
	}
	// Another content gets another name and replaces the other version
	// and any temporary file a crash left; no temporary files remain.
	if err := os.WriteFile(filepath.Join(dir, ".paddock-guest-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	p2, err := install(dir, []byte("\x7fELF version two"))
	if err != nil || p2 == p1 {
		t.Fatalf("other content: %q, %v", p2, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || filepath.Join(dir, entries[0].Name()) != p2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("after installing another version, dir holds %v, want only %s", names, filepath.Base(p2))
	}
}

func TestInstallFollowsTheBuildTag(t *testing.T) {
	path, err := Install(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if Embedded() != (path != "") {
		t.Fatalf("Embedded() = %v but Install returned %q", Embedded(), path)
	}
}

func TestCommandsAreTheInSandboxOnes(t *testing.T) {
	for _, name := range []string{"envd", "codeinterp"} {
		if c, ok := Commands[name]; !ok || c.Run == nil || c.Summary == "" {
			t.Errorf("command %s missing", name)
		}
	}
}

// The guest binary must stay free of the control plane: it is small because
// it links only envd and codeinterp.
func TestGuestBinaryLinksNoControlPlane(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/paddockhq/paddock/cmd/paddock-guest").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned too little: %q", out)
	}
	for _, d := range deps {
		for _, banned := range []string{
			"github.com/paddockhq/paddock/internal/sandbox", "github.com/paddockhq/paddock/internal/runtime",
			"github.com/paddockhq/paddock/internal/store", "github.com/paddockhq/paddock/internal/platform",
			"github.com/paddockhq/paddock/internal/template", "github.com/opencontainers/", "github.com/redis/",
		} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("paddock-guest links %s", d)
			}
		}
	}
}
