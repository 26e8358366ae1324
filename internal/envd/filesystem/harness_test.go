package filesystem

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockhq/paddock/api/envd/filesystem/filesystemconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

// harness is a filesystem service behind a real HTTP server, mounted as
// envd mounts it, with a JSON (as the SDKs) and a binary-proto client.
type harness struct {
	svc    *Service
	state  *identity.State
	srv    *httptest.Server
	json   filesystemconnect.FilesystemClient
	binary filesystemconnect.FilesystemClient
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	requireRoot(t)
	state := identity.NewState()
	svc := NewService(state, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	mux := http.NewServeMux()
	path, h := filesystemconnect.NewFilesystemHandler(svc)
	mux.Handle(path, h)
	mux.Handle("/files", svc.FilesHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		svc.Close()
		srv.Close()
	})
	return &harness{
		svc:    svc,
		state:  state,
		srv:    srv,
		json:   filesystemconnect.NewFilesystemClient(srv.Client(), srv.URL, connect.WithProtoJSON()),
		binary: filesystemconnect.NewFilesystemClient(srv.Client(), srv.URL),
	}
}

// testWriter sends service logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// requireRoot fails the test when not running as root: the service chowns,
// and ownership is part of what is tested.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (envd runs as root and chowns what it creates); run the tests as root")
	}
}

// asUser sets the "e2b user header" on a request.
func asUser[T any](req *connect.Request[T], name string) *connect.Request[T] {
	req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(name+":")))
	return req
}

// wantCode asserts err is a Connect error with code.
func wantCode(t *testing.T, err error, code connect.Code) *connect.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("want a %v error, got success", code)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a connect error %v, got %T: %v", code, err, err)
	}
	if ce.Code() != code {
		t.Fatalf("want code %v, got %v: %v", code, ce.Code(), ce.Message())
	}
	return ce
}

// testAccount is a non-root account of this machine used for ownership tests.
type testAccount struct {
	name  string
	uid   uint32
	gid   uint32
	group string // name of the primary group (numeric when unnamed)
}

// nobody returns the "nobody" account, which every Linux system has.
func nobody(t *testing.T) testAccount {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("this test needs the 'nobody' user: %v", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	a := testAccount{name: "nobody", uid: uint32(uid), gid: uint32(gid), group: u.Gid}
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		a.group = g.Name
	}
	return a
}

// ownerOf returns the uid and gid of path (not following symlinks).
func ownerOf(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// waitFor polls cond until it holds or a generous deadline passes (a
// liveness bound, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
