package local

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// readCgroupFile returns a file whole, whatever its size against its first
// buffer, and a missing file as fs.ErrNotExist.
func TestReadCgroupFile(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 10, 4095, 4096, 4097, 10000} {
		want := bytes.Repeat([]byte{'x'}, size)
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readCgroupFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got), err)
		}
	}
	if _, err := readCgroupFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
