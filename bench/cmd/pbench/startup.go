package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"
)

func init() {
	subcommands["startup"] = subcommand{"host: exec of the paddock binary (`version`) and of the small container init, and `envd` of paddock and of the guest binary until its port accepts, beside /bin/true", runStartup}
}

// runStartup measures the binary starts every sandbox create pays: the
// container init (paddock-init, which libcontainer's re-execution of paddock
// switches to; paddock itself when built without it), then envd (from the
// slim guest binary when paddock carries it, else paddock). On the host,
// without namespaces.
func runStartup(args []string) (*result, error) {
	fs := flag.NewFlagSet("startup", flag.ContinueOnError)
	bin := fs.String("bin", "", "the paddock binary")
	guest := fs.String("guest", "", "the guest binary (cmd/paddock-guest); optional")
	initBin := fs.String("init", os.Getenv("PBENCH_INIT"), "the small container init (cmd/paddock-init); optional (default $PBENCH_INIT)")
	n := fs.Int("n", 30, "runs")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *bin == "" || *n < 1 {
		return nil, errors.New("--bin is required and --n must be positive")
	}
	res := newResult()
	for i := -3; i < *n; i++ {
		for _, c := range []struct {
			name string
			argv []string
		}{{"true", []string{"/bin/true"}}, {"paddock_version", []string{*bin, "version"}}} {
			t0 := time.Now()
			if err := exec.Command(c.argv[0], c.argv[1:]...).Run(); err != nil {
				return nil, fmt.Errorf("%v: %w", c.argv, err)
			}
			if i >= 0 {
				res.add(c.name, time.Since(t0))
			}
		}
		if *initBin != "" {
			// Without arguments it says what it is and exits 2.
			t0 := time.Now()
			err := exec.Command(*initBin).Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				return nil, fmt.Errorf("%s: want exit status 2, got %v", *initBin, err)
			}
			if i >= 0 {
				res.add("init_exec", time.Since(t0))
			}
		}
		d, err := envdStartup(*bin)
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			res.add("envd_listening", d)
		}
		if *guest != "" {
			d, err := envdStartup(*guest)
			if err != nil {
				return nil, err
			}
			if i >= 0 {
				res.add("guest_envd_listening", d)
			}
		}
	}
	if st, err := os.Stat(*bin); err == nil {
		res.Values["binary_mib"] = float64(st.Size()) / (1 << 20)
	}
	if st, err := os.Stat(*initBin); *initBin != "" && err == nil {
		res.Values["init_binary_mib"] = float64(st.Size()) / (1 << 20)
	}
	if st, err := os.Stat(*guest); *guest != "" && err == nil {
		res.Values["guest_binary_mib"] = float64(st.Size()) / (1 << 20)
	}
	res.note("host exec; envd_listening = exec of `paddock envd --listen 127.0.0.1:PORT` until a TCP connect succeeds (polled every 0.2 ms); guest_envd_listening the same with the guest binary")
	return res, nil
}

func envdStartup(bin string) (time.Duration, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	t0 := time.Now()
	cmd := exec.Command(bin, "envd", "--listen", addr)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	for time.Since(t0) < 10*time.Second {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			d := time.Since(t0)
			c.Close()
			return d, nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, fmt.Errorf("%s envd on %s did not accept within 10 s", bin, addr)
}
