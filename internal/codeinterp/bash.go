package codeinterp

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"sort"
	"strings"
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
	cmd := exec.Command(bash, "--norc", "--noprofile", "--noediting", "-i")
	cmd.Dir = cwd
	cmd.Env = kernelEnv("TERM=dumb")
	p, r, err := startProc(cmd, token, 0, log)
	if err != nil {
		return nil, err
	}
	k := &bashKernel{p}
	defer k.end(r)
	defer func() {
		if err != nil {
			k.close(errRemoved)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, procStartTimeout)
	defer cancel()
	// No prompts, no history, no job control, no ! expansion.
	if err := k.send(k.request(r.seq, "PS1=''; PS2=''; PS0=''; unset PROMPT_COMMAND HISTFILE; set +m +H")); err != nil {
		return nil, k.startFailed("bash", err)
	}
	if _, err := k.wait(ctx, r); err != nil {
		return nil, k.startFailed("bash", err)
	}
	return k, nil
}

// request is the input running code as run seq: the code, then the markers
// (stdout's carries the exit status), each on a command line of its own so
// an interrupted eval still prints them.
func (k *bashKernel) request(seq int, code string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "eval %s </dev/null\n", shellQuote(code))
	fmt.Fprintf(&b, "printf '\\002%s:%d:%%d\\003' \"$?\"; printf '\\002%s:%d\\003' >&2\n", k.token, seq, k.token, seq)
	return []byte(b.String())
}

func (k *bashKernel) execute(code string, out func(event)) error {
	k.count++
	out(countEvent(k.count))
	r := k.begin(out, false)
	defer k.end(r)
	if err := k.send(k.request(r.seq, code)); err != nil {
		return err
	}
	if _, err := k.wait(context.Background(), r); err != nil {
		return err
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

// shellQuote quotes s as one bash word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
