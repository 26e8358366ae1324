package template

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// debootstrapRuns counts debootstrap invocations (tests check the machine
// cache avoids them).
var debootstrapRuns atomic.Int64

// chrootEnv is the environment of commands run inside the new root.
var chrootEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
}

// mirror returns the configured Debian mirror, or the host apt's one.
func (m *Manager) mirror() (string, []AptSource, error) {
	srcs, err := ReadAptSources(m.cfg.AptDir)
	if err != nil && m.cfg.Mirror == "" {
		return "", nil, err
	}
	if m.cfg.Mirror != "" {
		return strings.TrimRight(m.cfg.Mirror, "/"), srcs, nil
	}
	mir, err := MirrorFor(srcs, BaseSuite)
	if err != nil {
		return "", nil, fmt.Errorf("%w (searched %s)", err, m.cfg.AptDir)
	}
	return mir, srcs, nil
}

// buildBase fills dir with the base root filesystem: debootstrap, then the
// user, sudo and apt setup, then the ownership shift. debs, if not empty, is
// debootstrap's package cache.
func (m *Manager) buildBase(ctx context.Context, dir string, rec recipe, debs string) error {
	if os.Geteuid() != 0 {
		return errors.New("building the base template needs root (debootstrap, chown)")
	}
	if _, err := debootstrapPath(); err != nil {
		return fmt.Errorf("building the base template needs debootstrap (apt-get install debootstrap): %w", err)
	}
	mirror, srcs, err := m.mirror()
	if err != nil {
		return fmt.Errorf("find a Debian mirror: %w", err)
	}
	if err := m.debootstrap(ctx, dir, rec, mirror, debs); err != nil {
		return err
	}
	m.progressf("  configuring: user %q (uid %d) with passwordless sudo, apt sources, cleanup", baseUserName, baseUserID)
	if err := configureBase(ctx, dir, rec, deb822(sourcesFor(srcs, rec.Suite, mirror))); err != nil {
		return err
	}
	m.progressf("  shifting file ownership by %d for the sandbox user namespace", runtime.UIDBase)
	return ShiftOwnership(dir, runtime.UIDBase, runtime.UIDCount)
}

// debootstrap runs debootstrap into dir, reporting its phases as progress.
func (m *Manager) debootstrap(ctx context.Context, dir string, rec recipe, mirror, debs string) error {
	args := []string{"--variant=" + rec.Variant, "--components=main", "--include=" + strings.Join(rec.Packages, ",")}
	if debs != "" {
		args = append(args, "--cache-dir="+debs)
	}
	args = append(args, rec.Suite, dir, mirror)
	m.progressf("  debootstrap %s (%s + %d packages) from %s", rec.Suite, rec.Variant, len(rec.Packages), mirror)
	debootstrapRuns.Add(1)

	bin, err := debootstrapPath()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(withSbinPath(os.Environ()), "DEBIAN_FRONTEND=noninteractive")
	// Its own process group, so cancelling stops dpkg and friends too; TERM
	// first lets debootstrap unmount what it mounted in the new root.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw

	start := time.Now()
	tail := &lineRing{max: 20}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned here: ends when the pipe's writer is closed below
		defer wg.Done()
		phase := ""
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			tail.add(line)
			if p := debootstrapPhase(line); p != "" && p != phase {
				phase = p
				m.progressf("  debootstrap: %s (%.0f s)", p, time.Since(start).Seconds())
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Run()
	pw.Close()
	wg.Wait()
	if cmd.Process != nil {
		// Leftovers of the group (if any) must not outlive the build.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		msg := tail.String()
		if log, rerr := os.ReadFile(filepath.Join(dir, "debootstrap", "debootstrap.log")); rerr == nil {
			msg = lastLines(string(log), 20) + "\n" + msg
		}
		if ctx.Err() != nil {
			return fmt.Errorf("debootstrap %s: %w", rec.Suite, ctx.Err())
		}
		return fmt.Errorf("debootstrap %s from %s: %w; last output:\n%s", rec.Suite, mirror, err, strings.TrimSpace(msg))
	}
	return nil
}

// debootstrapPath finds debootstrap, also in /usr/sbin when PATH lacks it.
func debootstrapPath() (string, error) {
	p, err := exec.LookPath("debootstrap")
	if err == nil {
		return p, nil
	}
	if fi, serr := os.Stat("/usr/sbin/debootstrap"); serr == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/debootstrap", nil
	}
	return "", err
}

// withSbinPath returns env with the sbin directories on PATH (debootstrap
// runs chroot, dpkg and friends from there).
func withSbinPath(env []string) []string {
	out := make([]string, 0, len(env)+1)
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
			continue
		}
		out = append(out, kv)
	}
	have := map[string]bool{}
	for _, d := range filepath.SplitList(path) {
		have[d] = true
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if !have[d] {
			if path != "" {
				path += ":"
			}
			path += d
		}
	}
	return append(out, "PATH="+path)
}

// debootstrapPhase maps a debootstrap output line to a phase name.
func debootstrapPhase(line string) string {
	msg, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		return ""
	}
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	switch {
	case has("Retrieving InRelease", "Retrieving Release", "Checking Release", "Valid Release",
		"Retrieving Packages", "Validating Packages"):
		return "fetching package lists"
	case has("Resolving dependencies", "Found ", "Checking component"):
		return "resolving dependencies"
	case has("Retrieving ", "Validating "):
		return "downloading packages"
	case has("Extracting "):
		return "extracting packages"
	case has("Installing core packages"):
		return "installing core packages"
	case has("Unpacking required packages"):
		return "unpacking required packages"
	case has("Configuring required packages"):
		return "configuring required packages"
	case has("Unpacking the base system"):
		return "unpacking the other packages"
	case has("Configuring the base system"):
		return "configuring the other packages"
	case has("Base system installed"):
		return "done"
	}
	return ""
}

// configureBase writes the base's own files and runs the setup script in
// the new root.
func configureBase(ctx context.Context, dir string, rec recipe, sources string) error {
	files := []struct {
		path string
		data string
		mode os.FileMode
	}{
		{"etc/sudoers.d/user", rec.Sudoers, 0o440},
		{"etc/apt/sources.list.d/debian.sources", sources, 0o644},
		// Network identity files: present (so they can be bind-mounted or
		// overwritten) but neutral; the runtime writes the real ones.
		{"etc/hostname", "", 0o644},
		{"etc/resolv.conf", "", 0o644},
		{"etc/hosts", rec.Hosts, 0o644},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("configure base: %w", err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return fmt.Errorf("configure base: %w", err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // umask-proof
			return fmt.Errorf("configure base: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(dir, "etc/apt/sources.list")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("configure base: %w", err)
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", rec.Setup)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	cmd.Dir = "/"
	cmd.Env = chrootEnv
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("configure base (setup script in the new root): %w: %s", err, strings.TrimSpace(lastLines(string(out), 20)))
	}
	// /dev is the runtime's: the layer keeps the empty directory only.
	ents, err := os.ReadDir(filepath.Join(dir, "dev"))
	if err != nil {
		return fmt.Errorf("configure base: %w", err)
	}
	for _, e := range ents {
		if err := removeTree(filepath.Join(dir, "dev", e.Name())); err != nil {
			return fmt.Errorf("configure base: %w", err)
		}
	}
	return nil
}

// lineRing keeps the last max lines written to it.
type lineRing struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (r *lineRing) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	if len(r.lines) > r.max {
		r.lines = r.lines[len(r.lines)-r.max:]
	}
}

func (r *lineRing) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}
