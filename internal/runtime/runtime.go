// Package runtime owns the Runtime interface: how a sandbox's isolated
// environment (root filesystem, namespaces, limits, network) is created,
// reached, paused and destroyed. Drivers live in subpackages (local: runc's
// libcontainer + overlayfs + netns) and all pass the conformance suite in
// runtime/conformance. The interface does not assume containers: a microVM
// driver fits it too.
package runtime

import (
	"context"
	"errors"
	"net"
	"time"
)

// Errors drivers return (wrapped) so callers can branch on them.
var (
	// ErrNotFound: the runtime knows no sandbox with that ID.
	ErrNotFound = errors.New("sandbox not found in runtime")
	// ErrExists: a sandbox with that ID already exists.
	ErrExists = errors.New("sandbox already exists in runtime")
)

// EnvdPort is the port envd listens on inside every sandbox.
const EnvdPort = 49983

// Resources are the limits of one sandbox.
type Resources struct {
	// CPUs is the CPU quota in cores (0.5 = half a core); 0 means no limit.
	CPUs float64
	// MemoryBytes caps memory (and memory+swap); 0 means no limit.
	MemoryBytes int64
	// Pids caps the number of tasks; 0 means no limit.
	Pids int64
}

// Network is the network policy of one sandbox.
type Network struct {
	// Internet allows egress to the outside through the host's NAT.
	Internet bool
}

// Spec describes a sandbox to create.
type Spec struct {
	// ID is the sandbox ID (`i` + 20 [a-z0-9]); unique per runtime.
	ID string
	// Layers are absolute paths of read-only root filesystem layers, lowest
	// first. Files are owned by IDs already shifted into the sandbox's user
	// namespace range (see UIDBase).
	Layers []string
	// Hostname inside the sandbox; empty means the ID.
	Hostname string
	// Resources are the sandbox's limits.
	Resources Resources
	// Network is the sandbox's network policy.
	Network Network
	// Labels are opaque key/values stored with the sandbox and returned by
	// Inspect, so a control plane can re-adopt sandboxes after a restart.
	Labels map[string]string
}

// Layer format. Spec.Layers and the output of ExportChanges are directory
// trees in overlayfs's format: a lower layer's entries override those of the
// layers below it; a character device with device number 0/0 (a whiteout)
// hides the entry of that name below; a directory with the extended
// attribute OpaqueXattr set to "y" hides everything below it. Ownership is
// shifted by UIDBase.
const (
	// OpaqueXattr marks a directory whose lower-layer content is hidden.
	OpaqueXattr = "trusted.overlay.opaque"
)

// UIDBase and UIDCount describe the user namespace mapping of sandboxes:
// ID 0 inside is UIDBase outside, for UIDCount IDs. Template layers are
// stored with ownership already shifted by UIDBase.
const (
	UIDBase  = 100000
	UIDCount = 65536
)

// State is the run state of a sandbox as the runtime sees it.
type State string

// States a sandbox can be in.
const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped" // its init exited; Destroy to clean up
	// StateCheckpointed: saved to disk by Checkpoint; nothing runs and no
	// memory is held; Restore brings it back.
	StateCheckpointed State = "checkpointed"
)

// Info describes an existing sandbox.
type Info struct {
	ID        string
	State     State
	CreatedAt time.Time
	// Addr is the sandbox's address on the host network (may be empty when
	// the driver only offers Dial).
	Addr   string
	Labels map[string]string
	// Layers are the root filesystem layers the sandbox was created with
	// (Spec.Layers); nil when the driver does not know them.
	Layers []string
}

// CheckpointOptions tune Runtime.Checkpoint.
type CheckpointOptions struct {
	// FilesOnly keeps the writable layer only: no processes or memory.
	FilesOnly bool
}

// RestoreOptions tune Runtime.Restore.
type RestoreOptions struct {
	// FilesOnly ignores a saved memory image and boots the sandbox afresh
	// from its writable layer (the image is discarded on success).
	FilesOnly bool
}

// SnapshotOptions tune Runtime.Snapshot.
type SnapshotOptions struct {
	// Dir receives the snapshot; absolute, and it must not exist.
	Dir string
	// FilesOnly copies the writable layer only: sandboxes created from the
	// snapshot boot afresh.
	FilesOnly bool
}

// Stats are resource usage counters of a sandbox.
type Stats struct {
	CPUUsage    time.Duration // cumulative CPU time
	CPUs        float64       // CPU quota in cores (0: unlimited)
	MemoryUsed  int64         // bytes, excluding page cache
	MemoryCache int64         // bytes of page cache
	MemoryLimit int64         // bytes (0: unlimited)
	DiskUsed    int64         // bytes written to the sandbox's writable layer
	Pids        int64         // current tasks
}

// Runtime creates and manages sandboxes. Implementations are safe for
// concurrent use; operations on different IDs do not serialise.
type Runtime interface {
	// Create builds and starts a sandbox whose PID 1 is envd. It returns once
	// the init process runs; envd may not be listening yet (the local
	// runtime waits for envd's notice that it listens; callers still poll
	// /health through Dial). On error nothing of the sandbox is left behind.
	Create(ctx context.Context, spec Spec) (Info, error)
	// Inspect returns a sandbox's info; ErrNotFound when it does not exist.
	Inspect(ctx context.Context, id string) (Info, error)
	// List returns every sandbox the runtime has, including half-created or
	// stopped ones, so a control plane can adopt or reap them after a restart.
	List(ctx context.Context) ([]Info, error)
	// Dial connects to a TCP port inside the sandbox, including ports bound
	// only to the sandbox's loopback.
	Dial(ctx context.Context, id string, port int) (net.Conn, error)
	// Pause freezes every process of the sandbox; Resume thaws them.
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// Stats returns resource usage.
	Stats(ctx context.Context, id string) (Stats, error)
	// ExportChanges copies what the sandbox changed in its root filesystem,
	// relative to its layers, into dst (an existing empty directory on the
	// host) as a layer in the format above, so dst can be stacked on the
	// sandbox's layers in a later Spec. Files the runtime itself placed in
	// the sandbox (envd, network identity files, /proc, /sys, /dev) are left
	// out. Processes are frozen while the changes are copied, so the copy is
	// consistent; a running sandbox runs again afterwards, a paused one stays
	// paused. On error dst may hold a partial copy; the caller removes it.
	ExportChanges(ctx context.Context, id, dst string) error

	// Checkpoint saves the sandbox to disk and stops it: its processes end
	// and their memory is released; its writable layer, network and labels
	// stay, it is listed as StateCheckpointed, and Restore brings it back.
	// Unless opts.FilesOnly, its processes are saved with their memory, open
	// files and listening sockets, so they continue after Restore (a driver
	// may bring established TCP connections back closed: their peers see a
	// reset); with FilesOnly only the writable layer is kept and Restore
	// boots the sandbox afresh. A paused sandbox can be checkpointed;
	// checkpointing a checkpointed one does nothing. On error the sandbox is
	// as it was (running or paused).
	Checkpoint(ctx context.Context, id string, opts CheckpointOptions) error
	// Restore brings a checkpointed sandbox back under the same ID and
	// network, its processes continuing where they were (a memory
	// checkpoint, unless opts.FilesOnly) or envd starting afresh. Restoring a
	// paused sandbox resumes it; a running one is left alone. On error the
	// checkpoint is kept and the sandbox stays checkpointed.
	Restore(ctx context.Context, id string, opts RestoreOptions) (Info, error)
	// Snapshot writes a self-contained copy of a running, paused or
	// checkpointed sandbox into opts.Dir (created; it must not exist): its
	// writable layer and, unless opts.FilesOnly, its processes with their
	// memory. The sandbox is frozen while the copy is written, then goes on
	// as before. On error opts.Dir is removed.
	Snapshot(ctx context.Context, id string, opts SnapshotOptions) error
	// CreateFromSnapshot creates a new, independent sandbox from a snapshot
	// directory. spec gives its ID, network and labels; its layers, limits
	// and (in a memory snapshot) running processes and hostname come from
	// the snapshot, and its writable layer starts as the snapshot's. Many
	// sandboxes can be created from one snapshot. Established connections
	// saved in the snapshot come back closed. On error nothing of the new
	// sandbox is left behind.
	CreateFromSnapshot(ctx context.Context, spec Spec, dir string) (Info, error)
	// CheckCheckpoint tests whether memory checkpoints work on this host
	// (checkpointing and restoring a throwaway sandbox): nil when they do,
	// else why not. Without them only FilesOnly checkpoints and snapshots
	// work.
	CheckCheckpoint(ctx context.Context) error

	// Destroy kills the sandbox and removes every trace of it: processes,
	// mounts, cgroups, network devices, writable layer, state. Destroying a
	// sandbox that does not exist is not an error.
	Destroy(ctx context.Context, id string) error
	// Close releases the runtime's own resources; sandboxes keep running.
	Close() error
}
