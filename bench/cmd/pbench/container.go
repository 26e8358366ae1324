package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/runtime"
)

// The floor containers get what a Paddock sandbox of the base template gets
// (internal/runtime/local/container.go and internal/sandbox): the same
// namespaces (user mapped at runtime.UIDBase, pid, ipc, uts, mount, cgroup,
// network), Docker's default capabilities and seccomp profile for the native
// architecture, runc's example mounts and masked paths, cgroup v1 limits of
// 2 CPUs, 512 MiB (+ swap) and 1024 pids, RLIMIT_NOFILE. What they do not
// get: the envd binary and /etc bind mounts, and a veth (their network
// namespace is a fresh, loopback-only one made by the runtime).
const (
	floorCPUs     = 2
	floorMemoryMB = 512
	floorPids     = 1024
	cpuPeriod     = 100000
	cgroupParent  = "paddock-bench"
)

var dockerCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// sandboxSpec returns the OCI spec of a floor container running args on rootfs.
// knobs switch parts of the floor off, to attribute its cost (diagnosis only;
// the reported floor uses the defaults).
type knobs struct {
	noSeccomp bool
	netns     string // join this network namespace instead of creating one
}

func sandboxSpec(id, rootfs string, args []string, k knobs) (*specs.Spec, error) {
	spec := specconv.Example()
	spec.Root = &specs.Root{Path: rootfs}
	spec.Hostname = id
	p := spec.Process
	p.Terminal = false
	p.Args = args
	p.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	p.Cwd = "/"
	p.NoNewPrivileges = false
	p.Capabilities = &specs.LinuxCapabilities{Bounding: dockerCaps, Effective: dockerCaps, Permitted: dockerCaps}
	nofile := sandboxNofile()
	p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile}}

	lin := spec.Linux
	lin.Namespaces = []specs.LinuxNamespace{
		{Type: specs.UserNamespace}, {Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
		{Type: specs.NetworkNamespace, Path: k.netns},
	}
	if k.netns != "" {
		// As the local runtime does: a network namespace owned by the host's
		// user namespace cannot get a fresh sysfs; bind the host's instead.
		for i, m := range spec.Mounts {
			if m.Destination == "/sys" {
				spec.Mounts[i] = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys",
					Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
			}
		}
	}
	lin.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: runtime.UIDBase, Size: runtime.UIDCount}}
	lin.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: runtime.UIDBase, Size: runtime.UIDCount}}
	lin.CgroupsPath = "/" + cgroupParent + "/" + id
	lin.MaskedPaths = append(lin.MaskedPaths, "/proc/interrupts", "/sys/devices/virtual/powercap")
	lin.RootfsPropagation = "rslave"

	mem := int64(floorMemoryMB) << 20
	lin.Resources.Memory = &specs.LinuxMemory{Limit: &mem}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		swap := mem
		lin.Resources.Memory.Swap = &swap
	}
	quota, period := int64(floorCPUs*cpuPeriod), uint64(cpuPeriod)
	lin.Resources.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	pids := int64(floorPids)
	lin.Resources.Pids = &specs.LinuxPids{Limit: &pids}

	prof, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	native := map[string]specs.Arch{"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64}[goruntime.GOARCH]
	if native != "" && slices.Contains(prof.Architectures, native) {
		prof.Architectures = []specs.Arch{native}
	}
	if !k.noSeccomp {
		lin.Seccomp = prof
	}
	return spec, nil
}

// specconvMu serialises specconv, which writes to a package-level device
// list (the local runtime does the same).
var specconvMu sync.Mutex

// libcontainerConfig converts spec as the local runtime does.
func libcontainerConfig(id string, spec *specs.Spec) (*configs.Config, error) {
	specconvMu.Lock()
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: spec})
	if err == nil {
		for i, d := range cfg.Devices {
			dc := *d
			cfg.Devices[i] = &dc
		}
	}
	specconvMu.Unlock()
	if err != nil {
		return nil, err
	}
	nofile := sandboxNofile()
	cfg.Rlimits = []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: nofile, Soft: nofile}}
	return cfg, nil
}

// mountOverlay mounts an overlay of layer (read-only) under a fresh upper dir
// owned by the container's root at dir/rootfs, as the local runtime does.
func mountOverlay(dir, layer string) (string, error) {
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{dir, upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return "", err
	}
	if err := os.Chown(upper, runtime.UIDBase, runtime.UIDBase); err != nil {
		return "", err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,index=off,redirect_dir=off,metacopy=off", layer, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("mount overlay on %s: %w", merged, err)
	}
	return merged, nil
}

// unmountOverlay unmounts dir/rootfs and removes dir.
func unmountOverlay(dir string) error {
	merged := filepath.Join(dir, "rootfs")
	if err := unix.Unmount(merged, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", merged, err)
		}
	}
	return os.RemoveAll(dir)
}

// checkLayer fails unless layer looks like a template layer (a root
// filesystem with /bin/true owned by the shifted root).
func checkLayer(layer string) error {
	if layer == "" || !filepath.IsAbs(layer) {
		return fmt.Errorf("--layer must be an absolute path to a template layer (got %q)", layer)
	}
	if strings.ContainsAny(layer, ":,") {
		return fmt.Errorf("--layer %q contains ':' or ','", layer)
	}
	if _, err := os.Stat(filepath.Join(layer, "bin/true")); err != nil {
		return fmt.Errorf("--layer %s is not a root filesystem: %w", layer, err)
	}
	return nil
}

// removeCgroups removes what is left of the floor's cgroup parent.
func removeCgroups() {
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		_ = unix.Rmdir(filepath.Join("/sys/fs/cgroup", e.Name(), cgroupParent))
	}
}

// sandboxNofile is the RLIMIT_NOFILE the local runtime gives sandboxes:
// 1048576, or this process's hard limit when it is lower (without
// CAP_SYS_RESOURCE in the initial user namespace it cannot be raised).
func sandboxNofile() uint64 {
	const want = 1048576
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil || cur.Max >= want {
		return want
	}
	return cur.Max
}
