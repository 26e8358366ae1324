package filesystem

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	rpc "github.com/paddockhq/paddock/api/envd/filesystem"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

func TestStatFileEntryInfo(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "a.txt")
	if err := os.WriteFile(p, []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2025, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]interface {
		Stat(context.Context, *connect.Request[rpc.StatRequest]) (*connect.Response[rpc.StatResponse], error)
	}{"json": h.json, "binary": h.binary} {
		t.Run(name, func(t *testing.T) {
			res, err := c.Stat(context.Background(), connect.NewRequest(&rpc.StatRequest{Path: p}))
			if err != nil {
				t.Fatal(err)
			}
			e := res.Msg.GetEntry()
			if e.GetName() != "a.txt" || e.GetPath() != p || e.GetType() != rpc.FileType_FILE_TYPE_FILE {
				t.Errorf("name/path/type = %q %q %v", e.GetName(), e.GetPath(), e.GetType())
			}
			if e.GetSize() != 5 || e.GetMode() != 0o640 || e.GetPermissions() != "-rw-r-----" {
				t.Errorf("size/mode/permissions = %d %o %q", e.GetSize(), e.GetMode(), e.GetPermissions())
			}
			if e.GetOwner() != "root" || e.GetGroup() != "root" {
				t.Errorf("owner/group = %q %q, want root root", e.GetOwner(), e.GetGroup())
			}
			if !e.GetModifiedTime().AsTime().Equal(mtime) {
				t.Errorf("modifiedTime = %v, want %v", e.GetModifiedTime().AsTime(), mtime)
			}
			if e.SymlinkTarget != nil || e.Metadata != nil {
				t.Errorf("symlinkTarget %v / metadata %v should be absent", e.SymlinkTarget, e.Metadata)
			}
		})
	}
}

func TestStatDirectoryAndSpecialModes(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	d := filepath.Join(dir, "sub")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, os.ModeSticky|0o777); err != nil { // sticky bit: mode keeps only permission bits
		t.Fatal(err)
	}
	res, err := h.json.Stat(context.Background(), connect.NewRequest(&rpc.StatRequest{Path: d}))
	if err != nil {
		t.Fatal(err)
	}
	e := res.Msg.GetEntry()
	if e.GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || e.GetName() != "sub" {
		t.Errorf("type/name = %v %q", e.GetType(), e.GetName())
	}
	if e.GetMode() != 0o777 || e.GetPermissions() != "dtrwxrwxrwx" {
		t.Errorf("mode/permissions = %o %q, want 777 dtrwxrwxrwx", e.GetMode(), e.GetPermissions())
	}
}

func TestStatSymlinks(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "target.txt")
	if err := os.WriteFile(file, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "subdir")
	if err := os.Mkdir(sub, 0o750); err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, file, filepath.Join(dir, "to-file"))
	mustSymlink(t, "to-file", filepath.Join(dir, "chain")) // relative, two hops
	mustSymlink(t, sub, filepath.Join(dir, "to-dir"))
	mustSymlink(t, filepath.Join(dir, "missing"), filepath.Join(dir, "broken"))
	mustSymlink(t, filepath.Join(dir, "cyclic"), filepath.Join(dir, "cyclic"))

	cases := []struct {
		link     string
		typ      rpc.FileType
		mode     uint32
		target   string
		linkSize int64
	}{
		{"to-file", rpc.FileType_FILE_TYPE_FILE, 0o600, filepath.Join(real, "target.txt"), int64(len(file))},
		{"chain", rpc.FileType_FILE_TYPE_FILE, 0o600, filepath.Join(real, "target.txt"), int64(len("to-file"))},
		{"to-dir", rpc.FileType_FILE_TYPE_DIRECTORY, 0o750, filepath.Join(real, "subdir"), int64(len(sub))},
		// Broken and cyclic links: type unspecified, mode 0, target = the link itself.
		{"broken", rpc.FileType_FILE_TYPE_UNSPECIFIED, 0, filepath.Join(dir, "broken"), int64(len(filepath.Join(dir, "missing")))},
		{"cyclic", rpc.FileType_FILE_TYPE_UNSPECIFIED, 0, filepath.Join(dir, "cyclic"), int64(len(filepath.Join(dir, "cyclic")))},
	}
	for _, c := range cases {
		t.Run(c.link, func(t *testing.T) {
			p := filepath.Join(dir, c.link)
			res, err := h.json.Stat(context.Background(), connect.NewRequest(&rpc.StatRequest{Path: p}))
			if err != nil {
				t.Fatal(err)
			}
			e := res.Msg.GetEntry()
			if e.GetType() != c.typ || e.GetMode() != c.mode {
				t.Errorf("type/mode = %v %o, want %v %o", e.GetType(), e.GetMode(), c.typ, c.mode)
			}
			if e.GetPermissions() != "Lrwxrwxrwx" {
				t.Errorf("permissions = %q, want Lrwxrwxrwx", e.GetPermissions())
			}
			if e.SymlinkTarget == nil || e.GetSymlinkTarget() != c.target {
				t.Errorf("symlinkTarget = %v, want %q", e.SymlinkTarget, c.target)
			}
			if e.GetSize() != c.linkSize || e.GetPath() != p || e.GetName() != c.link {
				t.Errorf("size/path/name = %d %q %q", e.GetSize(), e.GetPath(), e.GetName())
			}
		})
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestStatOwnerNamesAndNumericFallback(t *testing.T) {
	h := newHarness(t)
	nb := nobody(t)
	dir := t.TempDir()
	named := filepath.Join(dir, "named")
	unnamed := filepath.Join(dir, "unnamed")
	for _, p := range []string{named, unnamed} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(named, int(nb.uid), int(nb.gid)); err != nil {
		t.Fatal(err)
	}
	// Find ids with no account or group.
	uid, gid := 54321, 54322
	for {
		_, errU := user.LookupId(strconv.Itoa(uid))
		_, errG := user.LookupGroupId(strconv.Itoa(gid))
		if errU != nil && errG != nil {
			break
		}
		uid, gid = uid+7, gid+7
	}
	if err := os.Chown(unnamed, uid, gid); err != nil {
		t.Fatal(err)
	}
	res, err := h.json.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: dir}))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]string{}
	for _, e := range res.Msg.GetEntries() {
		got[e.GetName()] = [2]string{e.GetOwner(), e.GetGroup()}
	}
	if want := [2]string{"nobody", nb.group}; got["named"] != want {
		t.Errorf("named: owner/group = %v, want %v", got["named"], want)
	}
	if want := [2]string{strconv.Itoa(uid), strconv.Itoa(gid)}; got["unnamed"] != want {
		t.Errorf("unnamed: owner/group = %v, want numeric %v", got["unnamed"], want)
	}
}

func TestStatMetadataFromXattrs(t *testing.T) {
	h := newHarness(t)
	p := filepath.Join(t.TempDir(), "m.txt")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"user.e2b.author": "ann", "user.e2b.empty": "", "user.other": "not ours"} {
		if err := unix.Setxattr(p, k, []byte(v), 0); err != nil {
			t.Fatalf("setxattr %s: %v (the test directory needs xattr support)", k, err)
		}
	}
	res, err := h.json.Stat(context.Background(), connect.NewRequest(&rpc.StatRequest{Path: p}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"author": "ann", "empty": ""}
	if md := res.Msg.GetEntry().GetMetadata(); len(md) != len(want) || md["author"] != "ann" || md["empty"] != "" {
		t.Errorf("metadata = %v, want %v", md, want)
	}
}

func TestStatErrorsAndUsers(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()

	_, err := h.json.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: filepath.Join(dir, "missing")}))
	ce := wantCode(t, err, connect.CodeNotFound)
	if !strings.Contains(ce.Message(), "does not exist") {
		t.Errorf("message %q", ce.Message())
	}
	_, err = h.binary.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: filepath.Join(dir, "missing")}))
	wantCode(t, err, connect.CodeNotFound)

	_, err = h.json.Stat(ctx, asUser(connect.NewRequest(&rpc.StatRequest{Path: dir}), "no-such-user-paddock"))
	ce = wantCode(t, err, connect.CodeUnauthenticated)
	if ce.Message() != "invalid username: 'no-such-user-paddock'" {
		t.Errorf("message %q", ce.Message())
	}

	req := connect.NewRequest(&rpc.StatRequest{Path: dir})
	req.Header().Set("Authorization", "Bearer something")
	_, err = h.json.Stat(ctx, req)
	wantCode(t, err, connect.CodeUnauthenticated)

	_, err = h.json.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: dir + "/a\x00b"}))
	wantCode(t, err, connect.CodeInvalidArgument)

	// A file used as a directory.
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = h.json.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: f + "/x"}))
	wantCode(t, err, connect.CodeInvalidArgument)

	// A named user works.
	res, err := h.json.Stat(ctx, asUser(connect.NewRequest(&rpc.StatRequest{Path: dir}), "nobody"))
	if err != nil || res.Msg.GetEntry().GetPath() != dir {
		t.Fatalf("stat as nobody: %v %v", res, err)
	}
}

func TestPathResolution(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	root, err := user.Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	// Relative paths resolve against the acting user's home (root's here).
	rel := fmt.Sprintf("paddock-fs-test-%d", time.Now().UnixNano())
	abs := filepath.Join(root.HomeDir, rel)
	if err := os.MkdirAll(abs, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(abs) })
	if err := os.WriteFile(filepath.Join(abs, "f"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{rel + "/f", "~/" + rel + "/f", rel + "/../" + rel + "/f"} {
		res, err := h.json.Stat(ctx, asUser(connect.NewRequest(&rpc.StatRequest{Path: p}), "root"))
		if err != nil {
			t.Fatalf("stat %q: %v", p, err)
		}
		if got := res.Msg.GetEntry().GetPath(); got != filepath.Join(abs, "f") {
			t.Errorf("stat %q: path %q, want %q", p, got, filepath.Join(abs, "f"))
		}
	}
	res, err := h.json.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: "~"}))
	if err != nil || res.Msg.GetEntry().GetPath() != filepath.Clean(root.HomeDir) {
		t.Fatalf("stat ~: %v %v", res, err)
	}
	// An empty path is the default working directory once /init set one.
	wd := t.TempDir()
	h.state.Apply(identity.Init{DefaultWorkdir: wd})
	res, err = h.json.Stat(ctx, connect.NewRequest(&rpc.StatRequest{}))
	if err != nil || res.Msg.GetEntry().GetPath() != wd {
		t.Fatalf("stat empty path: %v %v, want %s", res, err, wd)
	}
}

func TestMakeDir(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	nb := nobody(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "a", "b", "c")
	res, err := h.json.MakeDir(ctx, asUser(connect.NewRequest(&rpc.MakeDirRequest{Path: target}), "nobody"))
	if err != nil {
		t.Fatal(err)
	}
	e := res.Msg.GetEntry()
	if e.GetPath() != target || e.GetName() != "c" || e.GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || e.GetOwner() != "nobody" {
		t.Errorf("entry = %v", e)
	}
	for _, d := range []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), target} {
		if uid, gid := ownerOf(t, d); uid != nb.uid || gid != nb.gid {
			t.Errorf("%s owned by %d:%d, want nobody %d:%d", d, uid, gid, nb.uid, nb.gid)
		}
	}
	if uid, _ := ownerOf(t, dir); uid != 0 {
		t.Errorf("pre-existing parent %s was chowned to %d", dir, uid)
	}

	_, err = h.json.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: target}))
	wantCode(t, err, connect.CodeAlreadyExists)

	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = h.binary.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: f}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = h.json.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: f + "/sub/dir"}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = h.json.MakeDir(ctx, asUser(connect.NewRequest(&rpc.MakeDirRequest{Path: dir + "/x"}), "no-such-user-paddock"))
	wantCode(t, err, connect.CodeUnauthenticated)
	if _, err := os.Stat(dir + "/x"); !os.IsNotExist(err) {
		t.Errorf("an unauthenticated MakeDir left %s behind", dir+"/x")
	}
}

func TestMove(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	nb := nobody(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "old.txt")
	if err := os.WriteFile(src, []byte("moved"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "new", "deeper", "new.txt")
	res, err := h.json.Move(ctx, asUser(connect.NewRequest(&rpc.MoveRequest{Source: src, Destination: dst}), "nobody"))
	if err != nil {
		t.Fatal(err)
	}
	e := res.Msg.GetEntry()
	if e.GetPath() != dst || e.GetName() != "new.txt" || e.GetType() != rpc.FileType_FILE_TYPE_FILE || e.GetSize() != 5 {
		t.Errorf("entry = %v", e)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "moved" {
		t.Errorf("destination content %q %v", b, err)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("source still exists: %v", err)
	}
	for _, d := range []string{filepath.Join(dir, "new"), filepath.Join(dir, "new", "deeper")} {
		if uid, gid := ownerOf(t, d); uid != nb.uid || gid != nb.gid {
			t.Errorf("created parent %s owned by %d:%d, want nobody", d, uid, gid)
		}
	}
	// The moved file keeps its owner (a rename is not a creation).
	if uid, _ := ownerOf(t, dst); uid != 0 {
		t.Errorf("moved file owned by %d, want its original owner 0", uid)
	}

	// Missing source: NotFound and no destination directories left behind.
	_, err = h.json.Move(ctx, connect.NewRequest(&rpc.MoveRequest{Source: filepath.Join(dir, "nope"), Destination: filepath.Join(dir, "x", "y", "z")}))
	wantCode(t, err, connect.CodeNotFound)
	if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("a failed move left %s behind", filepath.Join(dir, "x"))
	}

	// A directory into itself.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = h.binary.Move(ctx, connect.NewRequest(&rpc.MoveRequest{Source: filepath.Join(dir, "d"), Destination: filepath.Join(dir, "d", "inner")}))
	wantCode(t, err, connect.CodeInvalidArgument)

	_, err = h.json.Move(ctx, connect.NewRequest(&rpc.MoveRequest{Source: dst}))
	wantCode(t, err, connect.CodeInvalidArgument)
}

func TestListDir(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f1.txt"), "1")
	mustWrite(t, filepath.Join(dir, "sub", "f2.txt"), "22")
	mustWrite(t, filepath.Join(dir, "sub", "deeper", "f3.txt"), "333")
	mustWrite(t, filepath.Join(dir, "elsewhere", "hidden.txt"), "h")
	mustSymlink(t, filepath.Join(dir, "elsewhere"), filepath.Join(dir, "sub", "link"))

	list := func(c interface {
		ListDir(context.Context, *connect.Request[rpc.ListDirRequest]) (*connect.Response[rpc.ListDirResponse], error)
	}, p string, depth uint32) []string {
		t.Helper()
		res, err := c.ListDir(ctx, connect.NewRequest(&rpc.ListDirRequest{Path: p, Depth: depth}))
		if err != nil {
			t.Fatalf("list %s depth %d: %v", p, depth, err)
		}
		var out []string
		for _, e := range res.Msg.GetEntries() {
			if filepath.Base(e.GetPath()) != e.GetName() || !filepath.IsAbs(e.GetPath()) {
				t.Errorf("entry path %q / name %q", e.GetPath(), e.GetName())
			}
			rel, _ := filepath.Rel(p, e.GetPath())
			out = append(out, rel+":"+strings.TrimPrefix(e.GetType().String(), "FILE_TYPE_"))
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s []string) []string { slices.Sort(s); return s }
	want1 := sorted([]string{"elsewhere:DIRECTORY", "f1.txt:FILE", "sub:DIRECTORY"})
	if got := list(h.json, dir, 0); !slices.Equal(got, want1) {
		t.Errorf("depth 0 = %v, want %v", got, want1)
	}
	if got := list(h.binary, dir, 1); !slices.Equal(got, want1) {
		t.Errorf("depth 1 = %v, want %v", got, want1)
	}
	want2 := sorted([]string{"elsewhere:DIRECTORY", "elsewhere/hidden.txt:FILE", "f1.txt:FILE", "sub:DIRECTORY",
		"sub/deeper:DIRECTORY", "sub/f2.txt:FILE", "sub/link:DIRECTORY"})
	if got := list(h.json, dir, 2); !slices.Equal(got, want2) {
		t.Errorf("depth 2 = %v, want %v", got, want2)
	}
	// Depth 10: sub/link (a symlink to a directory) is listed, not descended.
	want10 := sorted([]string{"elsewhere:DIRECTORY", "elsewhere/hidden.txt:FILE", "f1.txt:FILE", "sub:DIRECTORY",
		"sub/deeper:DIRECTORY", "sub/deeper/f3.txt:FILE", "sub/f2.txt:FILE", "sub/link:DIRECTORY"})
	if got := list(h.json, dir, 10); !slices.Equal(got, want10) {
		t.Errorf("depth 10 = %v, want %v", got, want10)
	}
	// Listing through a symlink lists the target, reported under the link.
	if got := list(h.json, filepath.Join(dir, "sub", "link"), 1); !slices.Equal(got, []string{"hidden.txt:FILE"}) {
		t.Errorf("list via symlink = %v", got)
	}

	// Entries carry full info.
	res, err := h.json.ListDir(ctx, connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "sub")}))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Msg.GetEntries() {
		switch e.GetName() {
		case "f2.txt":
			if e.GetSize() != 2 || e.GetOwner() != "root" || e.GetPermissions() != "-rw-r--r--" || e.GetModifiedTime() == nil {
				t.Errorf("f2.txt entry = %v", e)
			}
		case "link":
			if e.GetPermissions() != "Lrwxrwxrwx" || e.GetSymlinkTarget() == "" {
				t.Errorf("link entry = %v", e)
			}
		}
	}

	_, err = h.json.ListDir(ctx, connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "missing")}))
	wantCode(t, err, connect.CodeNotFound)
	_, err = h.json.ListDir(ctx, connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "f1.txt")}))
	wantCode(t, err, connect.CodeInvalidArgument)
	mustSymlink(t, filepath.Join(dir, "loop"), filepath.Join(dir, "loop"))
	_, err = h.json.ListDir(ctx, connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "loop")}))
	wantCode(t, err, connect.CodeFailedPrecondition)
}

func mustWrite(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRemove(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "file"), "f")
	mustWrite(t, filepath.Join(dir, "tree", "a", "b"), "b")
	for _, p := range []string{filepath.Join(dir, "file"), filepath.Join(dir, "tree")} {
		if _, err := h.json.Remove(ctx, connect.NewRequest(&rpc.RemoveRequest{Path: p})); err != nil {
			t.Fatalf("remove %s: %v", p, err)
		}
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists", p)
		}
	}
	// A missing path is not an error (E2B uses os.RemoveAll).
	if _, err := h.binary.Remove(ctx, connect.NewRequest(&rpc.RemoveRequest{Path: filepath.Join(dir, "never-existed")})); err != nil {
		t.Errorf("remove of a missing path: %v", err)
	}
	_, err := h.json.Remove(ctx, connect.NewRequest(&rpc.RemoveRequest{}))
	wantCode(t, err, connect.CodeInvalidArgument)
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the directory itself must survive: %v", err)
	}
}

// TestRawConnectWire checks the bytes on the wire as the JS SDK sees them.
func TestRawConnectWire(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "a.txt"), "hello")

	post := func(method, body string, hdr map[string]string) (int, http.Header, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, h.srv.URL+"/filesystem.Filesystem/"+method, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connect-Protocol-Version", "1")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s: body %q is not JSON: %v", method, raw, err)
		}
		return resp.StatusCode, resp.Header, out
	}

	status, hdr, out := post("Stat", fmt.Sprintf(`{"path":%q}`, filepath.Join(dir, "a.txt")), nil)
	if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d content-type %q", status, hdr.Get("Content-Type"))
	}
	entry := out["entry"].(map[string]any)
	if entry["size"] != "5" || entry["type"] != "FILE_TYPE_FILE" || entry["mode"] != float64(0o644) || entry["permissions"] != "-rw-r--r--" {
		t.Errorf("entry JSON = %v", entry)
	}
	if _, err := time.Parse(time.RFC3339Nano, entry["modifiedTime"].(string)); err != nil {
		t.Errorf("modifiedTime %v: %v", entry["modifiedTime"], err)
	}

	status, _, out = post("Stat", fmt.Sprintf(`{"path":%q}`, filepath.Join(dir, "nope")), nil)
	if status != 404 || out["code"] != "not_found" || !strings.Contains(out["message"].(string), "does not exist") {
		t.Errorf("missing: %d %v", status, out)
	}
	status, _, out = post("MakeDir", fmt.Sprintf(`{"path":%q}`, dir), nil)
	if status != 409 || out["code"] != "already_exists" {
		t.Errorf("existing dir: %d %v", status, out)
	}
	status, _, out = post("Stat", `{"path":"/"}`, map[string]string{"Authorization": "Basic bm8tc3VjaC11c2VyOg=="}) // "no-such-user:"
	if status != 401 || out["code"] != "unauthenticated" || out["message"] != "invalid username: 'no-such-user'" {
		t.Errorf("unknown user: %d %v", status, out)
	}
	// snake_case input is accepted too.
	status, _, out = post("ListDir", fmt.Sprintf(`{"path":%q,"depth":1}`, dir), nil)
	if status != 200 || len(out["entries"].([]any)) != 1 {
		t.Errorf("list: %d %v", status, out)
	}
}
