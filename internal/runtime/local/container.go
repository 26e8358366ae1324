package local

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/runtime"
)

// defaultCaps is Docker's default capability set, given to envd (root of
// the sandbox's user namespace), which drops to users itself.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// cpuPeriod is the CFS period every sandbox's CPU quota is expressed in.
const cpuPeriod = 100000

// maxOpenFiles is RLIMIT_NOFILE (soft and hard) inside sandboxes, when the
// runtime may raise limits (CAP_SYS_RESOURCE); otherwise sandboxes get the
// runtime's own hard limit.
const maxOpenFiles = 1048576

// sandboxNofile returns the RLIMIT_NOFILE to give sandboxes.
func sandboxNofile() uint64 {
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil {
		return maxOpenFiles
	}
	if cur.Max >= maxOpenFiles || hasCap(unix.CAP_SYS_RESOURCE) {
		return maxOpenFiles
	}
	return cur.Max
}

// hasCap reports whether this process has capability c in its effective set.
func hasCap(c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<uint(c)) != 0
		}
	}
	return false
}

type containerParams struct {
	id        string
	rootfs    string // absolute path of the merged root filesystem
	hostname  string
	resources runtime.Resources
	netnsPath string // network namespace to join; empty: a private one
	etc       etcFiles
	sysfs     string // host-side sysfs of netnsPath to bind at /sys
}

// nativeArches are the seccomp names of the architectures Go builds for.
var nativeArches = map[string]specs.Arch{
	"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64, "ppc64le": specs.ArchPPC64LE,
	"s390x": specs.ArchS390X, "riscv64": specs.ArchRISCV64, "loong64": specs.ArchLOONGARCH64,
}

// nativeOnly keeps the native architecture of a profile's list (dropping
// 32-bit compat ones such as x86 and x32 on amd64).
func nativeOnly(arches []specs.Arch) []specs.Arch {
	native, ok := nativeArches[goruntime.GOARCH]
	if !ok || !slices.Contains(arches, native) {
		return arches
	}
	return []specs.Arch{native}
}

// specconvMu serialises specconv.CreateLibcontainerConfig: it writes the
// owner of each default device into specconv's package-level device list.
var specconvMu sync.Mutex

// convertSpec converts spec to a libcontainer config whose device list is
// the sandbox's own copy.
func convertSpec(id string, spec *specs.Spec) (*configs.Config, error) {
	specconvMu.Lock()
	defer specconvMu.Unlock()
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: spec})
	if err != nil {
		return nil, err
	}
	for i, d := range cfg.Devices {
		dc := *d
		cfg.Devices[i] = &dc
	}
	return cfg, nil
}

// cgroupPath is the sandbox's cgroup path inside each v1 hierarchy.
func (r *Runtime) cgroupPath(id string) string {
	return "/" + r.cfg.CgroupParent + "/" + id
}

// containerConfig builds the libcontainer config of one sandbox: runc's
// example spec with Docker's defaults layered on, converted by specconv.
func (r *Runtime) containerConfig(p containerParams) (*configs.Config, error) {
	spec := specconv.Example()
	spec.Root = &specs.Root{Path: p.rootfs, Readonly: false}
	spec.Hostname = p.hostname
	// libcontainer passes this file to CRIU as its configuration file: the
	// options it cannot express (external files, TCP handling) go there.
	spec.Annotations = map[string]string{"org.criu.config": filepath.Join(r.dir(p.id), criuConfName)}

	proc := spec.Process
	proc.Terminal = false
	proc.Args = []string{EnvdPath, "envd"} // the Process given to Run overrides these
	proc.NoNewPrivileges = false
	proc.Capabilities = &specs.LinuxCapabilities{
		Bounding:  defaultCaps,
		Effective: defaultCaps,
		Permitted: defaultCaps,
	}

	// Mounts: the example's plus envd and the per-sandbox /etc files. When
	// the sandbox joins a network namespace owned by the host's user
	// namespace it may not mount sysfs itself; it gets a bind of the sysfs
	// the runtime mounted from inside that namespace instead.
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		if m.Destination == "/sys" && p.sysfs != "" {
			m = specs.Mount{
				Destination: "/sys",
				Type:        "bind",
				Source:      p.sysfs,
				Options:     []string{"bind", "nosuid", "noexec", "nodev", "ro"},
			}
		}
		mounts = append(mounts, m)
	}
	mounts = append(mounts,
		specs.Mount{Destination: EnvdPath, Type: "bind", Source: r.cfg.EnvdBinary,
			Options: []string{"bind", "ro", "nosuid", "nodev"}},
		specs.Mount{Destination: "/etc/hostname", Type: "bind", Source: p.etc.hostname,
			Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}},
		specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: p.etc.hosts,
			Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}},
		specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: p.etc.resolvConf,
			Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}},
	)
	spec.Mounts = mounts

	lin := spec.Linux
	lin.Namespaces = []specs.LinuxNamespace{
		{Type: specs.UserNamespace},
		{Type: specs.PIDNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
		{Type: specs.MountNamespace},
		{Type: specs.CgroupNamespace},
		{Type: specs.NetworkNamespace, Path: p.netnsPath},
	}
	lin.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: runtime.UIDBase, Size: runtime.UIDCount}}
	lin.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: runtime.UIDBase, Size: runtime.UIDCount}}
	lin.CgroupsPath = r.cgroupPath(p.id)
	lin.MaskedPaths = append(lin.MaskedPaths, "/proc/interrupts", "/sys/devices/virtual/powercap")
	lin.RootfsPropagation = "rslave"

	res := lin.Resources
	if mem := p.resources.MemoryBytes; mem > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &mem}
		if r.memsw {
			swap := mem
			res.Memory.Swap = &swap
		}
	}
	if cpus := p.resources.CPUs; cpus > 0 {
		quota := int64(cpus * cpuPeriod)
		period := uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if pids := p.resources.Pids; pids > 0 {
		res.Pids = &specs.LinuxPids{Limit: &pids}
	}

	// Docker's default seccomp profile, resolved against the capabilities
	// above (it allows more syscalls to holders of some capabilities). By
	// default for the native architecture only: 32-bit compat system calls
	// are refused, and the filter, which libseccomp compiles in every
	// sandbox's init, builds about three times faster (~50 ms per create
	// here).
	prof, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	if !r.cfg.Compat32Bit {
		prof.Architectures = nativeOnly(prof.Architectures)
	}
	lin.Seccomp = prof

	cfg, err := convertSpec(p.id, spec)
	if err != nil {
		return nil, err
	}
	// No session keyring per sandbox: every sandbox's root is the same host
	// uid, whose kernel key quota (kernel.keys.maxkeys, 200 by default)
	// would cap the host at about 200 sandboxes. The seccomp profile above
	// refuses add_key, keyctl and request_key, so sandboxes cannot use the
	// keyring they inherit.
	cfg.NoNewKeyring = true
	// specconv leaves process rlimits to the runc CLI.
	cfg.Rlimits = []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: r.nofile, Soft: r.nofile}}
	if !filepath.IsAbs(cfg.Rootfs) {
		return nil, fmt.Errorf("rootfs %q is not absolute", cfg.Rootfs)
	}
	return cfg, nil
}
