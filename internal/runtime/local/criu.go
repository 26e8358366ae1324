package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultCRIU is where scripts/install-criu.sh puts its CRIU wrapper. It is
// preferred to a `criu` on PATH, which may be a distribution's older CRIU
// that fails on current kernels.
const DefaultCRIU = "/opt/paddock/criu/bin/criu"

// setupCRIU makes the CRIU binary path (or, when empty, DefaultCRIU if it
// exists, else `criu` on PATH) the one libcontainer runs: it looks up `criu
// swrk` on PATH, so the binary's directory goes first on this process's
// PATH. It returns the binary used, or "" when there is none.
func setupCRIU(path string) (string, error) {
	if path == "" {
		if _, err := os.Stat(DefaultCRIU); err == nil {
			path = DefaultCRIU
		} else if p, err := exec.LookPath("criu"); err == nil {
			return p, nil
		} else {
			return "", nil
		}
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("CRIU path %q is not absolute", path)
	}
	if st, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("CRIU: %w", err)
	} else if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("CRIU: %s is not an executable file", path)
	}
	if filepath.Base(path) != "criu" {
		return "", fmt.Errorf("CRIU: %s must be named criu (libcontainer runs `criu` from PATH)", path)
	}
	if p, err := exec.LookPath("criu"); err == nil && p == path {
		return path, nil
	}
	dir := filepath.Dir(path)
	if err := os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH")); err != nil {
		return "", fmt.Errorf("CRIU: set PATH: %w", err)
	}
	return path, nil
}

// criuStdio describes a sandbox init's standard descriptors that refer to
// host files (envd's log, /dev/null). CRIU cannot dump a file whose mount is
// outside the sandbox's mount namespace, so each is declared external at dump
// time under a key, and handed back by descriptor at restore time.
type criuStdio struct {
	// Keys maps each of fds 0-2 that is a host file to its CRIU key
	// ("file[<mnt_id>:<inode>]", hexadecimal).
	Keys map[int]string `json:"keys,omitempty"`
}

// stdioOf inspects process pid's fds 0-2.
func stdioOf(pid int) (criuStdio, error) {
	out := criuStdio{Keys: map[int]string{}}
	for fd := 0; fd <= 2; fd++ {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return criuStdio{}, fmt.Errorf("inspect fd %d of pid %d: %w", fd, pid, err)
		}
		if !strings.HasPrefix(link, "/") {
			continue // pipe:, socket:, anon_inode: are CRIU's own business
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), &st); err != nil {
			return criuStdio{}, fmt.Errorf("stat fd %d of pid %d: %w", fd, pid, err)
		}
		mnt, err := fdMountID(pid, fd)
		if err != nil {
			return criuStdio{}, err
		}
		out.Keys[fd] = fmt.Sprintf("file[%x:%x]", mnt, st.Ino)
	}
	return out, nil
}

// fdMountID reads the mount ID of pid's fd from /proc/<pid>/fdinfo.
func fdMountID(pid, fd int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, fmt.Errorf("fdinfo %d of pid %d: %w", fd, pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "mnt_id:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("fdinfo %d of pid %d has no mnt_id", fd, pid)
}

// dumpOptions are the CRIU options (config file lines) of a dump.
func (s criuStdio) dumpOptions() []string {
	var out []string
	seen := map[string]bool{}
	for fd := 0; fd <= 2; fd++ {
		if k, ok := s.Keys[fd]; ok && !seen[k] {
			seen[k] = true
			out = append(out, "external "+k)
		}
	}
	return out
}

// restoreOptions are the CRIU options of a restore whose stdin, stdout and
// stderr (CRIU's fds 0-2) are the sandbox's /dev/null, log and log.
func (s criuStdio) restoreOptions() []string {
	var out []string
	seen := map[string]bool{}
	for fd := 0; fd <= 2; fd++ {
		if k, ok := s.Keys[fd]; ok && !seen[k] {
			seen[k] = true
			out = append(out, fmt.Sprintf("inherit-fd fd[%d]:%s", fd, k))
		}
	}
	return out
}

// criuConfName is the per-sandbox CRIU option file, named in the
// container's config (annotation org.criu.config) and rewritten before each
// dump or restore.
const criuConfName = "criu.conf"

// writeCRIUConf writes CRIU option lines to path.
func writeCRIUConf(path string, lines []string) error {
	var b strings.Builder
	b.WriteString("# written by paddock before each checkpoint or restore\n")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write CRIU options: %w", err)
	}
	return nil
}

// criuLogErrors returns the error lines of a CRIU log (at most max, the
// last ones), for error messages.
func criuLogErrors(path string, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error (") || strings.Contains(l, "Error:") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) > max {
		errs = errs[len(errs)-max:]
	}
	return strings.Join(errs, "; ")
}

// withNetns runs fn on an OS thread switched into the network namespace at
// nsPath (directly when nsPath is empty), so the processes fn starts (CRIU)
// begin in that namespace.
//
// A sandbox on the network manager has a namespace owned by the host's user
// namespace, not the sandbox's. CRIU refuses to dump a user namespace whose
// tasks use namespaces it cannot enter from inside it; but a namespace CRIU
// shares is none of its business: started in the sandbox's network
// namespace, CRIU neither checks nor saves it, sees the sandbox's sockets
// there, and restores processes into the namespace it runs in, which may be
// a new sandbox's.
func withNetns(nsPath string, fn func() error) error {
	if nsPath == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		restored, err := runInNetns(nsPath, fn)
		if restored {
			goruntime.UnlockOSThread()
		} // else the thread is still in the sandbox's namespace: let it exit with the goroutine
		errc <- err
	}()
	return <-errc
}

func runInNetns(nsPath string, fn func() error) (restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("open own netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return true, fmt.Errorf("open sandbox netns: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("enter sandbox netns: %w", err)
	}
	err = fn()
	if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
		return false, errors.Join(err, fmt.Errorf("leave sandbox netns: %w", serr))
	}
	return true, err
}
