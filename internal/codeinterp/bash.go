package codeinterp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// bashKernel is a persistent interactive bash reading commands from a pipe.
// Interactive mode is what makes Ctrl-C work like in a terminal: SIGINT
// aborts the command line running now (a builtin loop included) and bash
// goes on with the next one. Each execution is one `eval` of the code, with
// stdin from /dev/null so code cannot eat the commands that follow it, and
// a second command line printing the markers with the exit status.
type bashKernel struct {
	*procKernel
}

func startBash(ctx context.Context, bash, cwd string, log *slog.Logger) (_ *bashKernel, err error) {
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	args := []string{"--norc", "--noprofile", "--noediting", "-i"}
	cmd := exec.Command(bash, args...)
	if env := defaultSignalEnv(); env != "" {
		// bash keeps a signal ignored when it started with it ignored (as
		// under a parent started in the background), and so would every
		// command it runs: start it with SIGINT at its default.
		cmd = exec.Command(env, append([]string{"--default-signal=INT", bash}, args...)...)
	}
	cmd.Dir = cwd
	cmd.Env = kernelEnv("TERM=dumb")
	p, r, err := startProc(cmd, token, 0, log)
	if err != nil {
		return nil, err
	}
	k := &bashKernel{p}
	p.afterEval = func(r *procRun) {
		if err := k.send(k.endLine(r.seq)); err != nil {
			log.Debug("write the end line", "err", err)
		}
	}
	defer k.end(r)
	defer func() {
		if err != nil {
			k.close(errRemoved)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, procStartTimeout)
	defer cancel()
	// No continuation prompts, no history, no job control, no ! expansion.
	if err := k.send(k.request(r.seq, "PS2=''; PS0=''; unset PROMPT_COMMAND HISTFILE; set +m +H")); err != nil {
		return nil, k.startFailed("bash", err)
	}
	if _, err := k.wait(ctx, r); err != nil {
		return nil, k.startFailed("bash", err)
	}
	return k, nil
}

// request is the input running code as run seq. The first command line
// sets the prompt to the run's "done" marker and evals the start marker and
// the code: SIGINT after the start marker aborts the eval (one that came
// before the eval starts would be dropped by it). When the eval is over,
// bash prints the prompt; then, and only then, since no SIGINT is sent any
// more, endLine prints the stdout end marker with the exit status.
func (k *bashKernel) request(seq int, code string) []byte {
	start := fmt.Sprintf("printf '\\002%s:%d:start\\003' >&2\n", k.token, seq)
	prompt := fmt.Sprintf("\\002%s:%d:done\\003", k.token, seq)
	return []byte(fmt.Sprintf("PS1=%s; eval %s </dev/null\n", shellQuote(prompt), shellQuote(start+code)))
}

// endLine prints the stdout end marker of run seq. Should a late SIGINT
// abort it before PS1 is reset, bash prints the done prompt again and the
// line is sent again.
func (k *bashKernel) endLine(seq int) []byte {
	return []byte(fmt.Sprintf("printf '\\002%s:%d:end:%%d\\003' \"$?\"; PS1=''\n", k.token, seq))
}

func (k *bashKernel) execute(ctx context.Context, code string, out func(event)) error {
	r := k.begin(out, false)
	defer k.end(r)
	stop := k.guard(ctx, r)
	defer stop()
	k.count++
	out(countEvent(k.count))
	if err := k.send(k.request(r.seq, code)); err != nil {
		return err
	}
	if _, err := k.wait(context.Background(), r); err != nil {
		return err
	}
	r.imu.Lock()
	interrupted := r.interrupted
	r.imu.Unlock()
	if interrupted {
		k.interruptLeftovers()
	}
	if r.status != "0" {
		// What E2B's bash kernel (bash_kernel) reports: no name, the status.
		r.mu.Lock()
		out(errorEvent("", r.status, ""))
		r.mu.Unlock()
	}
	return nil
}

func (k *bashKernel) setup(ctx context.Context, code string) error {
	r := k.begin(nil, false)
	defer k.end(r)
	if err := k.send(k.request(r.seq, code)); err != nil {
		return err
	}
	if _, err := k.wait(ctx, r); err != nil {
		if ctx.Err() != nil {
			k.close(errStuck)
		}
		return err
	}
	if r.status != "0" {
		return fmt.Errorf("setup code exited with status %s", r.status)
	}
	return nil
}

func (k *bashKernel) setEnvCode(vars map[string]string) string {
	keys := make([]string, 0, len(vars))
	for key := range vars {
		if bashName(key) { // bash cannot hold other names
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, key := range keys {
		fmt.Fprintf(&b, "export %s=%s\n", key, shellQuote(vars[key]))
	}
	return b.String()
}

func (k *bashKernel) unsetEnvCode(keys []string) string {
	var names []string
	for _, key := range keys {
		if bashName(key) {
			names = append(names, key)
		}
	}
	return "unset -v -- " + strings.Join(names, " ")
}

// bashName reports whether s is a valid shell variable name.
func bashName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// interruptLeftovers sends SIGINT to the processes of bash's group but
// bash. When SIGINT comes while bash forks a command, bash can abort the
// eval while the command, which did not get the signal, goes on; bash would
// wait for it at its next command. Commands put in the background by the
// code ignore SIGINT (as bash starts them without job control).
func (k *bashKernel) interruptLeftovers() {
	leader := k.cmd.Process.Pid
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == leader {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 3 && f[2] == strconv.Itoa(leader) {
			_ = syscall.Kill(pid, syscall.SIGINT)
		}
	}
}

// defaultSignalEnv is the path of an env(1) that knows --default-signal
// (GNU coreutils 8.31 and later), or "".
var defaultSignalEnv = sync.OnceValue(func() string {
	path, err := exec.LookPath("env")
	if err != nil {
		return ""
	}
	if exec.Command(path, "--default-signal=INT", "true").Run() != nil {
		return ""
	}
	return path
})

// shellQuote quotes s as one bash word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
