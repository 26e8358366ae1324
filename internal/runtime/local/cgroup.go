package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// cgroupMounts returns the mount points of every cgroup hierarchy (v1
// controllers and the v2 unified one).
func cgroupMounts() ([]string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if m.Root == "/" {
			out = append(out, m.Mountpoint)
		}
	}
	return out, nil
}

// CgroupDirs returns the existing directories of the cgroup path p (as in
// "/paddock/<id>") in every hierarchy.
func cgroupDirs(p string) ([]string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		d := filepath.Join(m, p)
		if _, err := os.Stat(d); err == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// removeCgroups kills whatever still runs in cgroup path p and removes its
// directories (and sub-cgroups) in every hierarchy. Used after libcontainer's
// own destroy, or instead of it when its state is missing.
func removeCgroups(p string) error {
	dirs, err := cgroupDirs(p)
	if err != nil {
		return fmt.Errorf("remove cgroups: %w", err)
	}
	if len(dirs) == 0 {
		return nil
	}
	for _, d := range dirs {
		if strings.Contains(d, "/freezer/") {
			_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
		}
	}
	var errs []error
	for _, d := range dirs {
		if err := removeCgroupDir(d); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove cgroups: %w", errors.Join(errs...))
	}
	return nil
}

func removeCgroupDir(d string) error {
	ents, err := os.ReadDir(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeCgroupDir(filepath.Join(d, e.Name())); err != nil {
				return err
			}
		}
	}
	delay := time.Millisecond
	for try := 0; ; try++ {
		killCgroupProcs(d)
		err := unix.Rmdir(d)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || try == 12 {
			return fmt.Errorf("rmdir %s: %w", d, err)
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

func killCgroupProcs(d string) {
	b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}
