package envd

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// metrics is the body of GET /metrics (snake_case, as E2B's envd sends it).
type metrics struct {
	Timestamp   int64   `json:"ts"`
	CPUCount    int     `json:"cpu_count"`
	CPUUsedPct  float64 `json:"cpu_used_pct"`
	MemTotal    uint64  `json:"mem_total"`
	MemUsed     uint64  `json:"mem_used"`
	MemCache    uint64  `json:"mem_cache"`
	MemTotalMiB uint64  `json:"mem_total_mib"`
	MemUsedMiB  uint64  `json:"mem_used_mib"`
	DiskUsed    uint64  `json:"disk_used"`
	DiskTotal   uint64  `json:"disk_total"`
}

// cpuSampler turns /proc/stat totals into a usage percentage between calls.
type cpuSampler struct {
	mu         sync.Mutex
	busy, all  uint64
	lastSample time.Time
}

var cpuUsage cpuSampler

func (c *cpuSampler) percent() float64 {
	busy, all, ok := readProcStat()
	if !ok {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var pct float64
	if !c.lastSample.IsZero() && all > c.all {
		pct = 100 * float64(busy-c.busy) / float64(all-c.all)
	}
	c.busy, c.all, c.lastSample = busy, all, time.Now()
	return pct
}

func readProcStat() (busy, all uint64, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, false
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, false
	}
	for i, s := range fields[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		all += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, all, true
}

// memory reads the sandbox's memory use from its cgroup when visible,
// falling back to /proc/meminfo.
func memory() (total, used, cache uint64) {
	if u, err := readUint("/sys/fs/cgroup/memory/memory.usage_in_bytes"); err == nil {
		limit, _ := readUint("/sys/fs/cgroup/memory/memory.limit_in_bytes")
		stat := readKeyed("/sys/fs/cgroup/memory/memory.stat", " ")
		_, memTotal, _ := meminfo()
		if limit == 0 || limit > memTotal {
			limit = memTotal
		}
		cache = stat["cache"]
		if u > cache {
			used = u - cache
		}
		return limit, used, cache
	}
	return meminfo()
}

func meminfo() (total, used, cache uint64) {
	m := readKeyed("/proc/meminfo", ":")
	total = m["MemTotal"] * 1024
	avail := m["MemAvailable"] * 1024
	cache = (m["Cached"] + m["Buffers"]) * 1024
	if total > avail {
		used = total - avail
	}
	return total, used, cache
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func readKeyed(path, sep string) map[string]uint64 {
	out := map[string]uint64{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, sep)
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err == nil {
			out[strings.TrimSpace(k)] = n
		}
	}
	return out
}

func (d *Daemon) handleMetrics(w http.ResponseWriter, r *http.Request) {
	total, used, cache := memory()
	var st unix.Statfs_t
	var diskTotal, diskUsed uint64
	if err := unix.Statfs("/", &st); err == nil {
		diskTotal = st.Blocks * uint64(st.Bsize)
		diskUsed = (st.Blocks - st.Bfree) * uint64(st.Bsize)
	}
	m := metrics{
		Timestamp:   time.Now().Unix(),
		CPUCount:    runtime.NumCPU(),
		CPUUsedPct:  cpuUsage.percent(),
		MemTotal:    total,
		MemUsed:     used,
		MemCache:    cache,
		MemTotalMiB: total >> 20,
		MemUsedMiB:  used >> 20,
		DiskUsed:    diskUsed,
		DiskTotal:   diskTotal,
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m)
}
