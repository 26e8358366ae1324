package local

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStatsSourceReadsCgroupV1AndV2(t *testing.T) {
	v1 := t.TempDir()
	writeFiles(t, v1, map[string]string{
		"cpuacct.usage":         "1500000000\n",
		"memory.usage_in_bytes": "10485760\n",
		"memory.stat":           "cache 4194304\nrss 6291456\ntotal_cache 4194304\n",
		"pids.current":          "3\n",
	})
	got, err := (&statsSource{cpuacct: v1, memory: v1, pids: v1, cpus: 2, memoryLimit: 512 << 20}).read()
	if err != nil {
		t.Fatal(err)
	}
	if got.CPUUsage != 1500*time.Millisecond || got.MemoryUsed != 6<<20 || got.MemoryCache != 4<<20 || got.Pids != 3 || got.CPUs != 2 || got.MemoryLimit != 512<<20 {
		t.Errorf("cgroup v1: %+v", got)
	}

	v2 := t.TempDir()
	writeFiles(t, v2, map[string]string{
		"cpu.stat":       "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
		"memory.current": "4194304\n",
		"memory.stat":    "anon 4194304\nfile 5242880\n",
		"pids.current":   "1\n",
	})
	got, err = (&statsSource{v2: v2}).read()
	if err != nil {
		t.Fatal(err)
	}
	// Cache above usage (possible between two reads) clamps used at 0.
	if got.CPUUsage != 2500*time.Microsecond || got.MemoryUsed != 0 || got.MemoryCache != 5<<20 || got.Pids != 1 {
		t.Errorf("cgroup v2: %+v", got)
	}
}

func TestStatsSourceErrors(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "removed")
	if _, err := (&statsSource{cpuacct: gone, memory: gone, pids: gone}).read(); err == nil {
		t.Error("read of a removed cgroup succeeded")
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"cpuacct.usage":         "12\n",
		"memory.usage_in_bytes": "not a number\n",
		"memory.stat":           "rss 1\n",
		"pids.current":          "1\n",
	})
	if _, err := (&statsSource{cpuacct: dir, memory: dir, pids: dir}).read(); err == nil {
		t.Error("read of a malformed counter succeeded")
	}
	writeFiles(t, dir, map[string]string{"memory.usage_in_bytes": "5\n"})
	if _, err := (&statsSource{cpuacct: dir, memory: dir, pids: dir}).read(); err == nil {
		t.Error("read without the cache line of memory.stat succeeded")
	}
}

// readCgroupFile returns a file whole, whatever its size against its first
// buffer, and a missing file as fs.ErrNotExist.
func TestReadCgroupFile(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 10, 4095, 4096, 4097, 10000} {
		want := bytes.Repeat([]byte{'x'}, size)
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readCgroupFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got), err)
		}
	}
	if _, err := readCgroupFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
