// Package local owns the local runtime driver: sandboxes on this host as
// runc's libcontainer containers (used in-process), each with an overlayfs
// root filesystem over shared read-only template layers, its own user, PID,
// mount, UTS, IPC and cgroup namespaces, cgroup v1 limits, Docker's default
// seccomp profile and capabilities, and a network namespace from the network
// manager (subpackage network). envd is every sandbox's PID 1.
//
// libcontainer re-executes the running binary as the container init
// (argv[1] == "init"): every binary that uses this package must call Init
// first thing, before anything else runs (runc does it in an init function
// of package main; see cmd/paddock/init.go). Importing this package links
// libcontainer's nsenter constructor, which does nothing unless the process
// was started as such an init. With Config.InitBinary, that init becomes the
// given small binary before any Go code of this one runs (package initexe).
//
// State lives under Config.RootDir and survives a restart of the process:
//
//	RootDir/lock                    flock held by the Runtime that owns RootDir
//	RootDir/state/<id>/             libcontainer state (state.json)
//	RootDir/sandboxes/<id>/meta.json labels and creation time
//	RootDir/sandboxes/<id>/upper    the sandbox's writable layer
//	RootDir/sandboxes/<id>/work     overlayfs work dir
//	RootDir/sandboxes/<id>/rootfs   the merged root filesystem (mounted here
//	                                while a container is built on it; then
//	                                only in the container's mount namespace)
//	RootDir/sandboxes/<id>/etc/     hostname, hosts, resolv.conf (bind-mounted)
//	RootDir/sandboxes/<id>/sys      sysfs of the sandbox's network namespace
//	                                (as rootfs; only with a network manager)
//	RootDir/sandboxes/<id>/envd.log envd's stdout and stderr (capped)
//	RootDir/sandboxes/<id>/checkpoint/ CRIU images while checkpointed
//	                                (more in checkpoint.go)
package local

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/system"
	"golang.org/x/sys/unix"

	// Lets the cgroup manager apply device rules.
	_ "github.com/opencontainers/cgroups/devices"
	// libcontainer's C constructor that enters namespaces before the Go
	// runtime starts when the binary runs as a container init.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/runtime/local/initexe"
	"github.com/paddockhq/paddock/internal/runtime/local/network"
)

// Defaults of Config fields.
const (
	DefaultCgroupParent = "paddock"
	DefaultLogMaxBytes  = 8 << 20
	// EnvdPath is where the envd binary is mounted inside every sandbox.
	EnvdPath = "/.paddock/paddock"
)

// Config configures a Runtime.
type Config struct {
	// RootDir holds every sandbox's state and writable layer (required,
	// absolute). It and its parents must be searchable by others (mode o+x):
	// a sandbox's user namespace walks this path to reach its root.
	RootDir string
	// CgroupParent is the cgroup every sandbox's cgroup is created under, in
	// every v1 controller: /sys/fs/cgroup/<ctrl>/<CgroupParent>/<id>.
	// Default DefaultCgroupParent.
	CgroupParent string
	// EnvdBinary is the static binary mounted read-only at EnvdPath inside
	// each sandbox and run as `envd` (paddock-guest from package guest, or
	// paddock itself, which has the same commands). Default: this executable.
	EnvdBinary string
	// Network creates sandbox networks. nil gives each sandbox a private
	// network namespace with loopback only (Dial still works).
	Network *network.Manager
	// Compat32Bit also allows 32-bit compat system calls (x86 and x32 on
	// amd64), as Docker's profile does. Off by default: 32-bit binaries do
	// not run in sandboxes, and each create is ~50 ms faster.
	Compat32Bit bool
	// LogMaxBytes caps envd.log: above it the log is rotated to envd.log.1.
	// Default DefaultLogMaxBytes.
	LogMaxBytes int64
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// InitBinary is a small static program that runs libcontainer's init
	// (cmd/paddock-init), embedded by `make build`. When set, every
	// container init this process starts becomes it before any Go code of
	// this binary runs (package initexe), which makes each create 10–25 ms
	// faster on a small VM. Empty: this binary is its own container init.
	// One process can publish only one init binary.
	InitBinary []byte
	// CRIU is the criu binary (or wrapper) memory checkpoints run; it must be
	// named criu, and its directory is put first on this process's PATH
	// (libcontainer runs `criu` from PATH). Default: DefaultCRIU when it
	// exists, else criu on PATH. Without one, only files-only checkpoints
	// work. CRIU >= 4.2 is needed on Linux >= 6.16.
	CRIU string
}

// Runtime is the local driver of runtime.Runtime. Create it with New.
type Runtime struct {
	cfg        Config
	log        *slog.Logger
	stateDir   string // libcontainer root
	sandboxDir string
	lockFile   *os.File
	memsw      bool   // memory.memsw.* exists (swap accounting)
	criu       string // CRIU binary; "" when there is none
	nofile     uint64 // RLIMIT_NOFILE of sandboxes

	locks idLocks

	mu    sync.Mutex
	inits map[string]*initWaiter // inits this process started
	refs  map[string]initRef     // running inits, for Dial without a network manager
	// loaded keeps what Stats needs of each container (its cgroup paths
	// and limits): loading parses the container's state file, which
	// dominated the metrics sampler's cost with hundreds of sandboxes.
	// forget drops an entry.
	loaded map[string]*statsSource

	stop    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once
}

var _ runtime.Runtime = (*Runtime)(nil)

// initWaiter reaps one container init this process started. Its goroutine
// is owned by the Runtime and ends when the init exits (Destroy makes sure
// it does); it outlives Close because the sandbox does.
type initWaiter struct {
	pid  int
	done chan struct{}
}

// Keep the main goroutine on the main thread (Go's documented idiom: lock
// in an init function). libcontainer moves OS threads into sandbox
// namespaces and lets the Go runtime discard them afterwards; the main thread
// cannot be discarded, and if it were left in a sandbox's mount namespace,
// /proc/self would describe that namespace and pin it (and the sandbox's
// overlay) for the life of the process. Locked to the main goroutine, the
// main thread never runs such work.
func init() { goruntime.LockOSThread() }

// Init runs libcontainer's container init and never returns. Call it when
// os.Args[1] == "init", before anything else in the program runs.
func Init() { libcontainer.Init() }

// New opens (or creates) the runtime state under cfg.RootDir. Sandboxes
// created by an earlier process on the same RootDir are adopted. Only one
// Runtime may own a RootDir at a time.
func New(cfg Config) (*Runtime, error) {
	if cfg.RootDir == "" || !filepath.IsAbs(cfg.RootDir) {
		return nil, fmt.Errorf("local runtime: root dir must be an absolute path, got %q", cfg.RootDir)
	}
	cfg.RootDir = filepath.Clean(cfg.RootDir)
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = DefaultCgroupParent
	}
	if !validID(filepath.Base(cfg.CgroupParent)) || strings.Contains(cfg.CgroupParent, "..") {
		return nil, fmt.Errorf("local runtime: invalid cgroup parent %q", cfg.CgroupParent)
	}
	cfg.CgroupParent = strings.Trim(cfg.CgroupParent, "/")
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.EnvdBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("local runtime: find own executable for envd: %w", err)
		}
		cfg.EnvdBinary = exe
	}
	envd, err := filepath.EvalSymlinks(cfg.EnvdBinary)
	if err != nil {
		return nil, fmt.Errorf("local runtime: envd binary: %w", err)
	}
	if st, err := os.Stat(envd); err != nil {
		return nil, fmt.Errorf("local runtime: envd binary: %w", err)
	} else if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("local runtime: envd binary %s is not an executable file", envd)
	}
	if err := checkStatic(envd); err != nil {
		return nil, fmt.Errorf("local runtime: envd binary: %w", err)
	}
	cfg.EnvdBinary = envd
	if os.Geteuid() != 0 {
		return nil, errors.New("local runtime: must run as root")
	}

	r := &Runtime{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "runtime/local"),
		stateDir:   filepath.Join(cfg.RootDir, "state"),
		sandboxDir: filepath.Join(cfg.RootDir, "sandboxes"),
		inits:      map[string]*initWaiter{},
		refs:       map[string]initRef{},
		stop:       make(chan struct{}),
	}
	for _, d := range []string{cfg.RootDir, r.stateDir, r.sandboxDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("local runtime: %w", err)
		}
	}
	// The sandbox dirs must be reachable from inside a user namespace.
	if err := os.Chmod(r.sandboxDir, 0o711); err != nil {
		return nil, fmt.Errorf("local runtime: %w", err)
	}
	if err := checkSearchable(r.sandboxDir); err != nil {
		return nil, fmt.Errorf("local runtime: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(cfg.RootDir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local runtime: %w", err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("local runtime: root dir %s is in use by another runtime: %w", cfg.RootDir, err)
	}
	r.lockFile = lf
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		r.memsw = true
	}

	if r.criu, err = setupCRIU(cfg.CRIU); err != nil {
		lf.Close()
		return nil, fmt.Errorf("local runtime: %w", err)
	}

	if len(cfg.InitBinary) > 0 {
		if err := initexe.Publish(cfg.InitBinary); errors.Is(err, initexe.ErrInvalid) {
			lf.Close()
			return nil, fmt.Errorf("local runtime: %w", err)
		} else if err != nil {
			r.log.Warn("small container init unavailable; this binary is the init", "err", err)
		} else {
			r.log.Debug("container init: small binary from a sealed memfd", "bytes", len(cfg.InitBinary))
		}
	}

	r.nofile = sandboxNofile()
	if r.nofile < maxOpenFiles {
		r.log.Info("cannot raise RLIMIT_NOFILE (no CAP_SYS_RESOURCE); sandboxes get the runtime's own limit", "nofile", r.nofile)
	}

	r.wg.Add(1)
	go r.rotateLogs()
	return r, nil
}

// checkStatic fails unless path is a statically linked ELF executable: envd
// runs inside sandboxes whatever libc (if any) their template has.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; sandboxes need the static build (make build)", path)
		}
	}
	return nil
}

// checkSearchable fails when dir or one of its parents is not searchable
// by others.
func checkSearchable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %o) is not searchable by others; sandboxes cannot reach their root filesystem under %s", d, st.Mode().Perm(), dir)
		}
		if d == "/" {
			return nil
		}
	}
}

// Close stops the runtime's background work and releases RootDir.
// Sandboxes keep running; a new Runtime on the same RootDir adopts them.
func (r *Runtime) Close() error {
	r.closing.Do(func() {
		close(r.stop)
		r.wg.Wait()
		r.lockFile.Close()
	})
	return nil
}

var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

func validID(id string) bool { return idPattern.MatchString(id) }

func (r *Runtime) dir(id string) string { return filepath.Join(r.sandboxDir, id) }

// Create implements runtime.Runtime.
func (r *Runtime) Create(ctx context.Context, spec runtime.Spec) (info runtime.Info, err error) {
	if err := validateSpec(spec); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %q: %w", spec.ID, err)
	}
	id := spec.ID
	unlock := r.locks.lock(id)
	defer unlock()

	if _, err := os.Stat(filepath.Join(r.stateDir, id)); err == nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, runtime.ErrExists)
	}
	if err := os.Mkdir(r.dir(id), 0o711); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, runtime.ErrExists)
		}
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	// Searchable by the sandbox's user namespace whatever the umask (which
	// another goroutine of the process may have narrowed for a moment).
	if err := os.Chmod(r.dir(id), 0o711); err != nil {
		_ = os.Remove(r.dir(id))
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	defer func() {
		if err == nil {
			return
		}
		// Roll back everything; Destroy copes with every partial state.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := r.destroy(cctx, id); derr != nil {
			r.log.Error("roll back failed create", "sandbox", id, "err", derr)
			err = errors.Join(err, fmt.Errorf("roll back: %w", derr))
		}
	}()

	t0 := time.Now()
	m := meta{ID: id, CreatedAt: t0.UTC(), Labels: spec.Labels, Layers: spec.Layers,
		Hostname: spec.Hostname, Resources: spec.Resources, Internet: spec.Network.Internet}
	if err := writeMeta(r.dir(id), m, false); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	// The network (netns, veth, address, routes: mostly netlink round
	// trips) is attached while the overlay is mounted; nothing of either
	// depends on the other. The rollback above runs only after both ended.
	type attached struct {
		ep  *network.Endpoint
		err error
		at  time.Time
	}
	netDone := make(chan attached, 1)
	if r.cfg.Network != nil {
		go func() {
			ep, err := r.cfg.Network.Attach(ctx, id, network.Options{Internet: spec.Network.Internet})
			netDone <- attached{ep: ep, err: err, at: time.Now()}
		}()
	} else {
		netDone <- attached{at: time.Now()}
	}
	rootfs, mountErr := mountRootfs(r.dir(id), spec.Layers)
	tOverlay := time.Now()
	nw := <-netDone
	if mountErr != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, mountErr)
	}
	if nw.err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: attach network: %w", id, nw.err)
	}
	ep := nw.ep
	tNet := time.Now()

	hostname := spec.Hostname
	if hostname == "" {
		hostname = id
	}
	var resolv []byte
	if r.cfg.Network != nil {
		resolv = r.cfg.Network.ResolvConf()
	}
	etc, err := writeEtc(r.dir(id), hostname, resolv)
	if err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}

	netnsPath, sysfs := "", ""
	if ep != nil {
		netnsPath = ep.NetnsPath
		sysfs = filepath.Join(r.dir(id), "sys")
		if err := os.Mkdir(sysfs, 0o755); err != nil {
			return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
		}
		if err := mountSysfs(netnsPath, sysfs); err != nil {
			return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
		}
	}
	cfg, err := r.containerConfig(containerParams{
		id:        id,
		rootfs:    rootfs,
		hostname:  hostname,
		resources: spec.Resources,
		netnsPath: netnsPath,
		etc:       etc,
		sysfs:     sysfs,
	})
	if err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: container config: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	tConfig := time.Now()
	c, err := libcontainer.Create(r.stateDir, id, cfg)
	if err != nil {
		if errors.Is(err, libcontainer.ErrExist) {
			err = runtime.ErrExists
		}
		return runtime.Info{}, fmt.Errorf("create sandbox %s: create container: %w", id, err)
	}
	logf, err := openLog(r.dir(id))
	if err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	defer devnull.Close()
	proc := envdProcess(devnull, logf)
	tRun, err := r.startEnvd(ctx, c, proc)
	if err != nil {
		// The sandbox dir goes with the rollback: keep what envd said.
		if tail := logTail(r.dir(id), 512); tail != "" {
			err = fmt.Errorf("%w; envd output: %s", err, tail)
		}
		return runtime.Info{}, fmt.Errorf("create sandbox %s: start envd: %w", id, err)
	}
	r.watch(id, proc)
	tListen := time.Now()
	r.detachHostMounts(id)
	r.log.Debug("sandbox created", "sandbox", id, "overlay", tOverlay.Sub(t0), "network", nw.at.Sub(t0),
		"networkWait", tNet.Sub(tOverlay), "config", tConfig.Sub(tNet), "container", tRun.Sub(tConfig),
		"envdListen", tListen.Sub(tRun))

	info = runtime.Info{ID: id, State: runtime.StateRunning, CreatedAt: m.CreatedAt, Labels: copyLabels(spec.Labels),
		Layers: slices.Clone(spec.Layers)}
	if ep != nil {
		info.Addr = ep.Addr.String()
	}
	return info, nil
}

func validateSpec(spec runtime.Spec) error {
	if !validID(spec.ID) {
		return fmt.Errorf("invalid sandbox ID (want 1-64 of [a-zA-Z0-9_.-], starting alphanumeric)")
	}
	if len(spec.Layers) == 0 {
		return errors.New("no root filesystem layers")
	}
	for _, l := range spec.Layers {
		if !filepath.IsAbs(l) {
			return fmt.Errorf("layer %q is not an absolute path", l)
		}
		if strings.ContainsAny(l, ":,\\") {
			return fmt.Errorf("layer %q: path contains ':', ',' or '\\'", l)
		}
		st, err := os.Stat(l)
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("layer %s is not a directory", l)
		}
	}
	if spec.Hostname != "" && !validHostname(spec.Hostname) {
		return fmt.Errorf("invalid hostname %q", spec.Hostname)
	}
	res := spec.Resources
	if res.CPUs < 0 || res.MemoryBytes < 0 || res.Pids < 0 {
		return errors.New("resources must not be negative")
	}
	if res.MemoryBytes != 0 && res.MemoryBytes < 8<<20 {
		return fmt.Errorf("memory limit %d bytes is below the minimum of 8 MiB", res.MemoryBytes)
	}
	if res.CPUs != 0 && res.CPUs < 0.01 {
		return fmt.Errorf("CPU quota %g is below the minimum of 0.01", res.CPUs)
	}
	if res.Pids != 0 && res.Pids < 8 {
		return fmt.Errorf("pids limit %d is below the minimum of 8", res.Pids)
	}
	return nil
}

var hostnamePattern = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

func validHostname(h string) bool { return len(h) <= 253 && hostnamePattern.MatchString(h) }

func copyLabels(l map[string]string) map[string]string {
	if l == nil {
		return nil
	}
	out := make(map[string]string, len(l))
	for k, v := range l {
		out[k] = v
	}
	return out
}

// envdListenWait bounds how long a start waits for envd's notice that it
// listens; past it the caller's health check takes over.
const envdListenWait = 10 * time.Second

// startEnvd runs proc (envdProcess) as the container's init and waits until
// envd says it listens: it writes a byte to a pipe it inherits (envd
// --ready-fd), so the caller's first /health finds envd up instead of
// polling for it, each refused dial costing the CPUs envd is starting on.
// An envd that exits first, or says nothing within envdListenWait or ctx,
// only ends the wait: the caller's health check reports it. It returns
// the time Run returned.
func (r *Runtime) startEnvd(ctx context.Context, c *libcontainer.Container, proc *libcontainer.Process) (time.Time, error) {
	ready, notify, err := os.Pipe()
	if err != nil {
		return time.Time{}, fmt.Errorf("envd ready pipe: %w", err)
	}
	defer ready.Close()
	proc.ExtraFiles = append(proc.ExtraFiles, notify)
	proc.Args = append(proc.Args, "--ready-fd", strconv.Itoa(2+len(proc.ExtraFiles)))
	err = c.Run(proc)
	notify.Close() // envd holds the only write end now: its exit ends the wait
	ran := time.Now()
	if err != nil {
		return ran, err
	}
	deadline := ran.Add(envdListenWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = ready.SetReadDeadline(deadline)
	if _, err := ready.Read(make([]byte, 1)); err != nil {
		r.log.Debug("no listen notice from envd", "err", err)
	}
	return ran, nil
}

// watch reaps the init of a container this process started, so it never
// lingers as a zombie.
func (r *Runtime) watch(id string, p *libcontainer.Process) {
	pid, _ := p.Pid()
	w := &initWaiter{pid: pid, done: make(chan struct{})}
	r.mu.Lock()
	r.inits[id] = w
	r.mu.Unlock()
	go func() {
		defer close(w.done)
		state, err := p.Wait()
		r.mu.Lock()
		if r.inits[id] == w {
			delete(r.inits, id)
		}
		r.mu.Unlock()
		r.log.Debug("sandbox init exited", "sandbox", id, "pid", pid, "state", fmt.Sprint(state), "err", err)
	}()
}

func (r *Runtime) waiter(id string) *initWaiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inits[id]
}

// load returns the sandbox's container; ErrNotFound when it has none.
func (r *Runtime) load(id string) (*libcontainer.Container, error) {
	if !validID(id) {
		return nil, runtime.ErrNotFound
	}
	c, err := libcontainer.Load(r.stateDir, id)
	if err != nil {
		if errors.Is(err, libcontainer.ErrNotExist) {
			return nil, runtime.ErrNotFound
		}
		return nil, err
	}
	return c, nil
}

// Inspect implements runtime.Runtime.
func (r *Runtime) Inspect(ctx context.Context, id string) (runtime.Info, error) {
	if !validID(id) {
		return runtime.Info{}, fmt.Errorf("inspect sandbox %q: %w", id, runtime.ErrNotFound)
	}
	info, err := r.inspect(id)
	if err != nil {
		return runtime.Info{}, fmt.Errorf("inspect sandbox %s: %w", id, err)
	}
	return info, nil
}

func (r *Runtime) inspect(id string) (runtime.Info, error) {
	info := runtime.Info{ID: id, State: runtime.StateStopped}
	m, merr := readMeta(r.dir(id))
	hasDir := true
	if merr != nil {
		if _, err := os.Stat(r.dir(id)); errors.Is(err, fs.ErrNotExist) {
			hasDir = false
		}
	} else {
		info.CreatedAt = m.CreatedAt
		info.Labels = m.Labels
		info.Layers = m.Layers
	}
	c, err := r.load(id)
	switch {
	case errors.Is(err, runtime.ErrNotFound):
		if !hasDir {
			return runtime.Info{}, runtime.ErrNotFound
		}
	case err != nil:
		// Unreadable container state: report it as stopped so it can be reaped.
		r.log.Warn("load container state", "sandbox", id, "err", err)
	default:
		st, err := c.Status()
		if err != nil {
			return runtime.Info{}, fmt.Errorf("container status: %w", err)
		}
		info.State = mapStatus(st)
		if info.CreatedAt.IsZero() {
			if s, err := c.State(); err == nil {
				info.CreatedAt = s.Created.UTC()
			}
		}
	}
	if merr == nil && m.Checkpoint != nil && info.State == runtime.StateStopped {
		// No process runs: what is left of the container (if anything) is
		// cleared by Restore.
		info.State = runtime.StateCheckpointed
	}
	if r.cfg.Network != nil && hasDir {
		if ep, err := r.cfg.Network.Get(id); err == nil && ep != nil {
			info.Addr = ep.Addr.String()
		}
	}
	return info, nil
}

func mapStatus(s libcontainer.Status) runtime.State {
	switch s {
	case libcontainer.Running, libcontainer.Created:
		return runtime.StateRunning
	case libcontainer.Paused:
		return runtime.StatePaused
	default:
		return runtime.StateStopped
	}
}

// List implements runtime.Runtime.
func (r *Runtime) List(ctx context.Context) ([]runtime.Info, error) {
	ids, err := r.ids()
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	out := make([]runtime.Info, 0, len(ids))
	for id := range ids {
		info, err := r.inspect(id)
		if errors.Is(err, runtime.ErrNotFound) {
			continue // destroyed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list sandboxes: %s: %w", id, err)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ids returns the IDs that have a sandbox dir or container state.
func (r *Runtime) ids() (map[string]bool, error) {
	ids := map[string]bool{}
	for _, d := range []string{r.sandboxDir, r.stateDir} {
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() && validID(e.Name()) {
				ids[e.Name()] = true
			}
		}
	}
	return ids, nil
}

// Layers returns the root filesystem layers of every sandbox the runtime
// holds, by ID, as List reports them, but from the sandboxes' meta files
// alone: what layer garbage collection needs, without loading every
// container's state (List costs about 1 ms a sandbox here, which at 500
// sandboxes took the CPUs from requests for half a second a minute). A
// sandbox whose layers are not known (being created, or its meta torn)
// maps to nil.
func (r *Runtime) Layers(ctx context.Context) (map[string][]string, error) {
	ids, err := r.ids()
	if err != nil {
		return nil, fmt.Errorf("list sandbox layers: %w", err)
	}
	out := make(map[string][]string, len(ids))
	for id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list sandbox layers: %w", err)
		}
		if m, err := readMeta(r.dir(id)); err == nil {
			out[id] = m.Layers
			continue
		}
		_, dirErr := os.Stat(r.dir(id))
		_, stateErr := os.Stat(filepath.Join(r.stateDir, id))
		if errors.Is(dirErr, fs.ErrNotExist) && errors.Is(stateErr, fs.ErrNotExist) {
			continue // destroyed meanwhile
		}
		out[id] = nil
	}
	return out, nil
}

// Dial implements runtime.Runtime. It is on the proxy's path for every new
// connection, so it avoids loading the container's state.
func (r *Runtime) Dial(ctx context.Context, id string, port int) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("dial sandbox %s: invalid port %d", id, port)
	}
	if !validID(id) {
		return nil, fmt.Errorf("dial sandbox %q: %w", id, runtime.ErrNotFound)
	}
	if r.cfg.Network != nil {
		conn, err := r.cfg.Network.Dial(ctx, id, port)
		if errors.Is(err, network.ErrNotFound) {
			return nil, fmt.Errorf("dial sandbox %s: %w (%w)", id, runtime.ErrNotFound, err)
		}
		if err != nil {
			return nil, fmt.Errorf("dial sandbox %s port %d: %w", id, port, err)
		}
		return conn, nil
	}
	pid, err := r.initPid(id)
	if err != nil {
		return nil, fmt.Errorf("dial sandbox %s: %w", id, err)
	}
	conn, err := dialInNetns(ctx, fmt.Sprintf("/proc/%d/ns/net", pid), port)
	if err != nil {
		return nil, fmt.Errorf("dial sandbox %s port %d: %w", id, port, err)
	}
	return conn, nil
}

// initRef identifies a sandbox's running init process.
type initRef struct {
	pid   int
	start uint64 // start time in clock ticks, against PID reuse
}

// initPid returns the PID of the sandbox's running init, from a cache
// checked against the process's start time.
func (r *Runtime) initPid(id string) (int, error) {
	r.mu.Lock()
	ref, ok := r.refs[id]
	r.mu.Unlock()
	if ok {
		if st, err := system.Stat(ref.pid); err == nil && st.StartTime == ref.start &&
			st.State != system.Zombie && st.State != system.Dead {
			return ref.pid, nil
		}
	}
	c, err := r.load(id)
	if err != nil {
		return 0, err
	}
	if s, err := c.Status(); err != nil || s == libcontainer.Stopped {
		return 0, errors.New("sandbox is stopped")
	}
	st, err := c.State()
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.refs[id] = initRef{pid: st.InitProcessPid, start: st.InitProcessStartTime}
	r.mu.Unlock()
	return st.InitProcessPid, nil
}

func (r *Runtime) forget(id string) {
	r.mu.Lock()
	delete(r.refs, id)
	delete(r.loaded, id)
	r.mu.Unlock()
}

// Pause implements runtime.Runtime. Pausing a paused sandbox is a no-op.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	unlock := r.locks.lock(id)
	defer unlock()
	c, err := r.load(id)
	if err != nil {
		return fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	if st, err := c.Status(); err == nil && st == libcontainer.Paused {
		return nil
	}
	if err := c.Pause(); err != nil {
		return fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	return nil
}

// Resume implements runtime.Runtime. Resuming a running sandbox is a no-op.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	unlock := r.locks.lock(id)
	defer unlock()
	c, err := r.load(id)
	if err != nil {
		return fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	if st, err := c.Status(); err == nil && (st == libcontainer.Running || st == libcontainer.Created) {
		return nil
	}
	if err := c.Resume(); err != nil {
		return fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	return nil
}

// Stats implements runtime.Runtime. DiskUsed is the allocated size of the
// sandbox's writable layer, from a walk that stops after maxDiskWalk entries
// (an underestimate for huge layers).
func (r *Runtime) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	r.mu.Lock()
	src := r.loaded[id]
	r.mu.Unlock()
	fresh := src == nil
	if fresh {
		// Under the sandbox's lock, so that a Destroy (which forgets it)
		// cannot come between the load and the caching.
		unlock := r.locks.lock(id)
		defer unlock()
		c, err := r.load(id)
		if err != nil {
			return runtime.Stats{}, fmt.Errorf("stats of sandbox %s: %w", id, err)
		}
		if src, err = newStatsSource(c); err != nil {
			return runtime.Stats{}, fmt.Errorf("stats of sandbox %s: %w", id, err)
		}
	}
	out, err := src.read()
	if err != nil && !fresh { // the cached paths may be stale: load again
		r.mu.Lock()
		delete(r.loaded, id)
		r.mu.Unlock()
		return r.Stats(ctx, id)
	}
	if err != nil {
		return runtime.Stats{}, fmt.Errorf("stats of sandbox %s: %w", id, err)
	}
	if fresh {
		r.mu.Lock()
		if r.loaded == nil {
			r.loaded = map[string]*statsSource{}
		}
		r.loaded[id] = src
		r.mu.Unlock()
	}
	out.DiskUsed = diskUsage(filepath.Join(r.dir(id), "upper"), maxDiskWalk) + etcUsage(r.dir(id))
	return out, nil
}

// Destroy implements runtime.Runtime.
func (r *Runtime) Destroy(ctx context.Context, id string) error {
	if !validID(id) {
		return nil // no such sandbox can exist
	}
	unlock := r.locks.lock(id)
	defer unlock()
	if err := r.destroy(ctx, id); err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	return nil
}

// destroy removes every trace of a sandbox in any state, from a fully
// running one to a half-created one. The caller holds the ID's lock.
func (r *Runtime) destroy(ctx context.Context, id string) error {
	r.forget(id)
	var errs []error
	if err := r.destroyContainer(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if r.cfg.Network != nil {
		if err := r.cfg.Network.Detach(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("detach network: %w", err))
		}
	}
	if err := unmountAll(r.dir(id)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		// Keep the directory so the sandbox stays listed and can be retried.
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(r.dir(id)); err != nil {
		return fmt.Errorf("remove sandbox dir: %w", err)
	}
	return nil
}

// destroyContainer kills the container's processes and removes its cgroups
// and libcontainer state.
func (r *Runtime) destroyContainer(ctx context.Context, id string) error {
	c, err := r.load(id)
	switch {
	case errors.Is(err, runtime.ErrNotFound):
	case err != nil:
		r.log.Warn("load container state for destroy; cleaning up by hand", "sandbox", id, "err", err)
	default:
		if err := c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			r.log.Warn("kill sandbox init", "sandbox", id, "err", err)
		}
		if err := r.waitStopped(ctx, id, c); err != nil {
			return err
		}
		if err := c.Destroy(); err != nil {
			r.log.Warn("destroy container; cleaning up by hand", "sandbox", id, "err", err)
		}
	}
	// Whatever libcontainer left (no state.json after a crash mid-create,
	// a failed destroy): kill what is in the cgroups and remove them.
	if err := removeCgroups(r.cgroupPath(id)); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(r.stateDir, id)); err != nil {
		return fmt.Errorf("remove container state: %w", err)
	}
	return nil
}

// waitStopped waits until the container's init is gone (reaped when this
// process started it).
func (r *Runtime) waitStopped(ctx context.Context, id string, c *libcontainer.Container) error {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	if w := r.waiter(id); w != nil {
		select {
		case <-w.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("wait for init to exit: %w", ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("init (pid %d) did not exit after SIGKILL", w.pid)
		}
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		st, err := c.Status()
		if err != nil || st == libcontainer.Stopped {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for init to exit: %w", ctx.Err())
		case <-deadline.C:
			return errors.New("init did not exit after SIGKILL")
		}
	}
}

// idLocks serialises operations on one sandbox ID without serialising
// different IDs.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	mu   sync.Mutex
	refs int
}

func (l *idLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*idLock{}
	}
	e := l.m[id]
	if e == nil {
		e = &idLock{}
		l.m[id] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
}
