package conformance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/paddockhq/paddock/internal/runtime"
)

// BuildTags are the build tags of the paddock binary.
const BuildTags = "seccomp osusergo netgo"

// BuildPaddock builds the static paddock binary (what `make build` makes,
// without the embedded binaries) into dir and returns its path. It must run
// inside the module.
func BuildPaddock(dir string) (string, error) { return buildStatic(dir, "paddock") }

// BuildInit builds cmd/paddock-init, the local runtime's small container
// init (what `make build` embeds into paddock), into dir and returns its
// path. It must run inside the module.
func BuildInit(dir string) (string, error) { return buildStatic(dir, "paddock-init") }

// buildStatic builds ./cmd/<name> as `make build` does (cgo, static, the
// build tags) into dir.
func buildStatic(dir, name string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("build %s: go env GOMOD: %w", name, err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("build %s: not inside the paddock module", name)
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-tags", BuildTags,
		"-ldflags", `-s -w -linkmode external -extldflags "-static"`,
		"-o", bin, "./cmd/"+name)
	cmd.Dir = filepath.Dir(mod)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, out)
	}
	return bin, nil
}

// BusyboxPath is where Debian's busybox-static package installs busybox.
const BusyboxPath = "/bin/busybox"

// BusyboxLayers writes two tiny root filesystem layers under dir and returns
// them lowest first: "base" holds a static busybox with its applets, /etc
// with root and user (uid 1000) accounts, /tmp and /home/user; "top" adds
// /etc/paddock-layer and overrides /etc/motd ("top" instead of "base"), so a
// test can check the layer order. Files are owned by IDs shifted by
// runtime.UIDBase, as template layers are. Needs busybox-static installed.
func BusyboxLayers(dir string) ([]string, error) {
	st, err := os.Stat(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w (install Debian's busybox-static package: apt-get install busybox-static)", err)
	}
	if st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("busybox layer: %s is not executable", BusyboxPath)
	}
	base := filepath.Join(dir, "base")
	top := filepath.Join(dir, "top")
	for _, d := range []string{
		base, top,
		base + "/bin", base + "/sbin", base + "/usr/bin", base + "/usr/sbin", base + "/etc",
		base + "/root", base + "/home/user", base + "/tmp", base + "/proc", base + "/sys",
		base + "/dev", base + "/run", base + "/var/tmp", top + "/etc",
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("busybox layer: %w", err)
		}
	}
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	if err := os.WriteFile(base+"/bin/busybox", bb, 0o755); err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	applets, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox layer: busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(base, "bin", a)); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("busybox layer: %w", err)
		}
	}
	files := map[string]string{
		base + "/etc/passwd":         "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		base + "/etc/group":          "root:x:0:\nuser:x:1000:\ntty:x:5:\nnogroup:x:65534:\n",
		base + "/etc/hostname":       "template\n",
		base + "/etc/hosts":          "127.0.0.1 localhost\n",
		base + "/etc/resolv.conf":    "",
		base + "/etc/motd":           "base\n",
		top + "/etc/motd":            "top\n",
		top + "/etc/paddock-layer":   "top\n",
		base + "/etc/nsswitch.conf":  "passwd: files\ngroup: files\nhosts: files dns\n",
		base + "/home/user/.profile": "",
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return nil, fmt.Errorf("busybox layer: %w", err)
		}
	}
	for _, d := range []string{base + "/tmp", base + "/var/tmp"} {
		if err := os.Chmod(d, 0o1777); err != nil {
			return nil, fmt.Errorf("busybox layer: %w", err)
		}
	}
	if err := os.Chmod(base+"/root", 0o700); err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	// Shift ownership: root's files to UIDBase, user's to UIDBase+1000.
	for _, layer := range []string{base, top} {
		err := filepath.Walk(layer, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			id := runtime.UIDBase
			if p == base+"/home/user" || strings.HasPrefix(p, base+"/home/user/") {
				id += 1000
			}
			return os.Lchown(p, id, id)
		})
		if err != nil {
			return nil, fmt.Errorf("busybox layer: %w", err)
		}
	}
	return []string{base, top}, nil
}
