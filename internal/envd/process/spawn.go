package process

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/envd/identity"
)

// DefaultPath is the PATH processes get when envd itself has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultTerm is TERM for a pseudo-terminal when neither the request nor the
// global environment sets one.
const defaultTerm = "xterm-256color"

// buildEnv returns the environment of a process: PATH, the acting user's
// HOME/USER/LOGNAME, the global variables, then the request's (last wins).
func buildEnv(u *identity.User, global, req map[string]string, isPTY bool) ([]string, map[string]string) {
	path := os.Getenv("PATH")
	if path == "" {
		path = DefaultPath
	}
	env := map[string]string{
		"PATH":    path,
		"HOME":    u.Home,
		"USER":    u.Name,
		"LOGNAME": u.Name,
	}
	for k, v := range global {
		env[k] = v
	}
	for k, v := range req {
		env[k] = v
	}
	if isPTY {
		if _, ok := env["TERM"]; !ok {
			env["TERM"] = defaultTerm
		}
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out, env
}

// validateEnv rejects variable names and values the kernel cannot carry.
func validateEnv(envs map[string]string) error {
	for k, v := range envs {
		if k == "" {
			return errors.New("environment variable with an empty name")
		}
		if strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("environment variable name %q contains '=' or NUL", k)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("environment variable %q contains NUL", k)
		}
	}
	return nil
}

// lookPath resolves a command name without a slash against the PATH the
// process will get; names with a slash are used as given (relative to dir).
func lookPath(cmd, path, dir string) (string, error) {
	if strings.Contains(cmd, "/") {
		return cmd, nil
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		cand := filepath.Join(d, cmd)
		if !filepath.IsAbs(cand) {
			cand = filepath.Join(dir, cand)
		}
		st, err := os.Stat(cand)
		if err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return cand, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", cmd)
}

// checkDir reports a clear error when dir is missing or not a directory.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cwd '%s' does not exist", dir)
	}
	if err != nil {
		return fmt.Errorf("cwd '%s': %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("cwd '%s' is not a directory", dir)
	}
	return nil
}

// credential returns the credential a process of u runs with, or nil when
// envd cannot switch users (not root) and u is envd's own user.
func credential(u *identity.User) *syscall.Credential {
	if os.Geteuid() != 0 && u.UID == uint32(os.Geteuid()) {
		return nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: append([]uint32(nil), u.Groups...)}
}

// keepDumpable makes envd dumpable again after starting a process under
// another user. Go starts processes with vfork: the child's setuid, before
// its exec, resets the dumpable flag of the memory it still shares with
// envd. A non-dumpable envd cannot be checkpointed again once restored
// (CRIU inspects its namespaces from inside the sandbox's user namespace,
// which a non-dumpable process restored by CRIU keeps out).
func keepDumpable() { _ = unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0) }

// openPTY opens a pseudo-terminal of the given size. The master is returned
// non-blocking and registered with Go's poller, so reads can be interrupted
// with a deadline; the slave is for the child.
func openPTY(cols, rows uint16) (master, slave *os.File, err error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	fail := func(err error) (*os.File, *os.File, error) {
		ptmx.Close()
		tty.Close()
		return nil, nil, err
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: cols, Rows: rows}); err != nil {
		return fail(fmt.Errorf("set pty size: %w", err))
	}
	// ptmx is a blocking *os.File; re-wrap a non-blocking duplicate so Go
	// polls it (os.NewFile detects O_NONBLOCK).
	fd := int(ptmx.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail(fmt.Errorf("pty non-blocking: %w", err))
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("dup pty: %w", err))
	}
	ptmx.Close()
	return os.NewFile(uintptr(dup), "/dev/ptmx"), tty, nil
}

// setWinsize resizes the pseudo-terminal behind master (which stays
// non-blocking: its descriptor is used through RawConn, never Fd).
func setWinsize(master *os.File, cols, rows uint16) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows})
	})
	if err != nil {
		return err
	}
	return ioErr
}

// setOOMScore makes pid a preferred victim of the OOM killer (best effort),
// so a runaway command is killed before envd.
func setOOMScore(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte("100"), 0)
}

// Task reserves: as PID 1, envd caps its own RLIMIT_NPROC (inherited by
// every process it starts) envdTaskReserve below the sandbox's pids limit,
// and processes it starts as root a further rootTaskReserve below, so a
// fork bomb cannot take the last tasks of the sandbox and leave the Go
// runtime unable to start a thread (it aborts). RLIMIT_NPROC counts the
// tasks of one user; processes of other users inherit envd's cap (envd
// cannot lower their limits: that needs CAP_SYS_RESOURCE).
const (
	envdTaskReserve = 64
	rootTaskReserve = 64
)

// pidsMaxPath is the sandbox's pids cgroup limit as seen from inside.
var pidsMaxPath = "/sys/fs/cgroup/pids/pids.max"

// taskLimits returns the RLIMIT_NPROC for envd itself and for the root
// processes it starts, or zeros when the sandbox has no usable pids limit.
func taskLimits() (own, root uint64) {
	b, err := os.ReadFile(pidsMaxPath)
	if err != nil {
		return 0, 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 4*(envdTaskReserve+rootTaskReserve) {
		return 0, 0 // "max", or too small to split
	}
	return n - envdTaskReserve, n - envdTaskReserve - rootTaskReserve
}

// capOwnTasks sets envd's own RLIMIT_NPROC (soft and hard) to limit.
func capOwnTasks(limit uint64) error {
	return unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: limit, Max: limit})
}

// limitTasks lowers the RLIMIT_NPROC of pid (a process of envd's own user)
// right after it starts, before a login shell could fork. Best effort.
func limitTasks(pid int, limit uint64) {
	if limit == 0 {
		return
	}
	rl := unix.Rlimit{Cur: limit, Max: limit}
	_ = unix.Prlimit(pid, unix.RLIMIT_NPROC, &rl, nil)
}
