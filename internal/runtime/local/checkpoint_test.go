package local_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/runtime/conformance"
	"github.com/paddockhq/paddock/internal/runtime/local"
)

// requireCRIU fails the test when memory checkpoints do not work here.
func requireCRIU(t *testing.T, rt *local.Runtime) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rt.CheckCheckpoint(ctx); err != nil {
		t.Fatalf("memory checkpoints unavailable on this host (run scripts/install-criu.sh): %v", err)
	}
}

// startCounter starts a shell in the sandbox that keeps a counter in memory
// and writes it to path every 50 ms, detached from the exec (its parent
// becomes envd), and waits for the first values.
func startCounter(t *testing.T, root, id, path string) {
	t.Helper()
	script := "i=0; while :; do i=$((i+1)); echo $i > " + path + ".tmp; mv " + path + ".tmp " + path + "; sleep 0.05; done"
	if out, code := execIn(t, root, id, "sh", "-c", "setsid sh -c '"+script+"' </dev/null >/dev/null 2>&1 &"); code != 0 {
		t.Fatalf("start counter: exit %d: %s", code, out)
	}
	host := filepath.Join(root, "sandboxes", id, "upper", strings.TrimPrefix(path, "/"))
	waitCounter(t, host, 5)
}

// readCounter reads the counter file on the host (0 when absent).
func readCounter(t *testing.T, host string) int {
	t.Helper()
	b, err := os.ReadFile(host)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0 // mid-write
	}
	return n
}

// waitCounter waits until the counter file on the host reaches at least min.
func waitCounter(t *testing.T, host string, min int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n := readCounter(t, host); n >= min {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter %s stayed below %d (now %d)", host, min, readCounter(t, host))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cgroupExists(id string) bool {
	for _, h := range cgroupHierarchies() {
		if _, err := os.Stat(filepath.Join(h, cgParent, id)); err == nil {
			return true
		}
	}
	return false
}

// memSandbox creates a sandbox on a fresh runtime of d for the checkpoint
// tests; the returned pointer names the runtime that currently owns it (the
// tests replace it), and cleanup destroys the sandbox through it.
func memSandbox(t *testing.T, d *driver, id string) (**local.Runtime, string) {
	t.Helper()
	root := newRoot(t)
	rt := d.open(t, root, nil)
	cur := &rt
	t.Cleanup(func() {
		if err := (*cur).Destroy(context.Background(), id); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		if tr := d.traces(t, *cur, id); len(tr) > 0 {
			t.Errorf("left after Destroy: %v", tr)
		}
		(*cur).Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := runtime.Spec{ID: id, Layers: layers, Resources: runtime.Resources{MemoryBytes: 256 << 20, Pids: 256}}
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := conformance.WaitHealthy(ctx, rt, id); err != nil {
		t.Fatal(err)
	}
	requireCRIU(t, rt)
	return cur, root
}

// TestCheckpointRestore checkpoints a sandbox (envd listening, a counter
// process) with its memory, checks that nothing of it runs, restores it and
// checks the counter goes on from where it was; then again with a new
// Runtime (a restarted control plane) restoring. With and without the
// network manager (whose namespaces belong to the host's user namespace).
func TestCheckpointRestore(t *testing.T) {
	t.Run("NoNetwork", func(t *testing.T) { testCheckpointRestore(t, newDriver(nil)) })
	t.Run("Network", func(t *testing.T) { testCheckpointRestore(t, newNetDriver(t)) })
}

func testCheckpointRestore(t *testing.T, d *driver) {
	id := conformance.NewID()
	cur, root := memSandbox(t, d, id)
	rt := *cur
	ctx := context.Background()
	startCounter(t, root, id, "/tmp/counter")
	host := filepath.Join(root, "sandboxes", id, "upper", "tmp", "counter")
	before, err := rt.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}

	// An established connection to envd at checkpoint time (as the control
	// plane's pooled ones are) does not keep the sandbox from coming back.
	conn, err := rt.Dial(ctx, id, runtime.EnvdPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /health HTTP/1.1\r\nHost: envd\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("GET /health on a kept-alive connection: %v, %v", resp, err)
	}

	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	at := readCounter(t, host)
	if info, err := rt.Inspect(ctx, id); err != nil || info.State != runtime.StateCheckpointed {
		t.Fatalf("Inspect after Checkpoint: %+v, %v; want state checkpointed", info, err)
	}
	if cgroupExists(id) {
		t.Errorf("cgroup of %s still exists after Checkpoint: its processes hold memory", id)
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(root, "sandboxes", id))); len(ms) > 0 {
		t.Errorf("still mounted after Checkpoint: %s", ms[0].Mountpoint)
	}
	time.Sleep(300 * time.Millisecond)
	if n := readCounter(t, host); n != at {
		t.Fatalf("counter moved from %d to %d while checkpointed", at, n)
	}
	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
		t.Errorf("second Checkpoint: %v, want nil (no-op)", err)
	}
	if _, err := rt.Stats(ctx, id); err == nil {
		t.Errorf("Stats of a checkpointed sandbox succeeded")
	}

	info, err := rt.Restore(ctx, id, runtime.RestoreOptions{})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if info.State != runtime.StateRunning || info.Addr != before.Addr {
		t.Errorf("Restore returned %+v; want running at %q", info, before.Addr)
	}
	if err := conformance.WaitHealthy(ctx, rt, id); err != nil {
		t.Fatal(err)
	}
	checkMountsOnlyInContainer(t, root, id, d.net != nil)
	if n := waitCounter(t, host, at+3); n > at+200 {
		t.Errorf("counter at %d after restore, from %d at checkpoint: not continuing", n, at)
	}
	if _, err := os.Stat(filepath.Join(root, "sandboxes", id, "checkpoint")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checkpoint images kept after a successful restore: %v", err)
	}

	// Across a restart: checkpoint with one Runtime, restore with another.
	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint before restart: %v", err)
	}
	at = readCounter(t, host)
	rt.Close()
	d.restartNetwork(t)
	*cur = d.open(t, root, nil)
	rt = *cur
	if info, err := rt.Inspect(ctx, id); err != nil || info.State != runtime.StateCheckpointed {
		t.Fatalf("Inspect by a new runtime: %+v, %v; want checkpointed", info, err)
	}
	if l, err := rt.List(ctx); err != nil || len(l) != 1 || l[0].State != runtime.StateCheckpointed {
		t.Fatalf("List by a new runtime: %+v, %v; want the checkpointed sandbox", l, err)
	}
	if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
		t.Fatalf("Restore by a new runtime: %v", err)
	}
	if err := conformance.WaitHealthy(ctx, rt, id); err != nil {
		t.Fatal(err)
	}
	if n := waitCounter(t, host, at+3); n > at+200 {
		t.Errorf("counter at %d after restore by a new runtime, from %d: not continuing", n, at)
	}

	// A paused (frozen) sandbox checkpoints too; Restore of a paused one thaws.
	if err := rt.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if info, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil || info.State != runtime.StateRunning {
		t.Fatalf("Restore of a paused sandbox: %+v, %v; want running", info, err)
	}
	if err := rt.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint of a paused sandbox: %v", err)
	}
	at = readCounter(t, host)
	if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if n := waitCounter(t, host, at+3); n > at+200 {
		t.Errorf("counter at %d after checkpoint of a paused sandbox, from %d", n, at)
	}
}

// TestCheckpointFilesOnly: a files-only checkpoint keeps the writable layer;
// Restore boots envd afresh (the counter process is gone, its file stays).
// A memory checkpoint restored with FilesOnly boots afresh too.
func TestCheckpointFilesOnly(t *testing.T) {
	d := newNetDriver(t)
	id := conformance.NewID()
	cur, root := memSandbox(t, d, id)
	rt := *cur
	ctx := context.Background()
	startCounter(t, root, id, "/tmp/counter")
	host := filepath.Join(root, "sandboxes", id, "upper", "tmp", "counter")
	pid := initPid(t, root, id)

	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{FilesOnly: true}); err != nil {
		t.Fatalf("Checkpoint files only: %v", err)
	}
	if info, err := rt.Inspect(ctx, id); err != nil || info.State != runtime.StateCheckpointed {
		t.Fatalf("Inspect: %+v, %v; want checkpointed", info, err)
	}
	at := readCounter(t, host)
	if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if err := conformance.WaitHealthy(ctx, rt, id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := readCounter(t, host); n != at {
		t.Errorf("counter file %d -> %d after a files-only restore; want the file kept and no counter running", at, n)
	}
	if p := initPid(t, root, id); p == pid {
		t.Errorf("init pid %d unchanged: envd was not started afresh", p)
	}

	startCounter(t, root, id, "/tmp/counter2")
	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	host2 := filepath.Join(root, "sandboxes", id, "upper", "tmp", "counter2")
	at = readCounter(t, host2)
	if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{FilesOnly: true}); err != nil {
		t.Fatalf("Restore files only: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := readCounter(t, host2); n != at {
		t.Errorf("counter %d -> %d after Restore with FilesOnly; want no process restored", at, n)
	}
	if _, err := os.Stat(filepath.Join(root, "sandboxes", id, "checkpoint")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("memory image kept after a files-only restore: %v", err)
	}
}

// TestRestoreFailureKeepsCheckpoint: a restore that cannot work (a layer is
// missing) fails, leaves the sandbox checkpointed with its images, and a
// later restore succeeds.
func TestRestoreFailureKeepsCheckpoint(t *testing.T) {
	d := newNetDriver(t)
	id := conformance.NewID()
	// A private copy of the layers, one of which goes away for a while.
	lower := filepath.Join(t.TempDir(), "lower")
	if out, err := exec.Command("cp", "-a", layers[0], lower).CombinedOutput(); err != nil {
		t.Fatalf("copy layer: %v: %s", err, out)
	}
	if err := os.Chmod(filepath.Dir(lower), 0o711); err != nil {
		t.Fatal(err)
	}
	root := newRoot(t)
	rt := d.open(t, root, nil)
	t.Cleanup(func() {
		if err := rt.Destroy(context.Background(), id); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		rt.Close()
	})
	ctx := context.Background()
	spec := runtime.Spec{ID: id, Layers: append([]string{lower}, layers[1:]...)}
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := conformance.WaitHealthy(ctx, rt, id); err != nil {
		t.Fatal(err)
	}
	requireCRIU(t, rt)
	startCounter(t, root, id, "/tmp/counter")
	host := filepath.Join(root, "sandboxes", id, "upper", "tmp", "counter")
	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	at := readCounter(t, host)
	if err := os.Rename(lower, lower+".away"); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err == nil {
		t.Fatal("Restore with a layer missing succeeded")
	}
	if info, err := rt.Inspect(ctx, id); err != nil || info.State != runtime.StateCheckpointed {
		t.Fatalf("Inspect after a failed restore: %+v, %v; want checkpointed", info, err)
	}
	if cgroupExists(id) {
		t.Errorf("a failed restore left the cgroup of %s", id)
	}
	if err := os.Rename(lower+".away", lower); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
		t.Fatalf("Restore after the layer came back: %v", err)
	}
	if n := waitCounter(t, host, at+3); n > at+200 {
		t.Errorf("counter at %d, from %d at checkpoint", n, at)
	}
}

// TestSnapshot takes a snapshot of a running sandbox (which keeps running)
// and creates two sandboxes from it: each has the snapshot's files and its
// counter going on from the snapshot's value, in its own network and cgroup,
// and they are independent of each other and of the source.
func TestSnapshot(t *testing.T) {
	d := newNetDriver(t)
	src := conformance.NewID()
	cur, root := memSandbox(t, d, src)
	rt := *cur
	ctx := context.Background()
	startCounter(t, root, src, "/tmp/counter")
	if out, code := execIn(t, root, src, "sh", "-c", "echo snap > /home/mark"); code != 0 {
		t.Fatalf("write mark: %d %s", code, out)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := rt.Snapshot(ctx, src, runtime.SnapshotOptions{Dir: dir}); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	srcHost := filepath.Join(root, "sandboxes", src, "upper", "tmp", "counter")
	at := readCounter(t, srcHost)
	if info, err := rt.Inspect(ctx, src); err != nil || info.State != runtime.StateRunning {
		t.Fatalf("source after Snapshot: %+v, %v; want running", info, err)
	}
	waitCounter(t, srcHost, at+3) // the source goes on
	if err := rt.Snapshot(ctx, src, runtime.SnapshotOptions{Dir: dir}); err == nil {
		t.Errorf("Snapshot into an existing directory succeeded")
	}

	var forks []string
	for i := 0; i < 2; i++ {
		id := conformance.NewID()
		info, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: id, Labels: map[string]string{"fork": strconv.Itoa(i)}}, dir)
		if err != nil {
			t.Fatalf("CreateFromSnapshot %d: %v", i, err)
		}
		t.Cleanup(func() { _ = rt.Destroy(context.Background(), id) })
		if info.State != runtime.StateRunning || info.Labels["fork"] != strconv.Itoa(i) || info.Addr == "" {
			t.Errorf("fork %d: %+v", i, info)
		}
		if err := conformance.WaitHealthy(ctx, rt, id); err != nil {
			t.Fatal(err)
		}
		forks = append(forks, id)
	}
	for i, id := range forks {
		host := filepath.Join(root, "sandboxes", id, "upper", "tmp", "counter")
		n := waitCounter(t, host, at+3)
		if n < at-50 || n > at+400 {
			t.Errorf("fork %d counter %d, snapshot taken at about %d: not continuing from it", i, n, at)
		}
		if b, err := os.ReadFile(filepath.Join(root, "sandboxes", id, "upper", "home", "mark")); err != nil || string(b) != "snap\n" {
			t.Errorf("fork %d: /home/mark = %q, %v; want the snapshot's file", i, b, err)
		}
		if !cgroupExists(id) {
			t.Errorf("fork %d has no cgroup of its own", i)
		}
	}
	if out, code := execIn(t, root, forks[0], "sh", "-c", "echo only0 > /home/only"); code != 0 {
		t.Fatalf("write in fork 0: %d %s", code, out)
	}
	for _, id := range []string{forks[1], src} {
		if _, err := os.Stat(filepath.Join(root, "sandboxes", id, "upper", "home", "only")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a file written in fork 0 shows up in %s", id)
		}
	}
	a, _ := rt.Inspect(ctx, forks[0])
	b, _ := rt.Inspect(ctx, forks[1])
	if a.Addr == b.Addr {
		t.Errorf("forks share address %s", a.Addr)
	}
	// The fork is a sandbox like any other: checkpoint and restore it.
	if err := rt.Checkpoint(ctx, forks[0], runtime.CheckpointOptions{}); err != nil {
		t.Fatalf("Checkpoint of a fork: %v", err)
	}
	if _, err := rt.Restore(ctx, forks[0], runtime.RestoreOptions{}); err != nil {
		t.Fatalf("Restore of a fork: %v", err)
	}
	if err := conformance.WaitHealthy(ctx, rt, forks[0]); err != nil {
		t.Fatal(err)
	}
	// Killing the source leaves the snapshot usable.
	if err := rt.Destroy(ctx, src); err != nil {
		t.Fatal(err)
	}
	id := conformance.NewID()
	if _, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: id}, dir); err != nil {
		t.Fatalf("CreateFromSnapshot after the source is gone: %v", err)
	}
	t.Cleanup(func() { _ = rt.Destroy(context.Background(), id) })
	if _, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: id}, dir); !errors.Is(err, runtime.ErrExists) {
		t.Errorf("CreateFromSnapshot with a taken ID: %v, want ErrExists", err)
	}
	if _, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: conformance.NewID()}, t.TempDir()); err == nil {
		t.Errorf("CreateFromSnapshot of an empty directory succeeded")
	}
}
