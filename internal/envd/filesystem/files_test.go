package filesystem

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	rpc "github.com/paddockhq/paddock/api/envd/filesystem"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

// rawClient does not add or strip Accept-Encoding on its own.
var rawClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (h *harness) do(t *testing.T, method string, q url.Values, body io.Reader, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+"/files?"+q.Encode(), body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// wantError asserts envd's REST error shape.
func wantError(t *testing.T, r response, status int, msgPart string) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("error Content-Type %q", ct)
	}
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if e.Code != status || !strings.Contains(e.Message, msgPart) {
		t.Fatalf("error = %+v, want code %d and a message containing %q", e, status, msgPart)
	}
	return e.Message
}

func q(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func TestDownload(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "a file.txt")
	mustWrite(t, p, "hello world")
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}

	r := h.do(t, http.MethodGet, q("path", p), nil, nil)
	if r.status != 200 || string(r.body) != "hello world" {
		t.Fatalf("GET: %d %q", r.status, r.body)
	}
	if r.header.Get("Content-Length") != "11" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("headers %v", r.header)
	}
	disp, params, err := mime.ParseMediaType(r.header.Get("Content-Disposition"))
	if err != nil || disp != "inline" || params["filename"] != "a file.txt" {
		t.Errorf("Content-Disposition %q", r.header.Get("Content-Disposition"))
	}
	if r.header.Get("Last-Modified") != mtime.Format(http.TimeFormat) {
		t.Errorf("Last-Modified %q", r.header.Get("Last-Modified"))
	}

	r = h.do(t, http.MethodGet, q("path", p), nil, map[string]string{"Range": "bytes=6-"})
	if r.status != http.StatusPartialContent || string(r.body) != "world" {
		t.Errorf("Range: %d %q", r.status, r.body)
	}
	r = h.do(t, http.MethodGet, q("path", p), nil, map[string]string{"If-Modified-Since": mtime.Add(time.Hour).Format(http.TimeFormat)})
	if r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Errorf("If-Modified-Since: %d %q", r.status, r.body)
	}
	r = h.do(t, http.MethodHead, q("path", p), nil, nil)
	if r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != "11" {
		t.Errorf("HEAD: %d %q %v", r.status, r.body, r.header)
	}

	// An empty file is sent with Content-Length: 0, even when gzip is acceptable.
	empty := filepath.Join(dir, "empty")
	mustWrite(t, empty, "")
	r = h.do(t, http.MethodGet, q("path", empty), nil, map[string]string{"Accept-Encoding": "gzip"})
	if r.status != 200 || r.header.Get("Content-Length") != "0" || r.header.Get("Content-Encoding") != "" || len(r.body) != 0 {
		t.Errorf("empty file: %d %v %q", r.status, r.header, r.body)
	}

	// Pseudo files (size 0, real content) are streamed.
	r = h.do(t, http.MethodGet, q("path", "/proc/version"), nil, nil)
	if r.status != 200 || !strings.HasPrefix(string(r.body), "Linux version") {
		t.Errorf("/proc/version: %d %q", r.status, r.body)
	}
}

func TestDownloadContentEncoding(t *testing.T) {
	h := newHarness(t)
	p := filepath.Join(t.TempDir(), "data.json")
	content := strings.Repeat(`{"k":"compressible"}`, 500)
	mustWrite(t, p, content)

	gunzip := func(b []byte) string {
		t.Helper()
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("not gzip: %v", err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	for _, ae := range []string{"gzip", "x-gzip", "gzip, identity", "identity;q=0, gzip", "br;q=1, gzip;q=0.8, identity;q=0.5", "gzip, deflate;q=0"} {
		r := h.do(t, http.MethodGet, q("path", p), nil, map[string]string{"Accept-Encoding": ae})
		if r.status != 200 || r.header.Get("Content-Encoding") != "gzip" || r.header.Get("Vary") != "Accept-Encoding" {
			t.Fatalf("Accept-Encoding %q: %d %v", ae, r.status, r.header)
		}
		if r.header.Get("Content-Type") != "application/json" {
			t.Errorf("gzip Content-Type %q", r.header.Get("Content-Type"))
		}
		if gunzip(r.body) != content {
			t.Errorf("Accept-Encoding %q: content differs after gunzip", ae)
		}
	}
	// A generic list (fetch's automatic "gzip, deflate, br") gets identity.
	for _, ae := range []string{"", "br", "*", "gzip;q=0", "gzip;q=0.5, identity", "gzip, deflate, br", "gzip, deflate"} {
		r := h.do(t, http.MethodGet, q("path", p), nil, map[string]string{"Accept-Encoding": ae})
		if r.status != 200 || r.header.Get("Content-Encoding") != "" || string(r.body) != content {
			t.Errorf("Accept-Encoding %q: %d %v, want identity", ae, r.status, r.header)
		}
	}
	// Ranges are served as identity even when gzip is acceptable.
	r := h.do(t, http.MethodGet, q("path", p), nil, map[string]string{"Accept-Encoding": "gzip", "Range": "bytes=0-3"})
	if r.status != http.StatusPartialContent || string(r.body) != `{"k"` {
		t.Errorf("Range with gzip: %d %q", r.status, r.body)
	}
	for _, ae := range []string{"identity;q=0", "*;q=0", "br, identity;q=0"} {
		wantError(t, h.do(t, http.MethodGet, q("path", p), nil, map[string]string{"Accept-Encoding": ae}),
			http.StatusNotAcceptable, "no acceptable content encoding")
	}
}

func TestDownloadErrors(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.txt")
	r := h.do(t, http.MethodGet, q("path", missing), nil, nil)
	if r.status != 404 || string(r.body) != fmt.Sprintf(`{"code":404,"message":"path '%s' does not exist"}`+"\n", missing) {
		t.Errorf("missing: %d %q", r.status, r.body)
	}
	wantError(t, r, 404, "does not exist")
	wantError(t, h.do(t, http.MethodGet, q("path", dir), nil, nil), 400, fmt.Sprintf("path '%s' is a directory", dir))
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.do(t, http.MethodGet, q("path", fifo), nil, nil), 400, "not a regular file")
	wantError(t, h.do(t, http.MethodGet, q("path", dir, "username", "no-such-user-paddock"), nil, nil), 401, "invalid username: 'no-such-user-paddock'")
	wantError(t, h.do(t, http.MethodGet, q("path", dir+"/a\x00b"), nil, nil), 400, "NUL")
	r = h.do(t, http.MethodPut, q("path", missing), nil, nil)
	wantError(t, r, http.StatusMethodNotAllowed, "not allowed")
	if r.header.Get("Allow") != "GET, HEAD, POST" {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}
}

func TestDownloadResolvesAgainstTheUser(t *testing.T) {
	h := newHarness(t)
	root, err := user.Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	rel := fmt.Sprintf("paddock-files-test-%d/f.txt", time.Now().UnixNano())
	abs := filepath.Join(root.HomeDir, rel)
	mustWrite(t, abs, "as root")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(abs)) })
	r := h.do(t, http.MethodGet, q("path", rel, "username", "root"), nil, nil)
	if r.status != 200 || string(r.body) != "as root" {
		t.Errorf("as root: %d %q", r.status, r.body)
	}
	r = h.do(t, http.MethodGet, q("path", "~/"+rel), nil, nil) // default user: root
	if r.status != 200 {
		t.Errorf("~ as default user: %d %q", r.status, r.body)
	}
	nb, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, h.do(t, http.MethodGet, q("path", rel, "username", "nobody"), nil, nil), 404,
		fmt.Sprintf("path '%s' does not exist", filepath.Join(nb.HomeDir, rel)))
}

type part struct {
	field, filename, content string
}

// multipartBody builds a form the way the E2B SDK does: the filename
// parameter carries the full path.
func multipartBody(t *testing.T, parts ...part) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p.field, p.filename))
		hdr.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(hdr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, p.content)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

func decodeUpload(t *testing.T, r response) []uploadEntry {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if r.header.Get("Content-Type") != "application/json" {
		t.Errorf("upload Content-Type %q", r.header.Get("Content-Type"))
	}
	var out []uploadEntry
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("upload response %q: %v", r.body, err)
	}
	return out
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func absent(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after a failed upload (%v)", p, err)
		}
	}
}

func TestUploadMultipart(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()

	// One part with ?path: the query path wins over the filename.
	target := filepath.Join(dir, "single", "target.txt")
	body, ct := multipartBody(t, part{"file", "/somewhere/else.txt", "one"})
	out := decodeUpload(t, h.do(t, http.MethodPost, q("path", target), body, map[string]string{"Content-Type": ct}))
	if len(out) != 1 || out[0].Path != target || out[0].Name != "target.txt" || out[0].Type != "file" || out[0].Metadata != nil {
		t.Errorf("response %+v", out)
	}
	if mustRead(t, target) != "one" {
		t.Errorf("content %q", mustRead(t, target))
	}
	absent(t, "/somewhere/else.txt")

	// Several parts without ?path: each raw filename is a full path
	// (directories not stripped); other fields are ignored.
	a, b := filepath.Join(dir, "multi", "a.txt"), filepath.Join(dir, "multi", "nested", "deeper", "b.txt")
	body, ct = multipartBody(t, part{"file", a, "A"}, part{"note", "ignored", "x"}, part{"file", b, "BB"})
	out = decodeUpload(t, h.do(t, http.MethodPost, nil, body, map[string]string{"Content-Type": ct}))
	if len(out) != 2 || out[0].Path != a || out[1].Path != b || out[1].Name != "b.txt" || out[1].Type != "file" {
		t.Errorf("response %+v", out)
	}
	if mustRead(t, a) != "A" || mustRead(t, b) != "BB" {
		t.Error("contents differ")
	}

	// Overwrite truncates.
	body, ct = multipartBody(t, part{"file", target, "x"})
	decodeUpload(t, h.do(t, http.MethodPost, q("path", target), body, map[string]string{"Content-Type": ct}))
	if mustRead(t, target) != "x" {
		t.Errorf("overwrite: %q", mustRead(t, target))
	}
}

func TestUploadMultipartBadInput(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "dup.txt")

	body, ct := multipartBody(t, part{"file", p, "1"}, part{"file", p, "2"})
	msg := wantError(t, h.do(t, http.MethodPost, nil, body, map[string]string{"Content-Type": ct}), 400, "same path")
	if !strings.Contains(msg, "already written: "+p) {
		t.Errorf("message %q should say what was written", msg)
	}
	// With ?path every part goes to the same file.
	body, ct = multipartBody(t, part{"file", "a", "1"}, part{"file", "b", "2"})
	wantError(t, h.do(t, http.MethodPost, q("path", filepath.Join(dir, "q.txt")), body, map[string]string{"Content-Type": ct}), 400, "same path")

	wantError(t, h.do(t, http.MethodPost, nil, strings.NewReader("this is not multipart"),
		map[string]string{"Content-Type": "multipart/form-data; boundary=xyz"}), 400, "malformed multipart body")
	wantError(t, h.do(t, http.MethodPost, nil, strings.NewReader("--xyz--\r\n"),
		map[string]string{"Content-Type": "multipart/form-data"}), 400, "no boundary")
	body, ct = multipartBody(t, part{"other", "x", "1"})
	wantError(t, h.do(t, http.MethodPost, nil, body, map[string]string{"Content-Type": ct}), 400, `no part named "file"`)
	body, ct = multipartBody(t, part{"file", "", "1"})
	wantError(t, h.do(t, http.MethodPost, nil, body, map[string]string{"Content-Type": ct}), 400, "no filename")

	// A body cut off inside a part: 400, and neither the new file nor the
	// directories made for it are left behind.
	cut := filepath.Join(dir, "newdir", "sub", "cut.bin")
	body, ct = multipartBody(t, part{"file", cut, strings.Repeat("x", 100_000)})
	truncated := body.Bytes()[:body.Len()-2000]
	wantError(t, h.do(t, http.MethodPost, nil, bytes.NewReader(truncated), map[string]string{"Content-Type": ct}), 400, "read the request body")
	absent(t, cut, filepath.Join(dir, "newdir"))
}

func TestUploadOctetStream(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "raw", "r.bin")
	out := decodeUpload(t, h.do(t, http.MethodPost, q("path", p), strings.NewReader("raw bytes"),
		map[string]string{"Content-Type": "application/octet-stream"}))
	if len(out) != 1 || out[0].Path != p || mustRead(t, p) != "raw bytes" {
		t.Errorf("response %+v, content %q", out, mustRead(t, p))
	}

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = io.WriteString(zw, "compressed upload")
	_ = zw.Close()
	gp := filepath.Join(dir, "gz.txt")
	decodeUpload(t, h.do(t, http.MethodPost, q("path", gp), bytes.NewReader(gz.Bytes()),
		map[string]string{"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}))
	if mustRead(t, gp) != "compressed upload" {
		t.Errorf("gzip upload content %q", mustRead(t, gp))
	}
	// gzip works for multipart bodies too.
	body, ct := multipartBody(t, part{"file", filepath.Join(dir, "mgz.txt"), "multipart in gzip"})
	gz.Reset()
	zw = gzip.NewWriter(&gz)
	_, _ = zw.Write(body.Bytes())
	_ = zw.Close()
	decodeUpload(t, h.do(t, http.MethodPost, nil, bytes.NewReader(gz.Bytes()), map[string]string{"Content-Type": ct, "Content-Encoding": "gzip"}))
	if mustRead(t, filepath.Join(dir, "mgz.txt")) != "multipart in gzip" {
		t.Error("multipart gzip content differs")
	}

	octet := map[string]string{"Content-Type": "application/octet-stream"}
	wantError(t, h.do(t, http.MethodPost, nil, strings.NewReader("x"), octet), 400, "path query parameter is required")
	wantError(t, h.do(t, http.MethodPost, q("path", filepath.Join(dir, "nz")), strings.NewReader("not gzip"),
		map[string]string{"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}), 400, "not valid gzip")
	cutGz := gz.Bytes()[:len(gz.Bytes())-6]
	wantError(t, h.do(t, http.MethodPost, q("path", filepath.Join(dir, "cutgz")), bytes.NewReader(cutGz),
		map[string]string{"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}), 400, "read the request body")
	absent(t, filepath.Join(dir, "nz"), filepath.Join(dir, "cutgz"))
	wantError(t, h.do(t, http.MethodPost, q("path", filepath.Join(dir, "br")), strings.NewReader("x"),
		map[string]string{"Content-Type": "application/octet-stream", "Content-Encoding": "br"}), 400, "unsupported Content-Encoding")
	wantError(t, h.do(t, http.MethodPost, q("path", filepath.Join(dir, "t")), strings.NewReader("x"),
		map[string]string{"Content-Type": "text/plain"}), 400, "unsupported Content-Type")
	wantError(t, h.do(t, http.MethodPost, q("path", filepath.Join(dir, "t")), strings.NewReader("x"), nil), 400, "unsupported Content-Type")
	wantError(t, h.do(t, http.MethodPost, q("path", dir), strings.NewReader("x"), octet), 400, "is a directory")
	wantError(t, h.do(t, http.MethodPost, q("path", p+"/under-a-file"), strings.NewReader("x"), octet), 400, "not a directory")
	wantError(t, h.do(t, http.MethodPost, q("path", filepath.Join(dir, "u"), "username", "no-such-user-paddock"), strings.NewReader("x"), octet), 401, "invalid username")
	absent(t, filepath.Join(dir, "t"), filepath.Join(dir, "u"), filepath.Join(dir, "br"))
}

func TestUploadOwnership(t *testing.T) {
	h := newHarness(t)
	nb := nobody(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "new", "sub", "f.txt")
	decodeUpload(t, h.do(t, http.MethodPost, q("path", p, "username", "nobody"), strings.NewReader("mine"),
		map[string]string{"Content-Type": "application/octet-stream"}))
	for _, x := range []string{p, filepath.Join(dir, "new"), filepath.Join(dir, "new", "sub")} {
		if uid, gid := ownerOf(t, x); uid != nb.uid || gid != nb.gid {
			t.Errorf("%s owned by %d:%d, want nobody %d:%d", x, uid, gid, nb.uid, nb.gid)
		}
	}
	if uid, _ := ownerOf(t, dir); uid != 0 {
		t.Errorf("pre-existing %s chowned to %d", dir, uid)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("new file mode %v, want 0644 (0666 less umask 022)", fi.Mode().Perm())
	}

	// Overwriting a root-owned file hands it to the writer, keeping its mode.
	existing := filepath.Join(dir, "script.sh")
	mustWrite(t, existing, "#!/bin/sh\necho a long original content\n")
	if err := os.Chmod(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	body, ct := multipartBody(t, part{"file", existing, "echo b\n"})
	decodeUpload(t, h.do(t, http.MethodPost, q("username", "nobody"), body, map[string]string{"Content-Type": ct}))
	if uid, gid := ownerOf(t, existing); uid != nb.uid || gid != nb.gid {
		t.Errorf("overwritten file owned by %d:%d", uid, gid)
	}
	if mustRead(t, existing) != "echo b\n" {
		t.Errorf("overwritten content %q", mustRead(t, existing))
	}
	if fi, _ := os.Stat(existing); fi.Mode().Perm() != 0o755 {
		t.Errorf("overwrite changed the mode to %v", fi.Mode().Perm())
	}
}

func TestUploadMetadata(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "m.txt")
	octet := func(extra map[string]string) map[string]string {
		m := map[string]string{"Content-Type": "application/octet-stream"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	out := decodeUpload(t, h.do(t, http.MethodPost, q("path", p), strings.NewReader("v1"),
		octet(map[string]string{"X-Metadata-Author": "ann", "x-metadata-PURPOSE": "a test"})))
	want := map[string]string{"author": "ann", "purpose": "a test"}
	if len(out) != 1 || len(out[0].Metadata) != 2 || out[0].Metadata["author"] != "ann" || out[0].Metadata["purpose"] != "a test" {
		t.Errorf("response metadata %+v, want %v", out, want)
	}
	if v, err := getXattr(func(b []byte) (int, error) { return unix.Getxattr(p, "user.e2b.author", b) }); err != nil || string(v) != "ann" {
		t.Errorf("xattr user.e2b.author = %q %v", v, err)
	}
	if err := unix.Setxattr(p, "user.other", []byte("keep"), 0); err != nil {
		t.Fatal(err)
	}

	// A new upload replaces the e2b metadata and leaves other xattrs alone.
	out = decodeUpload(t, h.do(t, http.MethodPost, q("path", p), strings.NewReader("v2"),
		octet(map[string]string{"X-Metadata-Author": "bob"})))
	if len(out[0].Metadata) != 1 || out[0].Metadata["author"] != "bob" {
		t.Errorf("replaced metadata %v", out[0].Metadata)
	}
	res, err := h.json.Stat(context.Background(), connect.NewRequest(&rpc.StatRequest{Path: p}))
	if err != nil || len(res.Msg.GetEntry().GetMetadata()) != 1 || res.Msg.GetEntry().GetMetadata()["author"] != "bob" {
		t.Errorf("Stat metadata %v %v", res, err)
	}
	if v, err := getXattr(func(b []byte) (int, error) { return unix.Getxattr(p, "user.other", b) }); err != nil || string(v) != "keep" {
		t.Errorf("foreign xattr = %q %v", v, err)
	}
	// No metadata headers: the e2b metadata is cleared.
	r := h.do(t, http.MethodPost, q("path", p), strings.NewReader("v3"), octet(nil))
	out = decodeUpload(t, r)
	if out[0].Metadata != nil || strings.Contains(string(r.body), "metadata") {
		t.Errorf("cleared metadata still reported: %s", r.body)
	}

	bad := []struct {
		name string
		hdr  map[string]string
		msg  string
	}{
		{"tab in value", map[string]string{"X-Metadata-K": "a\tb"}, "non-printable"},
		{"non-ASCII value", map[string]string{"X-Metadata-K": "caf\xc3\xa9"}, "non-printable"},
		{"key too long", map[string]string{"X-Metadata-" + strings.Repeat("k", 247): "v"}, "longer than 246 bytes"},
		{"total too large", map[string]string{
			"X-Metadata-A": strings.Repeat("a", 1000), "X-Metadata-B": strings.Repeat("b", 1000),
			"X-Metadata-C": strings.Repeat("c", 1000), "X-Metadata-D": strings.Repeat("d", 1000),
			"X-Metadata-E": strings.Repeat("e", 100)}, "more than the 4096 allowed"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			np := filepath.Join(dir, "bad-"+strings.ReplaceAll(c.name, " ", "-"))
			wantError(t, h.do(t, http.MethodPost, q("path", np), strings.NewReader("x"), octet(c.hdr)), 400, c.msg)
			absent(t, np)
		})
	}
}

// TestUploadNoSpace fills a small tmpfs: 507, and nothing of the failed
// upload is left.
func TestUploadNoSpace(t *testing.T) {
	h := newHarness(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount a test tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	big := strings.Repeat("z", 1<<20)

	p := filepath.Join(mnt, "new", "big.bin")
	wantError(t, h.do(t, http.MethodPost, q("path", p), strings.NewReader(big),
		map[string]string{"Content-Type": "application/octet-stream"}), http.StatusInsufficientStorage, "not enough disk space")
	absent(t, p, filepath.Join(mnt, "new"))

	body, ct := multipartBody(t, part{"file", filepath.Join(mnt, "m.bin"), big})
	wantError(t, h.do(t, http.MethodPost, nil, body, map[string]string{"Content-Type": ct}), http.StatusInsufficientStorage, "not enough disk space")
	absent(t, filepath.Join(mnt, "m.bin"))
}

// TestUploadStreamsToDisk uploads 64 MiB and checks it arrives intact and
// that the service did not hold it in memory.
func TestUploadStreamsToDisk(t *testing.T) {
	h := newHarness(t)
	p := filepath.Join(t.TempDir(), "large.bin")
	const size = 64 << 20
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	sum := sha256.New()
	pr, pw := io.Pipe()
	go func() {
		for written := 0; written < size; written += len(chunk) {
			chunk[0] = byte(written >> 20) // vary the chunks
			sum.Write(chunk)
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	decodeUpload(t, h.do(t, http.MethodPost, q("path", p), pr, map[string]string{"Content-Type": "application/octet-stream"}))
	runtime.ReadMemStats(&after)

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := sha256.New()
	n, _ := io.Copy(got, f)
	if n != size || !bytes.Equal(got.Sum(nil), sum.Sum(nil)) {
		t.Fatalf("stored %d bytes, hash match %v", n, bytes.Equal(got.Sum(nil), sum.Sum(nil)))
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("uploading %d MiB allocated %d KiB in this process (client and server)", size>>20, alloc>>10)
	if alloc > size/8 {
		t.Errorf("uploading %d MiB allocated %d MiB: the body is being buffered", size>>20, alloc>>20)
	}
}

// sdkSignature mirrors the E2B JS SDK (src/sandbox/signature.ts) literally:
// btoa of the SHA-256 digest, trailing "=" stripped, "v1_" prefix.
func sdkSignature(path, op, user, token string, exp *int64) string {
	raw := fmt.Sprintf("%s:%s:%s:%s", path, op, user, token)
	if exp != nil {
		raw += ":" + strconv.FormatInt(*exp, 10)
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
}

// TestSignatureMatchesSDK checks signature against values produced by the
// SDK's own getSignature (e2b 2.51.0, run under Node 20).
func TestSignatureMatchesSDK(t *testing.T) {
	exp := int64(4102444800)
	cases := []struct {
		path, op, user string
		exp            *int64
		want           string
	}{
		{"/home/user/ü dir/a+b.txt", "write", "user", nil, "v1_6ESEkKVireJjWbQNTMqbCnQOUlcwX7emndsDYb+g0S8"},
		{"relative/x.txt", "read", "", nil, "v1_uo0li686T11jhdWiVbxyGLOAGAjeA0EFdsq95WSE8LI"},
		{"/tmp/f", "read", "root", &exp, "v1_0AupOu7UMfPt/BgVQXoDA7Cq8aGsB49GH2kBs1lgQ50"},
	}
	for _, c := range cases {
		if got := signature(c.path, c.op, c.user, "tok-123", c.exp); got != c.want {
			t.Errorf("signature(%q,%q,%q) = %s, SDK computed %s", c.path, c.op, c.user, got, c.want)
		}
		if got := sdkSignature(c.path, c.op, c.user, "tok-123", c.exp); got != c.want {
			t.Errorf("test mirror of the SDK disagrees with the SDK: %s vs %s", got, c.want)
		}
	}
}

func TestFilesAuth(t *testing.T) {
	h := newHarness(t)
	tok := "secret-token"
	h.state.Apply(identity.Init{AccessToken: &tok})
	dir := t.TempDir()
	p := filepath.Join(dir, "auth.txt")
	mustWrite(t, p, "guarded")
	future := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Hour).Unix()
	exp := func(v int64) string { return strconv.FormatInt(v, 10) }

	get := func(vals url.Values, hdr map[string]string) response { return h.do(t, http.MethodGet, vals, nil, hdr) }
	ok := func(r response) {
		t.Helper()
		if r.status != 200 || string(r.body) != "guarded" {
			t.Fatalf("want 200 guarded, got %d %s", r.status, r.body)
		}
	}

	wantError(t, get(q("path", p), nil), 401, "missing signature")
	wantError(t, get(q("path", p), map[string]string{"X-Access-Token": "wrong"}), 401, "does not match")
	ok(get(q("path", p), map[string]string{"X-Access-Token": tok}))

	ok(get(q("path", p, "signature", sdkSignature(p, "read", "", tok, nil)), nil))
	ok(get(q("path", p, "username", "root", "signature", sdkSignature(p, "read", "root", tok, nil)), nil))
	f := future
	ok(get(q("path", p, "signature", sdkSignature(p, "read", "", tok, &f), "signature_expiration", exp(future)), nil))

	// The username signed must be the one in the query, as given.
	wantError(t, get(q("path", p, "signature", sdkSignature(p, "read", "root", tok, nil)), nil), 401, "invalid signature")
	// The path is signed as given, before resolution.
	wantError(t, get(q("path", p, "signature", sdkSignature(p+"/", "read", "", tok, nil)), nil), 401, "invalid signature")
	// A write signature does not allow reading.
	wantError(t, get(q("path", p, "signature", sdkSignature(p, "write", "", tok, nil)), nil), 401, "invalid signature")
	// A signature with another token.
	wantError(t, get(q("path", p, "signature", sdkSignature(p, "read", "", "other", nil)), nil), 401, "invalid signature")
	// A changed expiration breaks the signature; an expired one is refused.
	wantError(t, get(q("path", p, "signature", sdkSignature(p, "read", "", tok, &f), "signature_expiration", exp(future+1)), nil), 401, "invalid signature")
	pa := past
	wantError(t, get(q("path", p, "signature", sdkSignature(p, "read", "", tok, &pa), "signature_expiration", exp(past)), nil), 401, "signature is already expired")
	wantError(t, get(q("path", p, "signature", "v1_x", "signature_expiration", "soon"), nil), 400, "invalid signature_expiration")
	// A header that is present must match, even with a valid signature.
	wantError(t, get(q("path", p, "signature", sdkSignature(p, "read", "", tok, nil)), map[string]string{"X-Access-Token": "wrong"}), 401, "does not match")

	// Uploads take write signatures.
	np := filepath.Join(dir, "signed-upload.txt")
	octet := map[string]string{"Content-Type": "application/octet-stream"}
	wantError(t, h.do(t, http.MethodPost, q("path", np, "signature", sdkSignature(np, "read", "", tok, nil)), strings.NewReader("w"), octet), 401, "invalid signature")
	absent(t, np)
	decodeUpload(t, h.do(t, http.MethodPost, q("path", np, "signature", sdkSignature(np, "write", "", tok, &f), "signature_expiration", exp(future)), strings.NewReader("w"), octet))
	if mustRead(t, np) != "w" {
		t.Error("signed upload content differs")
	}
	// A multipart upload with several files and no path signs the empty path.
	body, ct := multipartBody(t, part{"file", filepath.Join(dir, "m1"), "1"}, part{"file", filepath.Join(dir, "m2"), "2"})
	decodeUpload(t, h.do(t, http.MethodPost, q("signature", sdkSignature("", "write", "", tok, nil)), body, map[string]string{"Content-Type": ct}))
}
