package local_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/runc/libcontainer"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/runtime/conformance"
	"github.com/paddockhq/paddock/internal/runtime/local"
	"github.com/paddockhq/paddock/internal/runtime/local/network"
)

// libcontainer re-executes this test binary as the container init.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		local.Init()
	}
}

var (
	testDir  string   // scratch dir, searchable by sandbox user namespaces
	envdBin  string   // static paddock binary
	initPath string   // static paddock-init binary (the small container init)
	initBin  []byte   // its bytes, every test Runtime's InitBinary
	layers   []string // busybox layers, lowest first
	cgParent = fmt.Sprintf("paddock-test-%d", os.Getpid())
)

const helperEnv = "PADDOCK_LOCAL_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the local runtime tests need root (namespaces, cgroups, overlayfs)")
		os.Exit(1)
	}
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: test setup:", err)
		code = 1
	} else {
		code = m.Run()
	}
	cleanup()
	os.Exit(code)
}

func setup() (int, error) {
	var err error
	testDir, err = os.MkdirTemp("", "paddock-local-test-")
	if err != nil {
		return 0, err
	}
	if err := os.Chmod(testDir, 0o711); err != nil {
		return 0, err
	}
	if p := os.Getenv("PADDOCK_TEST_ENVD_BINARY"); p != "" {
		envdBin = p
	} else if envdBin, err = conformance.BuildPaddock(testDir); err != nil {
		return 0, err
	}
	if p := os.Getenv("PADDOCK_TEST_INIT_BINARY"); p != "" {
		initPath = p
	} else if initPath, err = conformance.BuildInit(testDir); err != nil {
		return 0, err
	}
	if initBin, err = os.ReadFile(initPath); err != nil {
		return 0, err
	}
	if layers, err = conformance.BusyboxLayers(filepath.Join(testDir, "layers")); err != nil {
		return 0, err
	}
	return 0, nil
}

func cleanup() {
	if testDir != "" {
		if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(testDir)); len(ms) > 0 {
			fmt.Fprintf(os.Stderr, "test cleanup: %d mounts left under %s (first %s); not removing it\n", len(ms), testDir, ms[0].Mountpoint)
		} else {
			os.RemoveAll(testDir)
		}
	}
	for _, c := range cgroupHierarchies() {
		os.Remove(filepath.Join(c, cgParent))
	}
}

func cgroupHierarchies() []string {
	ms, _ := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out
}

// driver builds runtimes for the conformance suite and remembers the root
// dir of each.
type driver struct {
	mu     sync.Mutex
	roots  map[runtime.Runtime]string
	net    *network.Manager
	netCfg *network.Config
	netDir string
	bridge string
}

func newDriver(netMgr *network.Manager) *driver {
	return &driver{roots: map[runtime.Runtime]string{}, net: netMgr}
}

func (d *driver) open(t testing.TB, root string, logger *slog.Logger) *local.Runtime {
	t.Helper()
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	rt, err := local.New(local.Config{
		RootDir:      root,
		CgroupParent: cgParent,
		EnvdBinary:   envdBin,
		InitBinary:   initBin,
		Network:      d.network(),
		Logger:       logger,
	})
	if err != nil {
		t.Fatalf("local.New: %v", err)
	}
	d.mu.Lock()
	d.roots[rt] = root
	d.mu.Unlock()
	return rt
}

func (d *driver) root(rt runtime.Runtime) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.roots[rt]
}

func newRoot(t testing.TB) string {
	t.Helper()
	root, err := os.MkdirTemp(testDir, "root-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(root)); len(ms) == 0 {
			os.RemoveAll(root)
		}
	})
	return root
}

func (d *driver) harness() conformance.Harness {
	return conformance.Harness{
		New: func(t *testing.T) runtime.Runtime { return d.open(t, newRoot(t), nil) },
		Reopen: func(t *testing.T, rt runtime.Runtime) runtime.Runtime {
			d.restartNetwork(t)
			return d.open(t, d.root(rt), nil)
		},
		Layers:            layers,
		Traces:            d.traces,
		Resources:         d.resources,
		MemoryCheckpoints: true,
		NewLayerDir: func(t *testing.T) string {
			dir, err := os.MkdirTemp(testDir, "layer-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		},
	}
}

// traces lists what is left of sandbox id on the host.
func (d *driver) traces(t *testing.T, rt runtime.Runtime, id string) []string {
	root := d.root(rt)
	var out []string
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(root, "sandboxes", id)))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		out = append(out, "mount "+m.Mountpoint)
	}
	// No thread of this process may pin a mount namespace that still holds
	// the sandbox's overlay.
	sbDir := filepath.Join(root, "sandboxes", id)
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "mountinfo"))
		if err == nil && bytes.Contains(b, []byte(sbDir)) {
			out = append(out, "mount of "+sbDir+" seen by thread "+task.Name())
		}
	}
	for _, p := range []string{filepath.Join(root, "sandboxes", id), filepath.Join(root, "state", id)} {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, "path "+p)
		}
	}
	for _, c := range cgroupHierarchies() {
		p := filepath.Join(c, cgParent, id)
		if _, err := os.Stat(p); err == nil {
			out = append(out, "cgroup "+p)
		}
	}
	if m := d.network(); m != nil {
		if ep, err := m.Get(id); err == nil {
			out = append(out, fmt.Sprintf("network endpoint %+v", ep))
		}
		if _, err := os.Lstat(filepath.Join(d.netDir, "netns", id)); err == nil {
			out = append(out, "netns "+id)
		}
	}
	return out
}

// resources counts host resources the driver uses: only its own, since
// other work on the host may change global counts meanwhile.
func (d *driver) resources(t *testing.T, rt runtime.Runtime) map[string]int {
	root := d.root(rt)
	out := map[string]int{}
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(testDir))
	if err != nil {
		t.Fatal(err)
	}
	out["mounts"] = len(ms)
	for _, c := range cgroupHierarchies() {
		ents, _ := os.ReadDir(filepath.Join(c, cgParent))
		for _, e := range ents {
			if e.IsDir() {
				out["cgroups"]++
			}
		}
	}
	if d.netCfg != nil {
		ports, _ := os.ReadDir(filepath.Join("/sys/class/net", d.bridge, "brif"))
		out["bridge ports"] = len(ports)
		ns, _ := os.ReadDir(filepath.Join(d.netDir, "netns"))
		out["netns files"] = len(ns)
	}
	_ = filepath.WalkDir(root, func(string, fs.DirEntry, error) error { out["files"]++; return nil })
	// os.FindProcess handles (pidfds) libcontainer opens for signals are
	// closed by finalizers: let them run before counting descriptors.
	for range 3 {
		goruntime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	out["fds"] = len(fds)
	if os.Getenv("DBG") != "" {
		for _, f := range fds {
			l, _ := os.Readlink("/proc/self/fd/" + f.Name())
			t.Logf("fd %s -> %s", f.Name(), l)
		}
	}
	out["children"] = countChildren()
	return out
}

// countChildren counts this process's child processes (zombies included).
func countChildren() int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == self {
				n++
			}
		}
	}
	return n
}

func TestConformance(t *testing.T) {
	conformance.Run(t, newDriver(nil).harness())
}

func TestConformanceNetwork(t *testing.T) {
	d := newNetDriver(t)
	conformance.Run(t, d.harness())
}

// newNetDriver starts a network manager on a test bridge and subnet.
func newNetDriver(t testing.TB) *driver {
	t.Helper()
	dir, err := os.MkdirTemp(testDir, "net-")
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(nil)
	d.netDir = dir
	// 10.160-189.0.0/16: away from the network package's own test subnets
	// (10.232 and 10.233) and the default (10.231), which tests running at
	// the same time may use.
	d.netCfg = &network.Config{
		Bridge:   fmt.Sprintf("pdkt%d", os.Getpid()%100000),
		Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(160 + os.Getpid()%30), 0, 0}), 16),
		StateDir: filepath.Join(dir, "state"),
		NetnsDir: filepath.Join(dir, "netns"),
	}
	d.bridge = d.netCfg.Bridge
	if d.net, err = network.New(*d.netCfg); err != nil {
		t.Fatalf("network.New: %v", err)
	}
	t.Cleanup(func() {
		m := d.network()
		if err := m.Teardown(); err != nil {
			t.Errorf("network teardown: %v", err)
		}
		m.Close()
	})
	return d
}

// network returns the driver's current network manager.
func (d *driver) network() *network.Manager {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.net
}

// restartNetwork replaces the network manager by a new one over the same
// state, as a restarted process would have.
func (d *driver) restartNetwork(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.net == nil {
		return
	}
	if err := d.net.Close(); err != nil {
		t.Errorf("close network manager: %v", err)
	}
	m, err := network.New(*d.netCfg)
	if err != nil {
		t.Fatalf("reopen network manager: %v", err)
	}
	d.net = m
}

// sandbox creates a sandbox on a fresh runtime and waits for envd.
func sandbox(t *testing.T, d *driver, spec runtime.Spec) (*local.Runtime, string) {
	t.Helper()
	root := newRoot(t)
	rt := d.open(t, root, nil)
	t.Cleanup(func() { rt.Close() })
	if spec.ID == "" {
		spec.ID = conformance.NewID()
	}
	spec.Layers = layers
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Destroy(context.Background(), spec.ID); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	if err := conformance.WaitHealthy(ctx, rt, spec.ID); err != nil {
		t.Fatal(err)
	}
	return rt, root
}

func container(t *testing.T, root, id string) *libcontainer.Container {
	t.Helper()
	c, err := libcontainer.Load(filepath.Join(root, "state"), id)
	if err != nil {
		t.Fatalf("load container: %v", err)
	}
	return c
}

func initPid(t *testing.T, root, id string) int {
	t.Helper()
	st, err := container(t, root, id).State()
	if err != nil {
		t.Fatal(err)
	}
	return st.InitProcessPid
}

// execIn runs a command inside the sandbox through libcontainer (tests only;
// production runs commands through envd) and returns its output and exit code.
func execIn(t *testing.T, root, id string, args ...string) (string, int) {
	t.Helper()
	c := container(t, root, id)
	var out bytes.Buffer
	p := &libcontainer.Process{
		Args:   args,
		Env:    []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin"},
		Cwd:    "/",
		Stdout: &out,
		Stderr: &out,
	}
	if err := c.Run(p); err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	st, err := p.Wait()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("exec %v: wait: %v", args, err)
		}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		} else {
			code = ws.ExitStatus()
		}
	}
	return out.String(), code
}

func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestIsolation checks from the host what the sandbox's init runs with.
func TestIsolation(t *testing.T) {
	d := newDriver(nil)
	id := conformance.NewID()
	rt, root := sandbox(t, d, runtime.Spec{ID: id, Hostname: "isolated",
		Resources: runtime.Resources{CPUs: 0.5, MemoryBytes: 256 << 20, Pids: 100}})
	pid := initPid(t, root, id)

	st := procStatus(t, pid)
	if st["Seccomp"] != "2" {
		t.Errorf("init Seccomp: %q, want 2 (filter)", st["Seccomp"])
	}
	if st["NoNewPrivs"] != "0" {
		t.Errorf("init NoNewPrivs: %q, want 0", st["NoNewPrivs"])
	}
	// Docker's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
	// SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD
	// AUDIT_WRITE SETFCAP.
	const dockerCaps = "00000000a80425fb"
	for _, k := range []string{"CapBnd", "CapEff", "CapPrm"} {
		if st[k] != dockerCaps {
			t.Errorf("init %s: %s, want %s", k, st[k], dockerCaps)
		}
	}
	for _, f := range []string{"uid_map", "gid_map"} {
		got := strings.Fields(readTrim(t, fmt.Sprintf("/proc/%d/%s", pid, f)))
		want := []string{"0", strconv.Itoa(runtime.UIDBase), strconv.Itoa(runtime.UIDCount)}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("init %s: %v, want %v", f, got, want)
		}
	}
	for _, ns := range []string{"user", "pid", "mnt", "uts", "ipc", "cgroup", "net"} {
		self, _ := os.Readlink("/proc/self/ns/" + ns)
		theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if err != nil || theirs == self {
			t.Errorf("namespace %s: sandbox %q, host %q (err %v); want different", ns, theirs, self, err)
		}
	}
	cmdline := strings.Split(strings.TrimRight(readTrim(t, fmt.Sprintf("/proc/%d/cmdline", pid)), "\x00"), "\x00")
	if want := []string{local.EnvdPath, "envd", "--listen", "0.0.0.0:49983", "--ready-fd", "3"}; strings.Join(cmdline, " ") != strings.Join(want, " ") {
		t.Errorf("init cmdline %q, want %q", cmdline, want)
	}
	var own syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &own); err != nil {
		t.Fatal(err)
	}
	wantNofile := uint64(1048576)
	capEff, err := strconv.ParseUint(procStatus(t, os.Getpid())["CapEff"], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if capEff&(1<<24) == 0 && own.Max < wantNofile {
		wantNofile = own.Max // no CAP_SYS_RESOURCE to raise it (as on this project's VMs)
	}
	limits := readTrim(t, fmt.Sprintf("/proc/%d/limits", pid))
	if !regexpMatch(fmt.Sprintf(`Max open files\s+%d\s+%d`, wantNofile, wantNofile), limits) {
		t.Errorf("init limits: want NOFILE %d, got\n%s", wantNofile, limits)
	}

	// Cgroup limits.
	cg := "/" + cgParent + "/" + id
	checks := map[string]string{
		"/sys/fs/cgroup/memory" + cg + "/memory.limit_in_bytes": strconv.Itoa(256 << 20),
		"/sys/fs/cgroup/cpu" + cg + "/cpu.cfs_quota_us":         "50000",
		"/sys/fs/cgroup/cpu" + cg + "/cpu.cfs_period_us":        "100000",
		"/sys/fs/cgroup/pids" + cg + "/pids.max":                "100",
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		checks["/sys/fs/cgroup/memory"+cg+"/memory.memsw.limit_in_bytes"] = strconv.Itoa(256 << 20)
	}
	for p, want := range checks {
		if got := readTrim(t, p); got != want {
			t.Errorf("%s = %s, want %s", p, got, want)
		}
	}
	procs := readTrim(t, "/sys/fs/cgroup/pids"+cg+"/cgroup.procs")
	if !strings.Contains("\n"+procs+"\n", "\n"+strconv.Itoa(pid)+"\n") {
		t.Errorf("init %d not in its pids cgroup (%q)", pid, procs)
	}

	// The root filesystem, seen through the init's root.
	rootfs := fmt.Sprintf("/proc/%d/root", pid)
	if got := readTrim(t, rootfs+"/etc/motd"); got != "top" {
		t.Errorf("/etc/motd = %q, want the top layer's %q", got, "top")
	}
	if got := readTrim(t, rootfs+"/etc/hostname"); got != "isolated" {
		t.Errorf("/etc/hostname = %q, want isolated", got)
	}
	if got := readTrim(t, rootfs+"/etc/hosts"); !strings.Contains(got, "127.0.0.1\tisolated") {
		t.Errorf("/etc/hosts lacks the hostname: %q", got)
	}
	var rst syscall.Stat_t
	if err := syscall.Stat(rootfs+"/", &rst); err != nil || rst.Uid != runtime.UIDBase || rst.Gid != runtime.UIDBase {
		t.Errorf("sandbox / owned by %d:%d (err %v), want %d", rst.Uid, rst.Gid, err, runtime.UIDBase)
	}
	if err := syscall.Stat(rootfs+"/proc/keys", &rst); err != nil || rst.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		t.Errorf("/proc/keys is not masked (mode %o, err %v)", rst.Mode, err)
	}

	// Inside, through libcontainer exec.
	if out, code := execIn(t, root, id, "id", "-u"); code != 0 || strings.TrimSpace(out) != "0" {
		t.Errorf("id -u: %q (exit %d), want 0", out, code)
	}
	if out, code := execIn(t, root, id, "hostname"); code != 0 || strings.TrimSpace(out) != "isolated" {
		t.Errorf("hostname: %q (exit %d), want isolated", out, code)
	}
	if out, code := execIn(t, root, id, "sh", "-c", "echo hi > /tmp/written && cat /tmp/written"); code != 0 || strings.TrimSpace(out) != "hi" {
		t.Errorf("write a file: %q (exit %d)", out, code)
	}
	if err := syscall.Stat(filepath.Join(root, "sandboxes", id, "upper", "tmp", "written"), &rst); err != nil || rst.Uid != runtime.UIDBase {
		t.Errorf("written file in the upper dir: uid %d, err %v; want uid %d", rst.Uid, err, runtime.UIDBase)
	}
	if out, code := execIn(t, root, id, "mount", "-t", "tmpfs", "none", "/mnt"); code == 0 {
		t.Errorf("mount inside the sandbox succeeded: %q", out)
	}
	if out, code := execIn(t, root, id, "unshare", "-U", "true"); code == 0 {
		t.Errorf("unshare -U inside the sandbox succeeded: %q", out)
	}
	if out, code := execIn(t, root, id, "sh", "-c", "echo x > /proc/sys/kernel/hostname"); code == 0 {
		t.Errorf("writing /proc/sys succeeded: %q", out)
	}
	if out, code := execIn(t, root, id, "sh", "-c", "echo 1 > /sys/fs/cgroup/pids/pids.max"); code == 0 {
		t.Errorf("writing the cgroup fs succeeded: %q", out)
	}
	if out, code := execIn(t, root, id, "sh", "-c", "ls /sys/class/net"); code != 0 || strings.TrimSpace(out) != "lo" {
		t.Errorf("network devices inside: %q (exit %d), want only lo", out, code)
	}

	st2, err := rt.Stats(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st2.DiskUsed <= 0 {
		t.Errorf("Stats DiskUsed %d after writing a file, want > 0", st2.DiskUsed)
	}
	// The cgroup counters, read directly, against libcontainer's own Stats.
	if st2.CPUUsage <= 0 || st2.MemoryUsed <= 0 || st2.Pids < 1 || st2.CPUs <= 0 || st2.MemoryLimit <= 0 {
		t.Errorf("Stats = %+v, want CPU time, memory, pids and limits", st2)
	}
	c, err := libcontainer.Load(filepath.Join(root, "state"), id)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(lc.CgroupStats.PidsStats.Current); st2.Pids != want {
		t.Errorf("Stats Pids %d, libcontainer says %d", st2.Pids, want)
	}
	if lcCPU := time.Duration(lc.CgroupStats.CpuStats.CpuUsage.TotalUsage); st2.CPUUsage > lcCPU {
		t.Errorf("Stats CPUUsage %v is after libcontainer's later reading %v", st2.CPUUsage, lcCPU)
	}
	if got, want := st2.MemoryCache, int64(lc.CgroupStats.MemoryStats.Cache); got == 0 && want != 0 {
		t.Errorf("Stats MemoryCache 0, libcontainer says %d", want)
	}
}

// TestEnvdFiles reads and writes files through envd's /files API in a
// sandbox: the layer order and the user namespace as envd sees them.
func TestEnvdFiles(t *testing.T) {
	d := newDriver(nil)
	id := conformance.NewID()
	rt, root := sandbox(t, d, runtime.Spec{ID: id})
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rt.Dial(ctx, id, runtime.EnvdPort)
		},
	}}
	defer client.CloseIdleConnections()

	resp, err := client.Get("http://envd/files?path=/etc/motd&username=root")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "top\n" {
		t.Errorf("GET /etc/motd: %d %q, want 200 with the top layer's %q", resp.StatusCode, body, "top\n")
	}

	resp, err = client.Post("http://envd/files?path=/home/user/hello.txt&username=user", "application/octet-stream", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST /home/user/hello.txt: %d %s", resp.StatusCode, body)
	}
	var st syscall.Stat_t
	host := filepath.Join(root, "sandboxes", id, "upper", "home", "user", "hello.txt")
	if err := syscall.Stat(host, &st); err != nil {
		t.Fatalf("uploaded file not in the writable layer: %v", err)
	}
	if st.Uid != runtime.UIDBase+1000 || st.Gid != runtime.UIDBase+1000 {
		t.Errorf("uploaded file owned by %d:%d on the host, want %d (user 1000 shifted)", st.Uid, st.Gid, runtime.UIDBase+1000)
	}
}

// Create returns once envd listens (its --ready-fd notice): one dial right
// after it connects, and envd does not keep its end of the notice's pipe.
func TestCreateReturnsWithEnvdListening(t *testing.T) {
	d := newDriver(nil)
	root := newRoot(t)
	rt := d.open(t, root, nil)
	t.Cleanup(func() { rt.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 3; i++ {
		id := conformance.NewID()
		if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: layers}); err != nil {
			t.Fatalf("Create: %v", err)
		}
		t.Cleanup(func() {
			if err := rt.Destroy(context.Background(), id); err != nil {
				t.Errorf("Destroy: %v", err)
			}
		})
		conn, err := rt.Dial(ctx, id, runtime.EnvdPort)
		if err != nil {
			t.Fatalf("sandbox %d: dial envd right after Create: %v", i, err)
		}
		conn.Close()
		// envd closes its end right after writing the notice, which may be
		// a moment after Create returned.
		pid := initPid(t, root, id)
		deadline := time.Now().Add(5 * time.Second)
		for {
			pipes := pipeFds(t, pid)
			if len(pipes) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sandbox %d: envd still holds %v 5 s after Create", i, pipes)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// pipeFds lists the pipes process pid holds open ("fd -> pipe:[inode]").
func pipeFds(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); strings.HasPrefix(target, "pipe:") {
			out = append(out, fd.Name()+" -> "+target)
		}
	}
	return out
}

// Layers reports what List reports of each sandbox's layers, from the meta
// files alone: running sandboxes, a half-created one (no layers recorded)
// and one whose meta is torn (nil: not known).
func TestLayersMatchList(t *testing.T) {
	d := newDriver(nil)
	ctx := context.Background()
	rt, root := sandbox(t, d, runtime.Spec{})
	second := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: second, Layers: layers[:1]}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.Destroy(context.Background(), second); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	for _, c := range []struct{ id, meta string }{
		{conformance.NewID(), `{"createdAt":"2026-01-01T00:00:00Z"}`},
		{conformance.NewID(), ""},
	} {
		dir := filepath.Join(root, "sandboxes", c.id)
		if err := os.MkdirAll(filepath.Join(dir, "upper"), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(c.meta), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := rt.Destroy(context.Background(), c.id); err != nil {
				t.Errorf("Destroy: %v", err)
			}
		})
	}
	infos, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rt.Layers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(infos) || len(infos) != 4 {
		t.Fatalf("Layers has %d sandboxes, List %d; want 4 each", len(got), len(infos))
	}
	for _, in := range infos {
		l, ok := got[in.ID]
		if !ok || !slices.Equal(l, in.Layers) || (l == nil) != (in.Layers == nil) {
			t.Errorf("sandbox %s: Layers %v (listed %v), List %v", in.ID, l, ok, in.Layers)
		}
	}
	if l := got[second]; len(l) != 1 || l[0] != layers[0] {
		t.Errorf("second sandbox's layers %v, want %v", l, layers[:1])
	}
}

// TestMemoryLimit checks that a process over the memory limit is killed
// while envd survives.
func TestMemoryLimit(t *testing.T) {
	d := newDriver(nil)
	id := conformance.NewID()
	rt, root := sandbox(t, d, runtime.Spec{ID: id, Resources: runtime.Resources{MemoryBytes: 64 << 20}})
	_, code := execIn(t, root, id, "sh", "-c", `a=$(head -c 200000000 /dev/zero | tr '\0' a); echo ${#a}`)
	if code != 128+int(syscall.SIGKILL) {
		t.Errorf("memory hog exited %d, want %d (SIGKILL by the OOM killer)", code, 128+int(syscall.SIGKILL))
	}
	oom := readTrim(t, "/sys/fs/cgroup/memory/"+cgParent+"/"+id+"/memory.oom_control")
	if !regexpMatch(`oom_kill [1-9]`, oom) {
		t.Errorf("memory.oom_control records no OOM kill:\n%s", oom)
	}
	if err := conformance.Health(context.Background(), rt, id, 5*time.Second); err != nil {
		t.Errorf("envd after the OOM kill: %v", err)
	}
}

// TestStoppedAndHalfCreated covers sandboxes a control plane must reap: one
// whose envd died, one left half-created, one without metadata.
func TestStoppedAndHalfCreated(t *testing.T) {
	d := newDriver(nil)
	ctx := context.Background()
	id := conformance.NewID()
	rt, root := sandbox(t, d, runtime.Spec{ID: id})

	// envd dies: the sandbox is stopped.
	if err := syscall.Kill(initPid(t, root, id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := rt.Inspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == runtime.StateStopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %q 10 s after envd was killed, want stopped", info.State)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := rt.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy stopped sandbox: %v", err)
	}
	if tr := d.traces(t, rt, id); len(tr) > 0 {
		t.Errorf("traces: %v", tr)
	}

	// A dir with only metadata, as after a crash early in Create.
	half := conformance.NewID()
	hd := filepath.Join(root, "sandboxes", half)
	if err := os.MkdirAll(filepath.Join(hd, "upper"), 0o711); err != nil {
		t.Fatal(err)
	}
	created := time.Now().UTC().Truncate(time.Second)
	meta := fmt.Sprintf(`{"id":%q,"createdAt":%q,"labels":{"half":"yes"}}`, half, created.Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(hd, "meta.json"), []byte(meta), 0o600); err != nil {
		t.Fatal(err)
	}
	infos, err := rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, i := range infos {
		if i.ID == half {
			found = true
			if i.State != runtime.StateStopped || i.Labels["half"] != "yes" || !i.CreatedAt.Equal(created) {
				t.Errorf("half-created sandbox listed as %+v", i)
			}
		}
	}
	if !found {
		t.Errorf("half-created sandbox %s not listed", half)
	}
	if err := rt.Destroy(ctx, half); err != nil {
		t.Fatalf("Destroy half-created: %v", err)
	}
	if tr := d.traces(t, rt, half); len(tr) > 0 {
		t.Errorf("traces: %v", tr)
	}

	// A dir whose metadata is torn (empty), as after a host crash: the meta
	// of a running sandbox is written without an fsync.
	torn := conformance.NewID()
	td := filepath.Join(root, "sandboxes", torn)
	if err := os.MkdirAll(filepath.Join(td, "upper"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(td, "meta.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := rt.Inspect(ctx, torn)
	if err != nil || info.State != runtime.StateStopped {
		t.Errorf("Inspect with torn metadata: %+v, %v; want stopped", info, err)
	}
	if err := rt.Destroy(ctx, torn); err != nil {
		t.Fatalf("Destroy with torn metadata: %v", err)
	}
	if tr := d.traces(t, rt, torn); len(tr) > 0 {
		t.Errorf("traces: %v", tr)
	}

	// A running container whose metadata is gone.
	bare := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: bare, Layers: layers, Labels: map[string]string{"a": "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "sandboxes", bare, "meta.json")); err != nil {
		t.Fatal(err)
	}
	info, err = rt.Inspect(ctx, bare)
	if err != nil || info.State != runtime.StateRunning || len(info.Labels) != 0 || info.CreatedAt.IsZero() {
		t.Errorf("Inspect without metadata: %+v, %v; want running, no labels, a creation time", info, err)
	}
	if err := rt.Destroy(ctx, bare); err != nil {
		t.Fatalf("Destroy without metadata: %v", err)
	}
	if tr := d.traces(t, rt, bare); len(tr) > 0 {
		t.Errorf("traces: %v", tr)
	}
}

// TestRootDirLocked: two runtimes cannot own one root dir at once.
func TestRootDirLocked(t *testing.T) {
	d := newDriver(nil)
	root := newRoot(t)
	rt := d.open(t, root, nil)
	defer rt.Close()
	if _, err := local.New(local.Config{RootDir: root, CgroupParent: cgParent, EnvdBinary: envdBin}); err == nil {
		t.Fatal("a second runtime opened a root dir in use")
	}
	rt.Close()
	rt2 := d.open(t, root, nil)
	rt2.Close()
}

// TestCompat32Bit: Docker's full profile (with 32-bit compat
// architectures) also works.
func TestCompat32Bit(t *testing.T) {
	rt, err := local.New(local.Config{RootDir: newRoot(t), CgroupParent: cgParent, EnvdBinary: envdBin, Compat32Bit: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := context.Background()
	id := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: layers}); err != nil {
		t.Fatal(err)
	}
	defer rt.Destroy(ctx, id)
	hctx, cancel := context.WithTimeout(ctx, conformance.HealthTimeout)
	defer cancel()
	if err := conformance.WaitHealthy(hctx, rt, id); err != nil {
		t.Error(err)
	}
	if err := rt.Destroy(ctx, id); err != nil {
		t.Error(err)
	}
}

// TestCreateRollback: a create failing late (envd cannot start) or early
// (the overlay mount, while the network is attached alongside) leaves
// nothing behind: no container, cgroup, mount, network endpoint or dir.
func TestCreateRollback(t *testing.T) {
	// A top layer whose /etc is a file: libcontainer cannot mount
	// /etc/hostname and fails after the overlay, network, cgroups and the
	// container's state were made.
	broken, err := os.MkdirTemp(testDir, "broken-layer-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "etc"), []byte("not a dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("NoNetwork", func(t *testing.T) { testCreateRollback(t, newDriver(nil), broken, "start envd") })
	t.Run("Network", func(t *testing.T) { testCreateRollback(t, newNetDriver(t), broken, "start envd") })
	// A layer overlayfs refuses (procfs): the mount fails while the network
	// is being attached alongside it, which must be undone too.
	t.Run("MountFailsNetwork", func(t *testing.T) { testCreateRollback(t, newNetDriver(t), "/proc/sys", "overlay") })
}

// testCreateRollback creates a sandbox with the extra top layer broken,
// expects an error containing want and checks that nothing is left.
func testCreateRollback(t *testing.T, d *driver, broken, want string) {
	root := newRoot(t)
	rt := d.open(t, root, nil)
	defer rt.Close()
	ctx := context.Background()
	// One good sandbox first, so lazily opened process-wide things (the
	// cgroup fs handle) exist before counting.
	good := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: good, Layers: layers}); err != nil {
		t.Fatal(err)
	}
	if err := rt.Destroy(ctx, good); err != nil {
		t.Fatal(err)
	}
	before := d.resources(t, rt)
	id := conformance.NewID()
	if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: append(slices.Clone(layers), broken)}); err == nil {
		rt.Destroy(ctx, id)
		t.Fatal("Create with a broken layer succeeded")
	} else if !strings.Contains(err.Error(), want) {
		t.Errorf("Create failed, but not with %q: %v", want, err)
	} else {
		t.Logf("Create failed as expected: %v", err)
	}
	if tr := d.traces(t, rt, id); len(tr) > 0 {
		t.Errorf("failed create left: %v", tr)
	}
	if infos, err := rt.List(ctx); err != nil || len(infos) != 0 {
		t.Errorf("List after a failed create: %+v, %v", infos, err)
	}
	if after := d.resources(t, rt); !maps.Equal(before, after) {
		t.Errorf("host resources before a failed create %v, after %v", before, after)
	}
}

// TestConfigErrors: bad configurations fail with clear errors.
func TestConfigErrors(t *testing.T) {
	private, err := os.MkdirTemp(testDir, "private-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(testDir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := func(n string) string { return filepath.Join(testDir, "cfg-"+n) }
	// This process publishes initBin (once per process) before the cases.
	newDriver(nil).open(t, newRoot(t), nil).Close()
	other, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		cfg  local.Config
		want string
	}{
		"relative root":     {local.Config{RootDir: "relative", EnvdBinary: envdBin}, "absolute"},
		"missing envd":      {local.Config{RootDir: dir("1"), EnvdBinary: "/nonexistent/paddock"}, "no such file"},
		"envd is a dir":     {local.Config{RootDir: dir("2"), EnvdBinary: testDir}, "not an executable file"},
		"dynamic envd":      {local.Config{RootDir: dir("3"), EnvdBinary: "/bin/true"}, "dynamically linked"},
		"envd not ELF":      {local.Config{RootDir: dir("4"), EnvdBinary: script}, "not an ELF executable"},
		"unsearchable root": {local.Config{RootDir: filepath.Join(private, "root"), EnvdBinary: envdBin}, "not searchable"},
		"bad cgroup parent": {local.Config{RootDir: dir("5"), EnvdBinary: envdBin, CgroupParent: "../x"}, "cgroup parent"},
		"init not ELF":      {local.Config{RootDir: dir("6"), EnvdBinary: envdBin, InitBinary: []byte("#!/bin/sh\n")}, "init binary: not an ELF executable"},
		"another init":      {local.Config{RootDir: dir("7"), EnvdBinary: envdBin, InitBinary: other}, "already runs another one"},
	} {
		rt, err := local.New(c.cfg)
		if err == nil {
			rt.Close()
			t.Errorf("%s: local.New succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", name, err, c.want)
		}
	}
}

// TestKill9Adoption: a sandbox survives the kill -9 of the process that
// created it, and a new runtime on the same root adopts and destroys it.
func TestKill9Adoption(t *testing.T) {
	t.Run("NoNetwork", func(t *testing.T) { testKill9Adoption(t, newDriver(nil)) })
	t.Run("Network", func(t *testing.T) { testKill9Adoption(t, newNetDriver(t)) })
}

func testKill9Adoption(t *testing.T, d *driver) {
	root := newRoot(t)
	id := conformance.NewID()
	var env []string
	if d.netCfg != nil {
		// The helper runs its own manager over the same state.
		d.network().Close()
		b, err := json.Marshal(d.netCfg)
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "HELPER_NET="+string(b))
	}
	cmd, line := startHelper(t, root, id, initPath, os.Stderr, env...)
	if !strings.HasPrefix(line, "ready") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q", line)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	d.restartNetwork(t)
	rt := d.open(t, root, nil)
	defer rt.Close()
	ctx := context.Background()
	info, err := rt.Inspect(ctx, id)
	if err != nil || info.State != runtime.StateRunning || info.Labels["by"] != "helper" {
		t.Fatalf("Inspect after the creator's kill -9: %+v, %v", info, err)
	}
	if want := strings.TrimSpace(strings.TrimPrefix(line, "ready")); info.Addr != want {
		t.Errorf("Inspect Addr %q, the creator got %q", info.Addr, want)
	}
	if err := conformance.Health(ctx, rt, id, 5*time.Second); err != nil {
		t.Errorf("envd after the creator's kill -9: %v", err)
	}
	if err := rt.Pause(ctx, id); err != nil {
		t.Errorf("Pause: %v", err)
	}
	if err := rt.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if tr := d.traces(t, rt, id); len(tr) > 0 {
		t.Errorf("traces: %v", tr)
	}
}

// TestInitBinaryIsTheInit: the published InitBinary, not this binary, is
// what every container init becomes. A process that publishes a program
// which is no container init (true) cannot create sandboxes, and the failed
// create leaves nothing behind. (Every other test creates its sandboxes
// through the real small init, cmd/paddock-init.)
func TestInitBinaryIsTheInit(t *testing.T) {
	root := newRoot(t)
	id := conformance.NewID()
	var stderr bytes.Buffer
	cmd, line := startHelper(t, root, id, "/bin/true", &stderr)
	created := strings.HasPrefix(line, "ready")
	if created {
		cmd.Process.Kill()
	}
	err := cmd.Wait()
	d := newDriver(nil)
	rt := d.open(t, root, nil)
	defer rt.Close()
	if created {
		_ = rt.Destroy(context.Background(), id)
		t.Fatalf("a sandbox was created with true as the container init")
	}
	// libcontainer's parent loses its init pipe ("init-p") to an init that
	// never ran nsexec: the bootstrap data cannot be written, or no PID
	// comes back, depending on when true exits.
	if out := stderr.String(); !strings.Contains(out, "helper: create sandbox "+id) || !strings.Contains(out, "init-p: ") {
		t.Errorf("want the create to fail as true exits at once, got: %v\n%s", err, out)
	}
	if tr := d.traces(t, rt, id); len(tr) > 0 {
		t.Errorf("the failed create left: %v", tr)
	}
}

// startHelper starts this test binary as runHelper, creating sandbox id
// under root with the init binary at initBin and env added, and returns it
// with the first line it printed: "ready <addr>" once the sandbox is up,
// anything else when it failed first.
func startHelper(t *testing.T, root, id, initBin string, stderr io.Writer, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=create", "HELPER_ROOT="+root, "HELPER_ID="+id,
		"HELPER_CGROUP="+cgParent, "HELPER_ENVD="+envdBin, "HELPER_INIT="+initBin,
		"HELPER_LAYERS="+strings.Join(layers, ":"))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	return cmd, line
}

// runHelper is the child side of startHelper (TestKill9Adoption,
// TestInitBinaryIsTheInit): create a sandbox, say "ready <addr>", wait to be
// killed.
func runHelper() int {
	cfg := local.Config{
		RootDir:      os.Getenv("HELPER_ROOT"),
		CgroupParent: os.Getenv("HELPER_CGROUP"),
		EnvdBinary:   os.Getenv("HELPER_ENVD"),
	}
	if p := os.Getenv("HELPER_INIT"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		cfg.InitBinary = b
	}
	if n := os.Getenv("HELPER_NET"); n != "" {
		var nc network.Config
		if err := json.Unmarshal([]byte(n), &nc); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		m, err := network.New(nc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		cfg.Network = m
	}
	rt, err := local.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := os.Getenv("HELPER_ID")
	info, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: strings.Split(os.Getenv("HELPER_LAYERS"), ":"),
		Labels: map[string]string{"by": "helper"}})
	if err == nil {
		err = conformance.WaitHealthy(ctx, rt, id)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Println("ready", info.Addr)
	time.Sleep(time.Minute)
	return 1
}

// TestNetworkIsolation: a sandbox on the network manager joins the
// manager's namespace and sees only its own devices.
func TestNetworkIsolation(t *testing.T) {
	d := newNetDriver(t)
	id := conformance.NewID()
	rt, root := sandbox(t, d, runtime.Spec{ID: id})
	ep, err := d.network().Get(id)
	if err != nil {
		t.Fatal(err)
	}
	info, err := rt.Inspect(context.Background(), id)
	if err != nil || info.Addr != ep.Addr.String() {
		t.Errorf("Inspect: %+v, %v; want Addr %s", info, err, ep.Addr)
	}
	pid := initPid(t, root, id)
	var a, b syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(ep.NetnsPath, &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Dev != b.Dev {
		t.Errorf("sandbox netns %d, endpoint netns %d: want the same", a.Ino, b.Ino)
	}
	if out, code := execIn(t, root, id, "ls", "/sys/class/net"); code != 0 || strings.Join(strings.Fields(out), " ") != "eth0 lo" {
		t.Errorf("network devices inside: %q (exit %d), want eth0 lo", out, code)
	}
	if out, code := execIn(t, root, id, "ip", "-4", "addr", "show", "eth0"); code != 0 || !strings.Contains(out, ep.Addr.String()+"/") {
		t.Errorf("eth0 inside: %q (exit %d), want address %s", out, code, ep.Addr)
	}
	if out, code := execIn(t, root, id, "ip", "link", "set", "lo", "down"); code == 0 {
		t.Errorf("sandbox root reconfigured its network: %q", out)
	}
	if out, code := execIn(t, root, id, "sh", "-c", "echo 1 > /sys/class/net/eth0/mtu"); code == 0 {
		t.Errorf("writing sysfs succeeded: %q", out)
	}
	if out, code := execIn(t, root, id, "cat", "/etc/resolv.conf"); code != 0 || !strings.Contains(out, "nameserver") {
		t.Errorf("resolv.conf inside: %q (exit %d), want the manager's nameservers", out, code)
	}
}

func regexpMatch(pattern, s string) bool {
	return regexp.MustCompile(pattern).MatchString(s)
}

// TestSandboxMountsOnlyInContainer checks that a sandbox's root filesystem
// and sysfs live only in its container's mount namespace once it runs: each
// mount left in the runtime's namespace would be copied into every later
// sandbox's.
func TestSandboxMountsOnlyInContainer(t *testing.T) {
	t.Run("NoNetwork", func(t *testing.T) { testSandboxMountsOnlyInContainer(t, newDriver(nil)) })
	t.Run("Network", func(t *testing.T) { testSandboxMountsOnlyInContainer(t, newNetDriver(t)) })
}

func testSandboxMountsOnlyInContainer(t *testing.T, d *driver) {
	id := conformance.NewID()
	_, root := sandbox(t, d, runtime.Spec{ID: id})
	checkMountsOnlyInContainer(t, root, id, d.net != nil)
	// What the sandbox writes still reaches its writable layer.
	if out, code := execIn(t, root, id, "sh", "-c", "echo written > /tmp/marker"); code != 0 {
		t.Fatalf("write in sandbox: exit %d: %s", code, out)
	}
	b, err := os.ReadFile(filepath.Join(root, "sandboxes", id, "upper", "tmp", "marker"))
	if err != nil || string(b) != "written\n" {
		t.Errorf("upper/tmp/marker: %q, %v; want the sandbox's write", b, err)
	}
}

// checkMountsOnlyInContainer fails the test when the sandbox's dir has
// mounts in this process's mount namespace, or when its running container
// lacks its overlay root (and, with a network, the sysfs of its network
// namespace at /sys).
func checkMountsOnlyInContainer(t *testing.T, root, id string, withNetwork bool) {
	t.Helper()
	dir := filepath.Join(root, "sandboxes", id)
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(ms) > 0 {
		t.Errorf("%s is mounted in the runtime's mount namespace; only the sandbox's should hold it", ms[0].Mountpoint)
	}
	pid := initPid(t, root, id)
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	fstype := map[string]string{}
	for _, m := range ms {
		fstype[m.Mountpoint] = m.FSType
	}
	if fstype["/"] != "overlay" {
		t.Errorf("sandbox's / is %q, want overlay", fstype["/"])
	}
	if !withNetwork {
		return
	}
	if fstype["/sys"] != "sysfs" {
		t.Errorf("sandbox's /sys is %q, want sysfs", fstype["/sys"])
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/sys/class/net/%s", pid, network.PeerName)); err != nil {
		t.Errorf("the sandbox's /sys does not show its own network device: %v", err)
	}
}
