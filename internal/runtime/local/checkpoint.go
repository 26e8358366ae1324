package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/runtime/local/network"
)

// Checkpoints. A memory checkpoint is CRIU's image of the sandbox's process
// tree (memory, open files, sockets, namespaces) taken through libcontainer;
// the writable layer is not part of it and stays on disk beside it. Files a
// sandbox's envd holds on the host (its log, /dev/null) are declared to CRIU
// as external files and handed back at restore (see criuStdio). The network
// namespace is external too: it is the network manager's and outlives the
// processes, so a restored sandbox keeps its address.
//
// In-place checkpoints live in the sandbox's directory:
//
//	RootDir/sandboxes/<id>/checkpoint/      CRIU images (memory checkpoints)
//	RootDir/sandboxes/<id>/checkpoint.new/  images being written
//	RootDir/sandboxes/<id>/criu/            CRIU's work dir (dump.log, restore.log)
//	RootDir/sandboxes/<id>/criu.conf        CRIU options of the next dump or restore
//
// Snapshots are self-contained directories the caller names:
//
//	<dir>/snapshot.json  manifest (layers, resources, hostname, stdio keys)
//	<dir>/images/        CRIU images (absent for a files-only snapshot)
//	<dir>/upper/         copy of the writable layer

// checkpointMeta is recorded in meta.json while a sandbox is checkpointed.
type checkpointMeta struct {
	FilesOnly bool      `json:"filesOnly,omitempty"`
	At        time.Time `json:"at"`
	Stdio     criuStdio `json:"stdio"`
}

// snapshotManifest describes a snapshot directory.
type snapshotManifest struct {
	Version   int               `json:"version"`
	Source    string            `json:"source"`
	CreatedAt time.Time         `json:"createdAt"`
	Layers    []string          `json:"layers"`
	Hostname  string            `json:"hostname"`
	Resources runtime.Resources `json:"resources"`
	FilesOnly bool              `json:"filesOnly,omitempty"`
	Stdio     criuStdio         `json:"stdio"`
}

const (
	manifestName    = "snapshot.json"
	manifestVersion = 1
)

// criuOptions are CRIU options of every dump and restore besides the
// external files. Established TCP connections come back closed (their peers
// see a reset; listening sockets are kept): restoring one needs TCP repair
// mode, that is CAP_NET_ADMIN in the user namespace owning the network
// namespace, which is the host's while the restored processes run in the
// sandbox's. Network locks use nftables (CRIU's own library), not the
// iptables binaries a host may lack.
var criuOptions = []string{"tcp-close", "network-lock nftables"}

func (r *Runtime) criuAvailable() error {
	if r.criu == "" {
		return errors.New("CRIU is not installed (need CRIU >= 4.2; scripts/install-criu.sh installs it)")
	}
	return nil
}

// Checkpoint implements runtime.Runtime.
func (r *Runtime) Checkpoint(ctx context.Context, id string, opts runtime.CheckpointOptions) error {
	if !validID(id) {
		return fmt.Errorf("checkpoint sandbox %q: %w", id, runtime.ErrNotFound)
	}
	unlock := r.locks.lock(id)
	defer unlock()
	if err := r.checkpoint(ctx, id, opts); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	return nil
}

func (r *Runtime) checkpoint(ctx context.Context, id string, opts runtime.CheckpointOptions) error {
	dir := r.dir(id)
	m, err := readMeta(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return runtime.ErrNotFound
	}
	if err != nil {
		return err
	}
	if m.Checkpoint != nil {
		return nil // already checkpointed
	}
	if len(m.Layers) == 0 {
		return errors.New("sandbox was created without a recorded spec and cannot be restored")
	}
	c, err := r.load(id)
	if err != nil {
		return err
	}
	if st, err := c.Status(); err != nil {
		return err
	} else if st == libcontainer.Stopped {
		return errors.New("sandbox is stopped")
	}
	cp := &checkpointMeta{FilesOnly: opts.FilesOnly, At: time.Now().UTC()}
	if !opts.FilesOnly {
		if err := r.criuAvailable(); err != nil {
			return err
		}
		state, err := c.State()
		if err != nil {
			return err
		}
		if cp.Stdio, err = stdioOf(state.InitProcessPid); err != nil {
			return err
		}
		tmp := filepath.Join(dir, "checkpoint.new")
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		work := filepath.Join(dir, "criu")
		if err := os.MkdirAll(work, 0o700); err != nil {
			return err
		}
		if err := writeCRIUConf(filepath.Join(dir, criuConfName), slices.Concat(cp.Stdio.dumpOptions(), criuOptions)); err != nil {
			return err
		}
		t0 := time.Now()
		if err := withNetns(netnsOf(c), func() error {
			return c.Checkpoint(&libcontainer.CriuOpts{
				ImagesDirectory: tmp,
				WorkDirectory:   work,
				FileLocks:       true,
			})
		}); err != nil {
			_ = os.RemoveAll(tmp)
			if msg := criuLogErrors(filepath.Join(work, "dump.log"), 3); msg != "" {
				err = fmt.Errorf("%w: %s", err, msg)
			}
			return fmt.Errorf("dump: %w", err)
		}
		if err := shareImages(tmp); err != nil {
			return err
		}
		final := filepath.Join(dir, "checkpoint")
		if err := os.RemoveAll(final); err != nil {
			return err
		}
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		r.log.Debug("sandbox dumped", "sandbox", id, "ms", time.Since(t0).Milliseconds())
	}
	// From here the sandbox is checkpointed: a crash below leaves a stopped
	// container or mounts, which Restore and Destroy clear.
	m.Checkpoint = cp
	if err := writeMeta(dir, m, true); err != nil {
		return err
	}
	return r.release(ctx, id)
}

// release removes a checkpointed sandbox's container (killing what still
// runs) and unmounts its root filesystem, keeping its directory (writable
// layer, checkpoint, etc files) and network.
func (r *Runtime) release(ctx context.Context, id string) error {
	r.forget(id)
	if err := r.destroyContainer(ctx, id); err != nil {
		return err
	}
	return unmountAll(r.dir(id))
}

// Restore implements runtime.Runtime.
func (r *Runtime) Restore(ctx context.Context, id string, opts runtime.RestoreOptions) (runtime.Info, error) {
	if !validID(id) {
		return runtime.Info{}, fmt.Errorf("restore sandbox %q: %w", id, runtime.ErrNotFound)
	}
	unlock := r.locks.lock(id)
	defer unlock()
	if err := r.restore(ctx, id, opts); err != nil {
		return runtime.Info{}, fmt.Errorf("restore sandbox %s: %w", id, err)
	}
	info, err := r.inspect(id)
	if err != nil {
		return runtime.Info{}, fmt.Errorf("restore sandbox %s: %w", id, err)
	}
	return info, nil
}

func (r *Runtime) restore(ctx context.Context, id string, opts runtime.RestoreOptions) error {
	dir := r.dir(id)
	m, err := readMeta(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return runtime.ErrNotFound
	}
	if err != nil {
		return err
	}
	if m.Checkpoint == nil {
		// Only frozen (or running): thaw.
		c, err := r.load(id)
		if err != nil {
			return err
		}
		st, err := c.Status()
		if err != nil {
			return err
		}
		switch st {
		case libcontainer.Paused:
			return c.Resume()
		case libcontainer.Running, libcontainer.Created:
			return nil
		default:
			return errors.New("sandbox is stopped and has no checkpoint")
		}
	}
	memory := !m.Checkpoint.FilesOnly && !opts.FilesOnly
	images := ""
	if memory {
		if err := r.criuAvailable(); err != nil {
			return err
		}
		images = filepath.Join(dir, "checkpoint")
		if _, err := os.Stat(filepath.Join(images, "inventory.img")); err != nil {
			return fmt.Errorf("memory checkpoint is missing: %w", err)
		}
	}
	// What a crash may have left of the previous run.
	if err := r.release(ctx, id); err != nil {
		return err
	}
	t0 := time.Now()
	if err := r.boot(ctx, id, m, images, m.Checkpoint.Stdio); err != nil {
		if rerr := r.release(context.WithoutCancel(ctx), id); rerr != nil {
			r.log.Error("clean up failed restore", "sandbox", id, "err", rerr)
		}
		return err
	}
	r.log.Debug("sandbox restored", "sandbox", id, "memory", memory, "ms", time.Since(t0).Milliseconds())
	m.Checkpoint = nil
	if err := writeMeta(dir, m, true); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(dir, "checkpoint"))
}

// boot starts a sandbox's container over its existing writable layer: from
// CRIU images when images is set, else afresh with envd as PID 1. The
// caller removes what is left on error (release).
func (r *Runtime) boot(ctx context.Context, id string, m meta, images string, stdio criuStdio) error {
	dir := r.dir(id)
	rootfs, err := mountOverlay(dir, m.Layers)
	if err != nil {
		return err
	}
	var ep *network.Endpoint
	if r.cfg.Network != nil {
		ep, err = r.cfg.Network.Get(id)
		if errors.Is(err, network.ErrNotFound) {
			// Gone with a reboot of the host, or a new sandbox.
			ep, err = r.cfg.Network.Attach(ctx, id, network.Options{Internet: m.Internet})
		}
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	hostname := m.Hostname
	if hostname == "" {
		hostname = id
	}
	etc := etcPaths(dir)
	if _, err := os.Stat(etc.hostname); errors.Is(err, fs.ErrNotExist) {
		var resolv []byte
		if r.cfg.Network != nil {
			resolv = r.cfg.Network.ResolvConf()
		}
		if etc, err = writeEtc(dir, hostname, resolv); err != nil {
			return err
		}
	}
	netnsPath, sysfs := "", ""
	if ep != nil {
		netnsPath = ep.NetnsPath
		sysfs = filepath.Join(dir, "sys")
		if err := os.Mkdir(sysfs, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := mountSysfs(netnsPath, sysfs); err != nil {
			return err
		}
	}
	cfg, err := r.containerConfig(containerParams{
		id: id, rootfs: rootfs, hostname: hostname, resources: m.Resources,
		netnsPath: netnsPath, etc: etc, sysfs: sysfs,
	})
	if err != nil {
		return fmt.Errorf("container config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := libcontainer.Create(r.stateDir, id, cfg)
	if err != nil {
		return fmt.Errorf("create container: %w", err)
	}
	logf, err := openLog(dir)
	if err != nil {
		return err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	proc := envdProcess(devnull, logf)
	if images == "" {
		if _, err := r.startEnvd(ctx, c, proc); err != nil {
			if tail := logTail(dir, 512); tail != "" {
				err = fmt.Errorf("%w; envd output: %s", err, tail)
			}
			return fmt.Errorf("start envd: %w", err)
		}
		r.watch(id, proc)
		r.detachHostMounts(id)
		return nil
	}
	// CRIU reopens inherited files (through /proc/self/fd) as the restored
	// process, the sandbox's root.
	if err := logf.Chown(runtime.UIDBase, runtime.UIDBase); err != nil {
		return err
	}
	work := filepath.Join(dir, "criu")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	if err := writeCRIUConf(filepath.Join(dir, criuConfName), slices.Concat(stdio.restoreOptions(), criuOptions)); err != nil {
		return err
	}
	if err := withNetns(netnsPath, func() error {
		return c.Restore(proc, &libcontainer.CriuOpts{
			ImagesDirectory: images,
			WorkDirectory:   work,
			FileLocks:       true,
		})
	}); err != nil {
		if msg := criuLogErrors(filepath.Join(work, "restore.log"), 3); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return fmt.Errorf("restore memory checkpoint: %w", err)
	}
	r.watch(id, proc)
	r.detachHostMounts(id)
	return nil
}

// detachHostMounts detaches a started sandbox's root filesystem and sysfs
// from the runtime's mount namespace (see the function of that name); a
// failure only leaves them there, for Destroy to remove.
func (r *Runtime) detachHostMounts(id string) {
	if err := detachHostMounts(r.dir(id)); err != nil {
		r.log.Warn("sandbox mounts stay in the runtime's namespace", "sandbox", id, "err", err)
	}
}

// netnsOf returns the network namespace path a container joined ("" for
// its own).
func netnsOf(c *libcontainer.Container) string {
	cfg := c.Config()
	return cfg.Namespaces.PathOf(configs.NEWNET)
}

// envdProcess is the sandbox's init: envd, with stdin from devnull and its
// output into the sandbox's log.
func envdProcess(devnull, logf *os.File) *libcontainer.Process {
	return &libcontainer.Process{
		Args:   []string{EnvdPath, "envd", "--listen", fmt.Sprintf("0.0.0.0:%d", runtime.EnvdPort)},
		Env:    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cwd:    "/",
		Stdin:  devnull,
		Stdout: logf,
		Stderr: logf,
		Init:   true,
	}
}

// Snapshot implements runtime.Runtime.
func (r *Runtime) Snapshot(ctx context.Context, id string, opts runtime.SnapshotOptions) error {
	if !validID(id) {
		return fmt.Errorf("snapshot sandbox %q: %w", id, runtime.ErrNotFound)
	}
	if opts.Dir == "" || !filepath.IsAbs(opts.Dir) {
		return fmt.Errorf("snapshot sandbox %s: directory %q is not an absolute path", id, opts.Dir)
	}
	// Searchable: restored processes read their images from inside their
	// user namespace.
	if err := os.Mkdir(opts.Dir, 0o711); err != nil {
		return fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	if err := os.Chmod(opts.Dir, 0o711); err != nil {
		_ = os.RemoveAll(opts.Dir)
		return fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	unlock := r.locks.lock(id)
	defer unlock()
	if err := r.snapshot(ctx, id, opts); err != nil {
		_ = os.RemoveAll(opts.Dir)
		return fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	return nil
}

func (r *Runtime) snapshot(ctx context.Context, id string, opts runtime.SnapshotOptions) error {
	dir := r.dir(id)
	m, err := readMeta(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return runtime.ErrNotFound
	}
	if err != nil {
		return err
	}
	if len(m.Layers) == 0 {
		return errors.New("sandbox was created without a recorded spec")
	}
	man := snapshotManifest{
		Version: manifestVersion, Source: id, CreatedAt: time.Now().UTC(), Layers: m.Layers,
		Hostname: m.Hostname, Resources: m.Resources, FilesOnly: opts.FilesOnly,
	}
	if man.Hostname == "" {
		man.Hostname = id
	}
	upper := filepath.Join(opts.Dir, "upper")
	if err := os.Mkdir(upper, 0o755); err != nil {
		return err
	}
	images := filepath.Join(opts.Dir, "images")

	if m.Checkpoint != nil {
		// Saved already: copy the saved state.
		if !m.Checkpoint.FilesOnly && !opts.FilesOnly {
			if err := os.Mkdir(images, 0o700); err != nil {
				return err
			}
			if err := copyLayer(ctx, filepath.Join(dir, "checkpoint"), images); err != nil {
				return err
			}
			man.Stdio = m.Checkpoint.Stdio
		} else {
			man.FilesOnly = true
		}
		if err := copyLayer(ctx, filepath.Join(dir, "upper"), upper); err != nil {
			return err
		}
		return writeManifest(opts.Dir, man)
	}

	c, err := r.load(id)
	if err != nil {
		return err
	}
	st, err := c.Status()
	if err != nil {
		return err
	}
	if st == libcontainer.Stopped {
		return errors.New("sandbox is stopped")
	}
	// Frozen while saved, so memory and files agree.
	if st != libcontainer.Paused {
		if err := c.Pause(); err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		defer func() {
			if err := c.Resume(); err != nil {
				r.log.Error("thaw sandbox after snapshot", "sandbox", id, "err", err)
			}
		}()
	}
	t0 := time.Now()
	if !opts.FilesOnly {
		if err := r.criuAvailable(); err != nil {
			return err
		}
		state, err := c.State()
		if err != nil {
			return err
		}
		if man.Stdio, err = stdioOf(state.InitProcessPid); err != nil {
			return err
		}
		work := filepath.Join(dir, "criu")
		if err := os.MkdirAll(work, 0o700); err != nil {
			return err
		}
		if err := writeCRIUConf(filepath.Join(dir, criuConfName), slices.Concat(man.Stdio.dumpOptions(), criuOptions)); err != nil {
			return err
		}
		// CRIU puts the cgroup back in the state it found it: frozen.
		if err := withNetns(netnsOf(c), func() error {
			return c.Checkpoint(&libcontainer.CriuOpts{
				ImagesDirectory: images,
				WorkDirectory:   work,
				LeaveRunning:    true,
				FileLocks:       true,
			})
		}); err != nil {
			if msg := criuLogErrors(filepath.Join(work, "dump.log"), 3); msg != "" {
				err = fmt.Errorf("%w: %s", err, msg)
			}
			return fmt.Errorf("dump: %w", err)
		}
		if err := shareImages(images); err != nil {
			return err
		}
	}
	tDump := time.Now()
	if err := copyLayer(ctx, filepath.Join(dir, "upper"), upper); err != nil {
		return err
	}
	r.log.Debug("sandbox snapshot", "sandbox", id, "dumpMs", tDump.Sub(t0).Milliseconds(), "copyMs", time.Since(tDump).Milliseconds())
	return writeManifest(opts.Dir, man)
}

// shareImages opens a CRIU image directory to restored processes, which
// read some images themselves from inside their new user namespace: first
// as the host's root without its capabilities (group 0), then as the
// sandbox's root (owner UIDBase). Nobody else may read it.
func shareImages(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, runtime.UIDBase, 0); err != nil {
			return err
		}
		mode := fs.FileMode(0o640)
		if d.IsDir() {
			mode = 0o750
		}
		return os.Chmod(path, mode)
	})
}

func writeManifest(dir string, man snapshotManifest) error {
	b, err := json.Marshal(man)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, manifestName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write snapshot manifest: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, manifestName))
}

func readManifest(dir string) (snapshotManifest, error) {
	var man snapshotManifest
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return man, fmt.Errorf("read snapshot manifest: %w", err)
	}
	if err := json.Unmarshal(b, &man); err != nil {
		return man, fmt.Errorf("read snapshot manifest: %w", err)
	}
	if man.Version != manifestVersion {
		return man, fmt.Errorf("snapshot format %d is not supported (want %d)", man.Version, manifestVersion)
	}
	return man, nil
}

// CreateFromSnapshot implements runtime.Runtime.
func (r *Runtime) CreateFromSnapshot(ctx context.Context, spec runtime.Spec, dir string) (info runtime.Info, err error) {
	id := spec.ID
	man, err := readManifest(dir)
	if err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %q from snapshot %s: %w", id, dir, err)
	}
	// The snapshot's layers and limits: its memory image was made for them.
	spec.Layers, spec.Resources = man.Layers, man.Resources
	if spec.Hostname == "" {
		spec.Hostname = id
	}
	if !man.FilesOnly {
		spec.Hostname = man.Hostname // the kernel's hostname comes back with the memory
	}
	if err := validateSpec(spec); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %q from snapshot %s: %w", id, dir, err)
	}
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
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := r.destroy(cctx, id); derr != nil {
			r.log.Error("roll back failed create from snapshot", "sandbox", id, "err", derr)
			err = errors.Join(err, fmt.Errorf("roll back: %w", derr))
		}
	}()
	m := meta{
		ID: id, CreatedAt: time.Now().UTC(), Labels: spec.Labels, Layers: spec.Layers,
		Hostname: spec.Hostname, Resources: spec.Resources, Internet: spec.Network.Internet,
	}
	if err := writeMeta(r.dir(id), m, false); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	for _, d := range []string{"upper", "work", "rootfs"} {
		if err := os.Mkdir(filepath.Join(r.dir(id), d), 0o755); err != nil {
			return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
		}
	}
	if err := copyLayer(ctx, filepath.Join(dir, "upper"), filepath.Join(r.dir(id), "upper")); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: writable layer: %w", id, err)
	}
	images := ""
	if !man.FilesOnly {
		if err := r.criuAvailable(); err != nil {
			return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
		}
		images = filepath.Join(dir, "images")
	}
	if err := r.boot(ctx, id, m, images, man.Stdio); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s from snapshot: %w", id, err)
	}
	if info, err = r.inspect(id); err != nil {
		return runtime.Info{}, fmt.Errorf("create sandbox %s: %w", id, err)
	}
	return info, nil
}

// selfTestTimeout bounds the checkpoint/restore self-test.
const selfTestTimeout = time.Minute

// CheckCheckpoint implements runtime.Runtime: it creates a throwaway
// sandbox (envd alone on an empty layer, in a network namespace of the
// network manager when there is one), checkpoints it with its memory,
// restores it and checks that envd answers on its listening socket again.
func (r *Runtime) CheckCheckpoint(ctx context.Context) (err error) {
	if err := r.criuAvailable(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, selfTestTimeout)
	defer cancel()
	layer := filepath.Join(r.cfg.RootDir, "selftest-layer")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		return fmt.Errorf("checkpoint self-test: %w", err)
	}
	if err := os.Chmod(layer, 0o755); err != nil {
		return fmt.Errorf("checkpoint self-test: %w", err)
	}
	id := fmt.Sprintf("paddock-selftest-%d", time.Now().UnixNano())
	if _, err := r.Create(ctx, runtime.Spec{ID: id, Layers: []string{layer}, Resources: runtime.Resources{MemoryBytes: 64 << 20, Pids: 64}}); err != nil {
		return fmt.Errorf("checkpoint self-test: %w", err)
	}
	defer func() {
		if derr := r.Destroy(context.WithoutCancel(ctx), id); derr != nil {
			err = errors.Join(err, fmt.Errorf("checkpoint self-test: %w", derr))
		}
	}()
	if err := r.waitEnvd(ctx, id); err != nil {
		return fmt.Errorf("checkpoint self-test: %w", err)
	}
	if err := r.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
		return fmt.Errorf("checkpoint self-test: %w", err)
	}
	if _, err := r.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
		return fmt.Errorf("checkpoint self-test: %w", err)
	}
	if err := r.waitEnvd(ctx, id); err != nil {
		return fmt.Errorf("checkpoint self-test: after restore: %w", err)
	}
	return nil
}

// waitEnvd polls envd's /health in the sandbox until it answers 204.
func (r *Runtime) waitEnvd(ctx context.Context, id string) error {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return r.Dial(ctx, id, runtime.EnvdPort)
		},
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	url := "http://envd:" + strconv.Itoa(runtime.EnvdPort) + "/health"
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd did not answer /health: %w (last: %v)", ctx.Err(), last)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
