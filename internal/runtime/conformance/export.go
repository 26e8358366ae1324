package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/runtime"
)

// envdCall sends one request to envd in sandbox id through rt.Dial and
// returns the status and body.
func envdCall(ctx context.Context, rt runtime.Runtime, id, method, path, contentType string, body []byte) (int, []byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rt.Dial(ctx, id, runtime.EnvdPort)
		},
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://envd"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}

// envdFiles is a small client of envd's file API for the export test.
type envdFiles struct {
	t  *testing.T
	rt runtime.Runtime
	id string
}

func (f envdFiles) write(path, user, content string) {
	f.t.Helper()
	q := url.Values{"path": {path}, "username": {user}}
	st, body, err := envdCall(ctxT(f.t), f.rt, f.id, http.MethodPost, "/files?"+q.Encode(), "application/octet-stream", []byte(content))
	if err != nil || st != http.StatusOK {
		f.t.Fatalf("write %s as %s in %s: status %d, %v: %s", path, user, f.id, st, err, body)
	}
}

// read returns the file's content, or ok false when envd says 404.
func (f envdFiles) read(path string) (string, bool) {
	f.t.Helper()
	q := url.Values{"path": {path}, "username": {"root"}}
	st, body, err := envdCall(ctxT(f.t), f.rt, f.id, http.MethodGet, "/files?"+q.Encode(), "", nil)
	if err != nil {
		f.t.Fatalf("read %s in %s: %v", path, f.id, err)
	}
	switch st {
	case http.StatusOK:
		return string(body), true
	case http.StatusNotFound:
		return "", false
	}
	f.t.Fatalf("read %s in %s: status %d: %s", path, f.id, st, body)
	return "", false
}

// rpc calls a filesystem.Filesystem method with the Connect JSON codec.
func (f envdFiles) rpc(method string, in, out any) {
	f.t.Helper()
	raw, _ := json.Marshal(in)
	st, body, err := envdCall(ctxT(f.t), f.rt, f.id, http.MethodPost, "/filesystem.Filesystem/"+method, "application/json", raw)
	if err != nil || st != http.StatusOK {
		f.t.Fatalf("%s %s in %s: status %d, %v: %s", method, raw, f.id, st, err, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			f.t.Fatalf("%s: decode %s: %v", method, body, err)
		}
	}
}

// testExportChanges changes files in a sandbox, exports the changes and
// checks a second sandbox with the export stacked on the same layers sees
// exactly the first one's filesystem: new and changed files with their
// owners, deleted files gone (whiteouts), a deleted and recreated
// directory without its old content (opaque), nothing of the runtime's own.
func testExportChanges(t *testing.T, h Harness) {
	rt := open(t, h)
	ctx := ctxT(t)
	a := NewID()
	create(t, rt, runtime.Spec{ID: a, Layers: h.Layers})
	fa := envdFiles{t, rt, a}
	if _, ok := fa.read("/home/user/.profile"); !ok {
		t.Fatal("the harness's layers must have /home/user/.profile")
	}
	if _, ok := fa.read("/etc/motd"); !ok {
		t.Fatal("the harness's layers must have /etc/motd")
	}
	fa.write("/etc/added.txt", "root", "added by root\n")
	fa.write("/tmp/owned.txt", "user", "added by user\n")
	fa.rpc("Remove", map[string]string{"path": "/etc/motd"}, nil)
	fa.rpc("Remove", map[string]string{"path": "/home/user"}, nil)
	fa.write("/home/user/fresh.txt", "user", "fresh\n")

	dst := h.NewLayerDir(t)
	if err := rt.ExportChanges(ctx, a, dst); err != nil {
		t.Fatalf("ExportChanges of a running sandbox: %v", err)
	}
	if info, err := rt.Inspect(ctx, a); err != nil || info.State != runtime.StateRunning {
		t.Errorf("after ExportChanges the sandbox is %+v, %v; want running", info, err)
	}
	if err := Health(ctx, rt, a, 5*time.Second); err != nil {
		t.Errorf("envd after ExportChanges: %v", err)
	}

	// The layer itself, as the format says.
	if b, err := os.ReadFile(filepath.Join(dst, "etc/added.txt")); err != nil || string(b) != "added by root\n" {
		t.Errorf("export etc/added.txt: %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "etc/motd"), &st); err != nil {
		t.Errorf("export has no whiteout for the deleted etc/motd: %v", err)
	} else if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("export etc/motd: mode %o rdev %d, want a 0/0 character device", st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dst, "home/user"), runtime.OpaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("export home/user (deleted and recreated): %s = %q, %v; want \"y\"", runtime.OpaqueXattr, buf[:max(n, 0)], err)
	}
	if err := unix.Lstat(filepath.Join(dst, "tmp/owned.txt"), &st); err != nil {
		t.Errorf("export tmp/owned.txt: %v", err)
	} else if st.Uid != runtime.UIDBase+1000 {
		t.Errorf("export tmp/owned.txt owned by %d, want %d (user 1000 shifted)", st.Uid, runtime.UIDBase+1000)
	}
	var found []string
	_ = filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(dst, p)
			found = append(found, rel)
		}
		return nil
	})
	for _, rel := range found {
		top := strings.Split(rel, "/")[0]
		if top == ".paddock" || rel == "etc/hostname" || rel == "etc/hosts" || rel == "etc/resolv.conf" ||
			(slices.Contains([]string{"proc", "sys", "dev"}, top) && rel != top) {
			t.Errorf("export contains the runtime's own %s (all: %v)", rel, found)
		}
	}

	// A sandbox on the layers plus the export sees the changed filesystem.
	b := NewID()
	create(t, rt, runtime.Spec{ID: b, Layers: append(slices.Clone(h.Layers), dst)})
	fb := envdFiles{t, rt, b}
	if got, ok := fb.read("/etc/added.txt"); !ok || got != "added by root\n" {
		t.Errorf("new sandbox /etc/added.txt = %q, %v", got, ok)
	}
	if got, ok := fb.read("/home/user/fresh.txt"); !ok || got != "fresh\n" {
		t.Errorf("new sandbox /home/user/fresh.txt = %q, %v", got, ok)
	}
	if _, ok := fb.read("/etc/motd"); ok {
		t.Errorf("new sandbox still has the deleted /etc/motd")
	}
	if _, ok := fb.read("/home/user/.profile"); ok {
		t.Errorf("new sandbox still has /home/user/.profile from below the recreated directory")
	}
	if _, ok := fb.read("/etc/paddock-layer"); !ok {
		t.Errorf("new sandbox lost /etc/paddock-layer of the harness's top layer")
	}
	var stat struct {
		Entry struct {
			Owner string `json:"owner"`
		} `json:"entry"`
	}
	fb.rpc("Stat", map[string]string{"path": "/tmp/owned.txt"}, &stat)
	if stat.Entry.Owner != "user" {
		t.Errorf("new sandbox /tmp/owned.txt owner %q, want user", stat.Entry.Owner)
	}

	// A paused sandbox stays paused; the export is the same.
	if err := rt.Pause(ctx, a); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	dst2 := h.NewLayerDir(t)
	if err := rt.ExportChanges(ctx, a, dst2); err != nil {
		t.Fatalf("ExportChanges of a paused sandbox: %v", err)
	}
	if info, err := rt.Inspect(ctx, a); err != nil || info.State != runtime.StatePaused {
		t.Errorf("after ExportChanges of a paused sandbox it is %+v, %v; want paused", info, err)
	}
	var found2 []string
	_ = filepath.WalkDir(dst2, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(dst2, p)
			found2 = append(found2, rel)
		}
		return nil
	})
	if !slices.Equal(found, found2) {
		t.Errorf("two exports of unchanged content differ: %v and %v", found, found2)
	}

	// Errors.
	if err := rt.ExportChanges(ctx, NewID(), h.NewLayerDir(t)); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("ExportChanges of an unknown sandbox: %v, want ErrNotFound", err)
	}
	if err := rt.ExportChanges(ctx, a, dst); err == nil {
		t.Errorf("ExportChanges into a non-empty directory succeeded")
	}
	if err := rt.ExportChanges(ctx, a, filepath.Join(dst, "missing")); err == nil {
		t.Errorf("ExportChanges into a missing directory succeeded")
	}
}
