package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// The checkpoint cases see a sandbox's memory through envd: /init puts an
// environment variable into envd's memory only, and /envs reads it back.

// markEnvd stores key=value in envd's memory (POST /init).
func markEnvd(ctx context.Context, rt runtime.Runtime, id, key, value string) error {
	body, _ := json.Marshal(map[string]any{"envVars": map[string]string{key: value}})
	resp, err := envdRequest(ctx, rt, id, http.MethodPost, "/init", body)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("POST /init: status %d", resp.StatusCode)
	}
	return nil
}

// envdValue reads key from envd's environment (GET /envs); "" when unset.
func envdValue(ctx context.Context, rt runtime.Runtime, id, key string) (string, error) {
	resp, err := envdRequest(ctx, rt, id, http.MethodGet, "/envs", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /envs: status %d", resp.StatusCode)
	}
	var env map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return "", fmt.Errorf("GET /envs: %w", err)
	}
	return env[key], nil
}

func envdRequest(ctx context.Context, rt runtime.Runtime, id, method, path string, body []byte) (*http.Response, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rt.Dial(ctx, id, runtime.EnvdPort)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, method, "http://envd"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	// Read it all now: the transport is closed with this function.
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	return resp, nil
}

func waitHealthy(t *testing.T, rt runtime.Runtime, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), HealthTimeout)
	defer cancel()
	if err := WaitHealthy(ctx, rt, id); err != nil {
		t.Fatal(err)
	}
}

func testCheckpoint(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	if err := rt.CheckCheckpoint(ctx); h.MemoryCheckpoints && err != nil {
		t.Fatalf("CheckCheckpoint: %v; the harness says memory checkpoints work here", err)
	}
	id := NewID()
	labels := map[string]string{"checkpoint": "yes"}
	info := create(t, rt, runtime.Spec{ID: id, Layers: h.Layers, Labels: labels})
	if err := markEnvd(ctx, rt, id, "MARK", "before"); err != nil {
		t.Fatal(err)
	}

	// Memory checkpoint (where available): envd's memory survives.
	if h.MemoryCheckpoints {
		if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
			t.Fatalf("Checkpoint: %v", err)
		}
		got, err := rt.Inspect(ctx, id)
		if err != nil || got.State != runtime.StateCheckpointed || got.Labels["checkpoint"] != "yes" {
			t.Fatalf("Inspect after Checkpoint: %+v, %v; want checkpointed with its labels", got, err)
		}
		if l, ok := listed(t, rt, id); !ok || l.State != runtime.StateCheckpointed {
			t.Errorf("List after Checkpoint: %+v (listed %v), want checkpointed", l, ok)
		}
		if err := Health(ctx, rt, id, 300*time.Millisecond); err == nil {
			t.Errorf("envd answered /health while checkpointed")
		}
		if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
			t.Errorf("second Checkpoint: %v, want nil", err)
		}
		got, err = rt.Restore(ctx, id, runtime.RestoreOptions{})
		if err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if got.State != runtime.StateRunning || got.Addr != info.Addr {
			t.Errorf("Restore returned %+v, want running at %q", got, info.Addr)
		}
		waitHealthy(t, rt, id)
		if v, err := envdValue(ctx, rt, id, "MARK"); err != nil || v != "before" {
			t.Fatalf("envd's memory after Restore: MARK=%q, %v; want %q", v, err, "before")
		}
		// A paused sandbox checkpoints too.
		if err := rt.Pause(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{}); err != nil {
			t.Fatalf("Checkpoint of a paused sandbox: %v", err)
		}
		if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		waitHealthy(t, rt, id)
		if v, err := envdValue(ctx, rt, id, "MARK"); err != nil || v != "before" {
			t.Errorf("envd's memory after checkpoint of a paused sandbox: MARK=%q, %v", v, err)
		}
	}

	// Restore of a paused sandbox thaws it.
	if err := rt.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil || got.State != runtime.StateRunning {
		t.Fatalf("Restore of a paused sandbox: %+v, %v; want running", got, err)
	}
	waitHealthy(t, rt, id)

	// Files only: envd starts afresh.
	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{FilesOnly: true}); err != nil {
		t.Fatalf("Checkpoint FilesOnly: %v", err)
	}
	if got, err := rt.Inspect(ctx, id); err != nil || got.State != runtime.StateCheckpointed {
		t.Fatalf("Inspect after files-only Checkpoint: %+v, %v", got, err)
	}
	if _, err := rt.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
		t.Fatalf("Restore of a files-only checkpoint: %v", err)
	}
	waitHealthy(t, rt, id)
	if v, err := envdValue(ctx, rt, id, "MARK"); err != nil || v != "" {
		t.Errorf("after a files-only checkpoint: MARK=%q, %v; want envd started afresh", v, err)
	}

	// A checkpointed sandbox is destroyed like any other.
	if err := rt.Checkpoint(ctx, id, runtime.CheckpointOptions{FilesOnly: !h.MemoryCheckpoints}); err != nil {
		t.Fatal(err)
	}
	if err := rt.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy of a checkpointed sandbox: %v", err)
	}
	if _, err := rt.Inspect(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Inspect after Destroy: %v, want ErrNotFound", err)
	}
	checkNoTraces(t, h, rt, id)

	// Unknown sandboxes.
	unknown := NewID()
	if err := rt.Checkpoint(ctx, unknown, runtime.CheckpointOptions{}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Checkpoint of an unknown sandbox: %v, want ErrNotFound", err)
	}
	if _, err := rt.Restore(ctx, unknown, runtime.RestoreOptions{}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Restore of an unknown sandbox: %v, want ErrNotFound", err)
	}
	dir := filepath.Join(h.NewLayerDir(t), "snapshot")
	if err := rt.Snapshot(ctx, unknown, runtime.SnapshotOptions{Dir: dir}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Snapshot of an unknown sandbox: %v, want ErrNotFound", err)
	}
}

func testSnapshot(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	src := NewID()
	srcInfo := create(t, rt, runtime.Spec{ID: src, Layers: h.Layers})
	if err := markEnvd(ctx, rt, src, "MARK", "snap"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.NewLayerDir(t), "snapshot")
	if err := rt.Snapshot(ctx, src, runtime.SnapshotOptions{Dir: dir, FilesOnly: !h.MemoryCheckpoints}); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if got, err := rt.Inspect(ctx, src); err != nil || got.State != runtime.StateRunning {
		t.Errorf("source after Snapshot: %+v, %v; want running", got, err)
	}
	if err := Health(ctx, rt, src, 5*time.Second); err != nil {
		t.Errorf("source envd after Snapshot: %v", err)
	}
	if err := rt.Snapshot(ctx, src, runtime.SnapshotOptions{Dir: dir}); err == nil {
		t.Errorf("Snapshot into an existing directory succeeded")
	}

	want := ""
	if h.MemoryCheckpoints {
		want = "snap"
	}
	var addrs []string
	for i := 0; i < 2; i++ {
		id := NewID()
		info, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: id, Labels: map[string]string{"fork": "yes"}}, dir)
		if err != nil {
			t.Fatalf("CreateFromSnapshot: %v", err)
		}
		t.Cleanup(func() { _ = rt.Destroy(context.Background(), id) })
		if info.ID != id || info.State != runtime.StateRunning || info.Labels["fork"] != "yes" {
			t.Errorf("CreateFromSnapshot returned %+v", info)
		}
		waitHealthy(t, rt, id)
		if v, err := envdValue(ctx, rt, id, "MARK"); err != nil || v != want {
			t.Errorf("sandbox from snapshot: MARK=%q, %v; want %q", v, err, want)
		}
		// Independent: a change in one is not seen by the others.
		if err := markEnvd(ctx, rt, id, "MARK", id); err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, info.Addr)
	}
	if v, err := envdValue(ctx, rt, src, "MARK"); err != nil || v != "snap" {
		t.Errorf("source after changes in its forks: MARK=%q, %v; want %q", v, err, "snap")
	}
	if addrs[0] != "" && (addrs[0] == addrs[1] || addrs[0] == srcInfo.Addr) {
		t.Errorf("sandboxes from one snapshot share an address: %v (source %s)", addrs, srcInfo.Addr)
	}

	// A checkpointed sandbox can be snapshotted too (from what it saved).
	if err := rt.Checkpoint(ctx, src, runtime.CheckpointOptions{FilesOnly: !h.MemoryCheckpoints}); err != nil {
		t.Fatal(err)
	}
	dir2 := filepath.Join(h.NewLayerDir(t), "snapshot")
	if err := rt.Snapshot(ctx, src, runtime.SnapshotOptions{Dir: dir2}); err != nil {
		t.Fatalf("Snapshot of a checkpointed sandbox: %v", err)
	}
	if got, err := rt.Inspect(ctx, src); err != nil || got.State != runtime.StateCheckpointed {
		t.Errorf("source after Snapshot: %+v, %v; want still checkpointed", got, err)
	}
	fromSaved := NewID()
	if _, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: fromSaved}, dir2); err != nil {
		t.Fatalf("CreateFromSnapshot of a checkpointed sandbox's snapshot: %v", err)
	}
	t.Cleanup(func() { _ = rt.Destroy(context.Background(), fromSaved) })
	waitHealthy(t, rt, fromSaved)
	if v, err := envdValue(ctx, rt, fromSaved, "MARK"); err != nil || v != want {
		t.Errorf("sandbox from a checkpointed sandbox's snapshot: MARK=%q, %v; want %q", v, err, want)
	}

	// Bad input leaves nothing behind.
	id := NewID()
	if _, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: id}, h.NewLayerDir(t)); err == nil {
		t.Errorf("CreateFromSnapshot of an empty directory succeeded")
	}
	if _, ok := listed(t, rt, id); ok {
		t.Errorf("a failed CreateFromSnapshot left %s listed", id)
	}
	checkNoTraces(t, h, rt, id)
	if _, err := rt.CreateFromSnapshot(ctx, runtime.Spec{ID: src}, dir); !errors.Is(err, runtime.ErrExists) {
		t.Errorf("CreateFromSnapshot with a taken ID: %v, want ErrExists", err)
	}
}

func testCheckpointRestart(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Fatal("conformance: Harness.Reopen is required")
	}
	rt1 := h.New(t)
	ctx := ctxT(t)
	id := NewID()
	if _, err := rt1.Create(ctx, runtime.Spec{ID: id, Layers: h.Layers}); err != nil {
		rt1.Close()
		t.Fatalf("Create: %v", err)
	}
	waitHealthy(t, rt1, id)
	if err := markEnvd(ctx, rt1, id, "MARK", "restart"); err != nil {
		t.Fatal(err)
	}
	if err := rt1.Checkpoint(ctx, id, runtime.CheckpointOptions{FilesOnly: !h.MemoryCheckpoints}); err != nil {
		rt1.Close()
		t.Fatalf("Checkpoint: %v", err)
	}
	rt1.Close()
	rt2 := h.Reopen(t, rt1)
	defer rt2.Close()
	defer rt2.Destroy(context.Background(), id)
	if got, err := rt2.Inspect(ctx, id); err != nil || got.State != runtime.StateCheckpointed {
		t.Fatalf("Inspect after reopen: %+v, %v; want checkpointed", got, err)
	}
	if _, err := rt2.Restore(ctx, id, runtime.RestoreOptions{}); err != nil {
		t.Fatalf("Restore after reopen: %v", err)
	}
	waitHealthy(t, rt2, id)
	want := ""
	if h.MemoryCheckpoints {
		want = "restart"
	}
	if v, err := envdValue(ctx, rt2, id, "MARK"); err != nil || v != want {
		t.Errorf("after restore by a reopened runtime: MARK=%q, %v; want %q", v, err, want)
	}
	if err := rt2.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	checkNoTraces(t, h, rt2, id)
}
