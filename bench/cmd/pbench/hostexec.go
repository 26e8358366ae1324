package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"time"
)

func init() {
	subcommands["exec"] = subcommand{"host fork+exec: `true`, `bash -c true`, stdout pipe throughput (the command-path floor)", runExec}
}

func runExec(args []string) (*result, error) {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	n := fs.Int("n", 200, "runs of each command")
	streamMiB := fs.Int("stream-mib", 64, "MiB read from `head -c` per stream run")
	streamRuns := fs.Int("stream-runs", 5, "stream runs")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *n < 1 || *streamRuns < 1 || *streamMiB < 1 {
		return nil, errors.New("--n, --stream-runs and --stream-mib must be positive")
	}
	res := newResult()
	for _, c := range []struct {
		name string
		argv []string
	}{
		{"true", []string{"/bin/true"}},
		{"bash_c_true", []string{"/bin/bash", "-c", "true"}},
		// A login shell as the SDK's commands.run starts, without this
		// host's own dotfiles (HOME has none): Debian's /etc/profile only.
		{"bash_l_true", []string{"/bin/bash", "-l", "-c", "true"}},
	} {
		for i := -5; i < *n; i++ {
			t0 := time.Now()
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("%v: %w", c.argv, err)
			}
			if i >= 0 {
				res.add(c.name, time.Since(t0))
			}
		}
	}
	size := int64(*streamMiB) << 20
	for i := -1; i < *streamRuns; i++ {
		t0 := time.Now()
		cmd := exec.Command("/usr/bin/head", "-c", fmt.Sprint(size), "/dev/zero")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		got, err := io.CopyBuffer(io.Discard, out, make([]byte, 32<<10))
		if werr := cmd.Wait(); err == nil {
			err = werr
		}
		if err != nil {
			return nil, fmt.Errorf("head -c: %w", err)
		}
		if got != size {
			return nil, fmt.Errorf("head -c: read %d bytes, want %d", got, size)
		}
		if i >= 0 {
			res.add("stream", time.Since(t0))
		}
	}
	res.Values["stream_bytes"] = float64(size)
	res.note("os/exec from Go; stream = `head -c %d /dev/zero` read through a pipe", size)
	return res, nil
}
