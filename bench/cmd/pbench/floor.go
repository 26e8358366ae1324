package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/runtime/local/initexe"
)

func init() {
	subcommands["floor"] = subcommand{"libcontainer alone: overlay + create + start + run `true` to exit (the create floor)", runFloor}
	subcommands["idle"] = subcommand{"libcontainer alone: N idle containers (sleep), host memory each, then kill+cleanup each", runIdle}
}

type floorFlags struct {
	layer, work string
	init        string // small container init published before any container starts
	n, warmup   int
	conc        int
	shell       string
	knobs       knobs
}

func parseFloorFlags(name string, args []string, n int) (floorFlags, error) {
	var f floorFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.layer, "layer", "", "template layer (read-only lower dir), e.g. <data-dir>/layers/<digest>")
	fs.StringVar(&f.work, "work", "", "scratch dir on the same filesystem as Paddock's data dir (created, removed)")
	fs.IntVar(&f.n, "n", n, "containers")
	fs.IntVar(&f.warmup, "warmup", 3, "unmeasured runs first")
	fs.IntVar(&f.conc, "c", 1, "floor: containers started at once per round (n is rounded up to whole rounds)")
	fs.StringVar(&f.init, "init", os.Getenv("PBENCH_INIT"), "small container init to run instead of pbench itself, as paddock does (cmd/paddock-init; default $PBENCH_INIT)")
	fs.StringVar(&f.shell, "sh", "", "diagnosis: run `/bin/sh -c SH` as init instead of /bin/true")
	fs.BoolVar(&f.knobs.noSeccomp, "no-seccomp", false, "diagnosis: no seccomp filter")
	fs.StringVar(&f.knobs.netns, "netns", "", "diagnosis: join this network namespace (e.g. /run/netns/x) instead of making one")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if err := checkLayer(f.layer); err != nil {
		return f, err
	}
	if f.work == "" || !filepath.IsAbs(f.work) {
		return f, errors.New("--work must be an absolute path")
	}
	if f.n < 1 {
		return f, errors.New("--n must be at least 1")
	}
	if os.Geteuid() != 0 {
		return f, errors.New("must run as root")
	}
	if f.init != "" {
		bin, err := os.ReadFile(f.init)
		if err != nil {
			return f, fmt.Errorf("--init: %w", err)
		}
		if err := initexe.Publish(bin); err != nil {
			return f, fmt.Errorf("--init: %w", err)
		}
	}
	if err := os.MkdirAll(f.work, 0o711); err != nil {
		return f, err
	}
	return f, os.Chmod(f.work, 0o711)
}

// floorContainer is one container of the floor baselines.
type floorContainer struct {
	id, dir string
	c       *libcontainer.Container
	proc    *libcontainer.Process
}

// startFloor mounts the overlay and creates and starts a container running
// args as its init; it records the phases in res (when not nil).
func startFloor(f floorFlags, id string, args []string, res *result) (*floorContainer, error) {
	fc := &floorContainer{id: id, dir: filepath.Join(f.work, id)}
	t0 := time.Now()
	rootfs, err := mountOverlay(fc.dir, f.layer)
	if err != nil {
		_ = unmountOverlay(fc.dir)
		return nil, err
	}
	t1 := time.Now()
	spec, err := sandboxSpec(id, rootfs, args, f.knobs)
	if err != nil {
		_ = unmountOverlay(fc.dir)
		return nil, err
	}
	cfg, err := libcontainerConfig(id, spec)
	if err != nil {
		_ = unmountOverlay(fc.dir)
		return nil, err
	}
	t2 := time.Now()
	c, err := libcontainer.Create(filepath.Join(f.work, "state"), id, cfg)
	if err != nil {
		_ = unmountOverlay(fc.dir)
		return nil, fmt.Errorf("create container: %w", err)
	}
	fc.c = c
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fc.destroy()
		return nil, err
	}
	defer devnull.Close()
	fc.proc = &libcontainer.Process{
		Args: args, Env: spec.Process.Env, Cwd: "/",
		Stdin: devnull, Stdout: devnull, Stderr: devnull, Init: true,
	}
	if err := c.Run(fc.proc); err != nil {
		fc.proc = nil
		fc.destroy()
		return nil, fmt.Errorf("run container: %w", err)
	}
	t3 := time.Now()
	if res != nil {
		res.add("overlay", t1.Sub(t0))
		res.add("config", t2.Sub(t1))
		res.add("create_start", t3.Sub(t2))
	}
	return fc, nil
}

// destroy kills the container, waits for its init and removes everything.
func (fc *floorContainer) destroy() error {
	var errs []error
	if fc.c != nil {
		if fc.proc != nil {
			if err := fc.c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
				errs = append(errs, err)
			}
			_, _ = fc.proc.Wait()
		}
		if err := fc.c.Destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountOverlay(fc.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func runFloor(args []string) (*result, error) {
	f, err := parseFloorFlags("floor", args, 30)
	if err != nil {
		return nil, err
	}
	if f.conc < 1 {
		return nil, errors.New("-c must be at least 1")
	}
	defer os.RemoveAll(f.work)
	defer removeCgroups()
	res := newResult()
	if f.conc > 1 {
		if err := floorRounds(f, res); err != nil {
			return nil, err
		}
		res.note("%d containers started at once per round; each sample is one container's overlay..exit time", f.conc)
		return res, nil
	}
	for i := -f.warmup; i < f.n; i++ {
		r := res
		if i < 0 {
			r = nil
		}
		id := "floor-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(i+f.warmup)
		t0 := time.Now()
		args := []string{"/bin/true"}
		if f.shell != "" {
			args = []string{"/bin/sh", "-c", f.shell}
		}
		fc, err := startFloor(f, id, args, r)
		if err != nil {
			return nil, err
		}
		_, werr := fc.proc.Wait()
		t1 := time.Now()
		fc.proc = nil
		derr := fc.destroy()
		t2 := time.Now()
		if werr != nil {
			return nil, fmt.Errorf("wait for true: %w", werr)
		}
		if derr != nil {
			return nil, fmt.Errorf("destroy: %w", derr)
		}
		if r != nil {
			r.add("total", t1.Sub(t0))
			r.add("teardown", t2.Sub(t1))
		}
	}
	res.note("overlay + libcontainer config (Docker seccomp, native arch) + Create + Run(init=/bin/true) + Wait; same namespaces/limits as a sandbox, fresh loopback-only netns, no veth")
	return res, nil
}

// floorRounds starts f.conc floor containers at once per round and records
// each one's time from start to the exit of `true`; teardown is not timed.
func floorRounds(f floorFlags, res *result) error {
	rounds := (f.n + f.conc - 1) / f.conc
	for round := 0; round < rounds; round++ {
		var (
			mu   sync.Mutex
			wg   sync.WaitGroup
			errs []error
			done []*floorContainer
		)
		t0 := time.Now()
		for j := 0; j < f.conc; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				id := fmt.Sprintf("floorc-%d-%d-%d", os.Getpid(), round, j)
				s := time.Now()
				fc, err := startFloor(f, id, []string{"/bin/true"}, nil)
				if err == nil {
					_, err = fc.proc.Wait()
					fc.proc = nil
				}
				d := time.Since(s)
				mu.Lock()
				defer mu.Unlock()
				if fc != nil {
					done = append(done, fc)
				}
				if err != nil {
					errs = append(errs, err)
					return
				}
				res.add("total", d)
			}(j)
		}
		wg.Wait()
		res.add("round_wall", time.Since(t0))
		for _, fc := range done {
			if err := fc.destroy(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

func runIdle(args []string) (*result, error) {
	f, err := parseFloorFlags("idle", args, 50)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(f.work)
	defer removeCgroups()
	res := newResult()
	var all []*floorContainer
	defer func() {
		for _, fc := range all {
			_ = fc.destroy()
		}
	}()
	before := memAvailable()
	for i := 0; i < f.n; i++ {
		id := "idle-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(i)
		t0 := time.Now()
		fc, err := startFloor(f, id, []string{"/bin/sleep", "infinity"}, nil)
		if err != nil {
			return nil, err
		}
		res.add("create_start", time.Since(t0))
		all = append(all, fc)
	}
	time.Sleep(2 * time.Second)
	after := memAvailable()
	var usage, rss, pss int64
	for _, fc := range all {
		u, r := cgroupMemory(filepath.Join(cgroupParent, fc.id))
		usage += u
		rss += r
		if pid, err := fc.proc.Pid(); err == nil {
			pss += processPss(pid)
		}
	}
	n := float64(len(all))
	res.Values["count"] = n
	res.Values["host_mib_per_container"] = float64(before-after) / n / (1 << 20)
	res.Values["cgroup_usage_mib_per_container"] = float64(usage) / n / (1 << 20)
	res.Values["cgroup_rss_mib_per_container"] = float64(rss) / n / (1 << 20)
	res.Values["init_pss_mib_per_container"] = float64(pss) / n / (1 << 20)
	for len(all) > 0 {
		fc := all[0]
		t0 := time.Now()
		if err := fc.destroy(); err != nil {
			return nil, err
		}
		res.add("kill_cleanup", time.Since(t0))
		all = all[1:]
	}
	res.note("idle containers run /bin/sleep infinity; host memory from /proc/meminfo MemAvailable deltas (noisy on a shared machine), cgroup v1 memory usage/rss, PSS of each init")
	return res, nil
}

// memAvailable returns MemAvailable from /proc/meminfo in bytes.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cgroupMemory returns memory.usage_in_bytes and the rss of memory.stat
// (anonymous memory) of cgroup path p in the v1 memory hierarchy.
func cgroupMemory(p string) (usage, rss int64) {
	dir := filepath.Join("/sys/fs/cgroup/memory", p)
	if b, err := os.ReadFile(filepath.Join(dir, "memory.usage_in_bytes")); err == nil {
		usage, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "total_rss "); ok {
				rss, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return usage, rss
}

// processPss returns the proportional set size of a process in bytes.
func processPss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
