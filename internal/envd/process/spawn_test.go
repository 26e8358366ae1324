package process

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTaskLimitsFromPidsMax(t *testing.T) {
	dir := t.TempDir()
	old := pidsMaxPath
	t.Cleanup(func() { pidsMaxPath = old })
	pidsMaxPath = filepath.Join(dir, "pids.max")
	type limits struct{ own, root uint64 }
	cases := map[string]limits{
		"1024\n": {1024 - envdTaskReserve, 1024 - envdTaskReserve - rootTaskReserve},
		"max\n":  {}, "100\n": {}, "garbage": {},
	}
	for content, want := range cases {
		os.WriteFile(pidsMaxPath, []byte(content), 0o644)
		if own, root := taskLimits(); own != want.own || root != want.root {
			t.Errorf("pids.max %q: limits %d/%d, want %+v", content, own, root, want)
		}
	}
	os.Remove(pidsMaxPath)
	if own, root := taskLimits(); own != 0 || root != 0 {
		t.Errorf("missing pids.max: limits %d/%d", own, root)
	}
}

func TestLimitTasksAppliesToChild(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	limitTasks(cmd.Process.Pid, 777)
	var rl unix.Rlimit
	if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_NPROC, nil, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur != 777 || rl.Max != 777 {
		t.Fatalf("child RLIMIT_NPROC = %d/%d, want 777", rl.Cur, rl.Max)
	}
	b, _ := os.ReadFile("/proc/self/limits")
	if strings.Contains(string(b), "Max processes             777") {
		t.Fatal("the limit leaked into envd itself")
	}
}
