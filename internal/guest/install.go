package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Embedded reports whether this binary carries the slim guest binary.
func Embedded() bool { return len(embedded) > 0 }

// Install writes the embedded guest binary into dir as
// paddock-guest-<hash of its content> (mode 0755) unless an identical file
// is there already, and returns its path; it returns "" and no error when
// this binary carries none. The file is written beside and renamed into
// place, so a crash never leaves a partial binary under the final name, and
// a path always denotes one content: a file that running sandboxes have
// bind-mounted is never rewritten in place. Other versions (and temporary
// files a crash left) are removed: sandboxes running from one keep it
// through their bind mount, and a resumed sandbox mounts the current one.
func Install(dir string) (string, error) {
	if !Embedded() {
		return "", nil
	}
	return install(dir, embedded)
}

func install(dir string, content []byte) (string, error) {
	path, err := write(dir, content)
	if err != nil {
		return "", err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "paddock-guest-*"))
	tmps, _ := filepath.Glob(filepath.Join(dir, ".paddock-guest-*"))
	for _, o := range append(old, tmps...) {
		if o != path {
			_ = os.Remove(o)
		}
	}
	return path, nil
}

// write puts content at its content-addressed path in dir unless it is
// there already.
func write(dir string, content []byte) (string, error) {
	sum := sha256.Sum256(content)
	path := filepath.Join(dir, "paddock-guest-"+hex.EncodeToString(sum[:8]))
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, content) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("install guest binary: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".paddock-guest-*")
	if err != nil {
		return "", fmt.Errorf("install guest binary: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install guest binary: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install guest binary: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("install guest binary: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("install guest binary: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("install guest binary: %w", err)
	}
	return path, nil
}
