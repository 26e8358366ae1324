package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/runtime"
)

// statsSource is what Stats needs of one container: its cgroup directories
// and its limits. Stats reads the few cgroup files behind runtime.Stats
// directly (CPU time, memory usage and page cache, pids): libcontainer's
// Stats reads every controller's files (blkio, cpuset, hugetlb, all of
// memory's counters), several times the work, for each sandbox every
// sampling round.
type statsSource struct {
	v2          string // the cgroup v2 directory, or "" on cgroup v1
	cpuacct     string // cgroup v1 directories
	memory      string
	pids        string
	cpus        float64
	memoryLimit int64
}

func newStatsSource(c *libcontainer.Container) (*statsSource, error) {
	st, err := c.State()
	if err != nil {
		return nil, fmt.Errorf("container state: %w", err)
	}
	src := &statsSource{}
	// In hybrid mode (cgroup v1 controllers plus the unified hierarchy
	// without any) the paths include "" too: only the v1 ones count there.
	if cgroups.IsCgroup2UnifiedMode() {
		if src.v2 = st.CgroupPaths[""]; src.v2 == "" {
			return nil, fmt.Errorf("no cgroup v2 path: %v", st.CgroupPaths)
		}
	} else {
		src.cpuacct, src.memory, src.pids = st.CgroupPaths["cpuacct"], st.CgroupPaths["memory"], st.CgroupPaths["pids"]
		if src.cpuacct == "" || src.memory == "" || src.pids == "" {
			return nil, fmt.Errorf("cgroup paths incomplete: %v", st.CgroupPaths)
		}
	}
	if res := c.Config().Cgroups.Resources; res != nil {
		if res.CpuQuota > 0 && res.CpuPeriod > 0 {
			src.cpus = float64(res.CpuQuota) / float64(res.CpuPeriod)
		}
		src.memoryLimit = res.Memory
	}
	return src, nil
}

// read samples the cgroup files. MemoryUsed excludes the page cache, as
// E2B's memUsed does.
func (s *statsSource) read() (runtime.Stats, error) {
	out := runtime.Stats{CPUs: s.cpus, MemoryLimit: s.memoryLimit}
	var cpuNs, usage, cache, pids uint64
	var err error
	if s.v2 != "" {
		var usec uint64
		if usec, err = statField(filepath.Join(s.v2, "cpu.stat"), "usage_usec"); err == nil {
			cpuNs = usec * 1000
			if usage, err = readUint(filepath.Join(s.v2, "memory.current")); err == nil {
				if cache, err = statField(filepath.Join(s.v2, "memory.stat"), "file"); err == nil {
					pids, err = readUint(filepath.Join(s.v2, "pids.current"))
				}
			}
		}
	} else if cpuNs, err = readUint(filepath.Join(s.cpuacct, "cpuacct.usage")); err == nil {
		if usage, err = readUint(filepath.Join(s.memory, "memory.usage_in_bytes")); err == nil {
			if cache, err = statField(filepath.Join(s.memory, "memory.stat"), "cache"); err == nil {
				pids, err = readUint(filepath.Join(s.pids, "pids.current"))
			}
		}
	}
	if err != nil {
		return runtime.Stats{}, err
	}
	out.CPUUsage = time.Duration(cpuNs)
	out.MemoryCache = int64(cache)
	out.MemoryUsed = max(int64(usage)-int64(cache), 0)
	out.Pids = int64(pids)
	return out, nil
}

// readCgroupFile reads a small cgroup file with open, read and close alone
// (os.ReadFile also stats it and tries to register it with the poller):
// the sampler reads four files of every sandbox every few seconds.
func readCgroupFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 4096)
	for {
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		buf = buf[:len(buf)+n]
		// A kernfs file comes whole in one read that leaves room.
		if n == 0 || len(buf) < cap(buf) {
			return buf, nil
		}
		buf = append(buf, 0)[:len(buf)] // grow
	}
}

// readUint reads a cgroup file holding one number.
func readUint(path string) (uint64, error) {
	b, err := readCgroupFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}

// statField reads the value of key from a flat-keyed cgroup file ("key
// value" lines, as memory.stat and cpu.stat).
func statField(path, key string) (uint64, error) {
	b, err := readCgroupFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte{' '})
		if ok && string(k) == key {
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s in %s: %w", key, path, err)
			}
			return n, nil
		}
	}
	return 0, errors.New(key + " not found in " + path)
}
