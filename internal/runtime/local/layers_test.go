package local_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/runtime/conformance"
)

// TestManyLayers stacks more layers than fit in mount(2)'s one page of
// options: the overlay is mounted layer by layer, in order.
func TestManyLayers(t *testing.T) {
	const n = 80
	dir, err := os.MkdirTemp(testDir, "many-layers-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	stack := append([]string{}, layers...)
	total := 0
	for i := 0; i < n; i++ {
		// Long names, as content-addressed layer directories have.
		l := filepath.Join(dir, fmt.Sprintf("%02d-%s", i, strings.Repeat("0123456789abcdef", 4)))
		for _, d := range []string{l + "/etc", l + "/layers"} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(l, "etc", "override"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(l, "layers", fmt.Sprint(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := filepath.Walk(l, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, runtime.UIDBase, runtime.UIDBase)
		}); err != nil {
			t.Fatal(err)
		}
		stack = append(stack, l)
		total += len(l) + 1
	}
	if total <= os.Getpagesize() {
		t.Fatalf("the layer paths take %d bytes; the test needs more than a page", total)
	}
	d := newDriver(nil)
	root := newRoot(t)
	rt := d.open(t, root, nil)
	t.Cleanup(func() { rt.Close() })
	id := conformance.NewID()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := rt.Create(ctx, runtime.Spec{ID: id, Layers: stack}); err != nil {
		t.Fatalf("Create with %d layers: %v", len(stack), err)
	}
	t.Cleanup(func() {
		if err := rt.Destroy(context.Background(), id); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	if err := conformance.WaitHealthy(ctx, rt, id); err != nil {
		t.Fatal(err)
	}
	if out, code := execIn(t, root, id, "cat", "/etc/override"); code != 0 || out != fmt.Sprint(n-1) {
		t.Errorf("/etc/override = %q (exit %d), want %d: the highest layer wins", out, code, n-1)
	}
	if out, code := execIn(t, root, id, "sh", "-c", "ls /layers | wc -l"); code != 0 || strings.TrimSpace(out) != fmt.Sprint(n) {
		t.Errorf("/layers has %q entries (exit %d), want %d", out, code, n)
	}
	if out, code := execIn(t, root, id, "cat", "/etc/paddock-layer"); code != 0 || out != "top\n" {
		t.Errorf("/etc/paddock-layer of the harness's top layer = %q (exit %d)", out, code)
	}
}
