package local

import (
	"bytes"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/paddockhq/paddock/internal/runtime"
)

func specFor(id, host string, layers []string) runtime.Spec {
	return runtime.Spec{ID: id, Hostname: host, Layers: layers}
}

func TestRotateLog(t *testing.T) {
	dir := t.TempDir()
	f, err := openLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	path := filepath.Join(dir, logName)
	if _, err := f.Write(bytes.Repeat([]byte("a"), 100)); err != nil {
		t.Fatal(err)
	}
	if err := rotateLog(path, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Fatal("rotated a log under the cap")
	}
	if _, err := f.Write(append(bytes.Repeat([]byte("b"), 1000), "END"...)); err != nil {
		t.Fatal(err)
	}
	if err := rotateLog(path, 1000); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 1000 || !bytes.HasSuffix(old, []byte("END")) {
		t.Errorf("rotated log: %d bytes ending %q, want the newest 1000 bytes", len(old), old[len(old)-3:])
	}
	// The writer appends: its next write starts the fresh log.
	if _, err := f.Write([]byte("next")); err != nil {
		t.Fatal(err)
	}
	if cur, err := os.ReadFile(path); err != nil || string(cur) != "next" {
		t.Errorf("log after rotation: %q, %v; want %q", cur, err, "next")
	}
}

func TestValidateSpec(t *testing.T) {
	layer := t.TempDir()
	file := filepath.Join(layer, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	good := []string{layer}
	cases := map[string]struct {
		id, host string
		layers   []string
		wantErr  bool
	}{
		"ok":            {"i0123456789abcdefghij", "", good, false},
		"hostname":      {"abc", "my-host.local", good, false},
		"empty id":      {"", "", good, true},
		"slash":         {"a/b", "", good, true},
		"dotdot":        {"..", "", good, true},
		"long id":       {string(bytes.Repeat([]byte("a"), 65)), "", good, true},
		"no layers":     {"abc", "", nil, true},
		"file layer":    {"abc", "", []string{file}, true},
		"colon layer":   {"abc", "", []string{layer + ":x"}, true},
		"bad hostname":  {"abc", "-bad", good, true},
		"long hostname": {"abc", string(bytes.Repeat([]byte("a"), 64)), good, true},
	}
	for name, c := range cases {
		err := validateSpec(specFor(c.id, c.host, c.layers))
		if (err != nil) != c.wantErr {
			t.Errorf("%s: validateSpec error %v, want error %v", name, err, c.wantErr)
		}
	}
}

func TestNativeOnly(t *testing.T) {
	full := []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	if goruntime.GOARCH == "amd64" {
		if got := nativeOnly(full); len(got) != 1 || got[0] != specs.ArchX86_64 {
			t.Errorf("nativeOnly(%v) = %v, want [x86_64]", full, got)
		}
	}
	other := []specs.Arch{specs.ArchMIPS}
	if got := nativeOnly(other); len(got) != 1 || got[0] != specs.ArchMIPS {
		t.Errorf("nativeOnly(%v) = %v, want it unchanged", other, got)
	}
}
