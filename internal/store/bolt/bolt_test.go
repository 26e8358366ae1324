package bolt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/store"
	"github.com/paddockhq/paddock/internal/store/conformance"
)

// holdEnv makes the test binary a helper process that holds a store open
// until its stdin closes (see TestInUseByAnotherProcess).
const holdEnv = "PADDOCK_BOLT_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		s, err := Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("ready")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until EOF
		if err := s.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) store.Store {
		s, err := Open(filepath.Join(t.TempDir(), "paddock.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "dir", "paddock.db") // parents are created
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx,
		store.Op{Collection: "sandboxes", Key: "i1", Value: []byte("one")},
		store.Op{Collection: "sandboxes", Key: "i2", Value: []byte("two")},
		store.Op{Collection: "templates", Key: "base", Value: []byte{}},
	); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, s, "sandboxes", "i2"); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revision(ctx, "sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	recs, err := s.List(ctx, "sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Key != "i1" || string(recs[0].Value) != "one" {
		t.Fatalf("after reopen: %+v", recs)
	}
	v, err := s.Get(ctx, "templates", "base")
	if err != nil || v == nil || len(v) != 0 {
		t.Fatalf("empty value after reopen: %q, %v", v, err)
	}
	if _, err := s.Get(ctx, "sandboxes", "i2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted record after reopen: %v", err)
	}
	// The revision is kept in the file: it does not start over.
	if got, err := s.Revision(ctx, "sandboxes"); err != nil || got != rev {
		t.Fatalf("revision after reopen: %d, %v; want %d", got, err, rev)
	}
}

func TestInUseInThisProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paddock.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, WithLockTimeout(50*time.Millisecond))
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second open of %s: want ErrInUse, got %v", path, err)
	}
	want := "store " + path + " is in use by another process (is paddock serve running?)"
	if err.Error() != want {
		t.Fatalf("error text %q, want %q", err, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, WithLockTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatalf("open after the holder closed: %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestInUseByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paddock.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: a -race binary otherwise sleeps 1 s on exit.
	cmd.Env = append(os.Environ(), holdEnv+"="+path, "GORACE=atexit_sleep_ms=0")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	defer func() {
		if !done {
			_ = stdin.Close()
			_ = cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper process: %q, %v (stderr %q)", line, err, stderr.String())
	}

	_, err = Open(path, WithLockTimeout(100*time.Millisecond))
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "is paddock serve running?") {
		t.Fatalf("open of a file held by pid %d: want ErrInUse, got %v", cmd.Process.Pid, err)
	}

	// Once the other process lets go, the file opens.
	_ = stdin.Close()
	done = true
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v (stderr %q)", err, stderr.String())
	}
	s, err := Open(path, WithLockTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatalf("open after the other process exited: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error("open of an empty path: want an error")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "x.db"), WithLockTimeout(0)); err == nil {
		t.Error("open with a zero lock timeout: want an error")
	}
	dir := t.TempDir()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("open of a directory: want an error naming it, got %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bolt file ", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("open of a corrupt file: want an error naming it, got %v", err)
	}
}
