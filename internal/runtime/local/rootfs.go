package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/runtime"
)

// maxDiskWalk bounds the entries Stats walks to size a writable layer.
const maxDiskWalk = 100000

// maxMountData is the kernel's limit on mount(2)'s option string (a page,
// including the terminating NUL).
var maxMountData = os.Getpagesize() - 1

// mountRootfs mounts the sandbox's overlay (layers lowest first) at
// dir/rootfs over a fresh writable layer dir/upper owned by the sandbox's
// root, and returns the merged dir.
func mountRootfs(dir string, layers []string) (string, error) {
	upper := filepath.Join(dir, "upper")
	work := filepath.Join(dir, "work")
	merged := filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
	}
	// The root of the merged tree takes its owner from the upper dir.
	if err := os.Chown(upper, runtime.UIDBase, runtime.UIDBase); err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	return mountOverlay(dir, layers)
}

// mountOverlay mounts the overlay of an existing dir/upper and dir/work
// (layers lowest first) at dir/rootfs and returns that merged dir.
func mountOverlay(dir string, layers []string) (string, error) {
	upper := filepath.Join(dir, "upper")
	work := filepath.Join(dir, "work")
	merged := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(merged, 0o755); err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = filepath.Clean(l) // overlayfs wants the highest first
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,index=off,redirect_dir=off,metacopy=off",
		strings.Join(lower, ":"), upper, work)
	if len(opts) > maxMountData {
		// mount(2) takes one page of options: pass the layers one by one.
		if err := mountOverlayLayers(merged, lower, upper, work); err != nil {
			return "", fmt.Errorf("rootfs: mount overlay of %d layers on %s: %w", len(lower), merged, err)
		}
		return merged, nil
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("rootfs: mount overlay on %s: %w", merged, err)
	}
	return merged, nil
}

// mountOverlayLayers mounts the overlay with the new mount API, one
// "lowerdir+" per layer (highest first, Linux 6.8+), for stacks whose
// paths do not fit in mount(2)'s one page of options.
func mountOverlayLayers(merged string, lower []string, upper, work string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fd, k, v); err != nil {
			return fmt.Errorf("overlay option %s=%s: %w", k, v, err)
		}
		return nil
	}
	for _, l := range lower {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	for _, kv := range [][2]string{{"upperdir", upper}, {"workdir", work}, {"index", "off"}, {"redirect_dir", "off"}, {"metacopy", "off"}} {
		if err := set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, merged, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move overlay mount to %s: %w", merged, err)
	}
	return nil
}

// detachHostMounts lazily unmounts, from the runtime's mount namespace, the
// root filesystem and sysfs of the sandbox at dir once its container runs.
// The container's mount namespace holds mounts of its own of both; the
// runtime's copies served only to build it. Every mount left here would be
// copied into each later container's new mount namespace and detached again
// by its init: about 7.5 ms more per create for each 1,000 mounts, so with
// two per sandbox the creates slowed as the sandboxes added up. Restore and
// CreateFromSnapshot mount both again before they start a container.
func detachHostMounts(dir string) error {
	var errs []error
	for _, m := range []string{filepath.Join(dir, "sys"), filepath.Join(dir, "rootfs")} {
		err := unix.Unmount(m, unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("detach %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// unmountAll unmounts everything mounted at or below dir and checks that
// nothing is left.
func unmountAll(dir string) error {
	for attempt := 0; attempt < 3; attempt++ {
		mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		if err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		if len(mounts) == 0 {
			return nil
		}
		// Deepest first.
		sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
		for _, m := range mounts {
			err := unix.Unmount(m.Mountpoint, 0)
			if errors.Is(err, unix.EBUSY) {
				err = unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
			}
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m.Mountpoint, err)
			}
		}
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if len(mounts) > 0 {
		return fmt.Errorf("unmount %s: %s is still mounted", dir, mounts[0].Mountpoint)
	}
	return nil
}

// etcFiles are the host paths of a sandbox's /etc files.
type etcFiles struct {
	hostname, hosts, resolvConf string
}

// etcPaths are the paths of a sandbox's /etc files in dir.
func etcPaths(dir string) etcFiles {
	etc := filepath.Join(dir, "etc")
	return etcFiles{
		hostname:   filepath.Join(etc, "hostname"),
		hosts:      filepath.Join(etc, "hosts"),
		resolvConf: filepath.Join(etc, "resolv.conf"),
	}
}

// writeEtc writes the sandbox's hostname, hosts and resolv.conf into
// dir/etc, owned by the sandbox's root (they are bind-mounted read-write so
// the sandbox can edit them without touching its writable layer).
func writeEtc(dir, hostname string, resolv []byte) (etcFiles, error) {
	etc := filepath.Join(dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		return etcFiles{}, fmt.Errorf("etc files: %w", err)
	}
	f := etcPaths(dir)
	if len(resolv) == 0 {
		resolv = []byte("# this sandbox has no network\n")
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t" + hostname + "\n"
	for path, content := range map[string][]byte{
		f.hostname:   []byte(hostname + "\n"),
		f.hosts:      []byte(hosts),
		f.resolvConf: resolv,
	} {
		if err := os.WriteFile(path, content, 0o644); err != nil {
			return etcFiles{}, fmt.Errorf("etc files: %w", err)
		}
		if err := os.Chown(path, runtime.UIDBase, runtime.UIDBase); err != nil {
			return etcFiles{}, fmt.Errorf("etc files: %w", err)
		}
	}
	return f, nil
}

// diskUsage sums the allocated size of the files under dir, stopping after
// max entries.
func diskUsage(dir string, max int) int64 {
	var total int64
	n := 0
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		n++
		if n > max {
			return filepath.SkipAll
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

// etcUsage is the size of the sandbox's /etc files.
func etcUsage(dir string) int64 {
	var total int64
	ents, err := os.ReadDir(filepath.Join(dir, "etc"))
	if err != nil {
		return 0
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			total += info.Size()
		}
	}
	return total
}
