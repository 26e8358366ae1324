package process

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

// pid1Env makes the test binary run pid1Main instead of the tests.
const pid1Env = "PADDOCK_PROCESS_PID1_SCENARIO"

// TestServiceAsPID1 runs the service as PID 1 of a new PID namespace, as
// envd runs in a sandbox, and checks that it reaps double-forked orphans
// while never losing the exit status of its own children.
func TestServiceAsPID1(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pid1Env+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("PID 1 scenario output:\n%s", out)
	if err != nil {
		t.Fatalf("PID 1 scenario failed: %v", err)
	}
	if !strings.Contains(string(out), "PID1 SCENARIO OK") {
		t.Fatal("PID 1 scenario did not report success")
	}
}

// pid1Main is the scenario run as PID 1; it returns the exit code.
func pid1Main() int {
	fail := func(format string, args ...any) int {
		fmt.Printf("FAIL: "+format+"\n", args...)
		return 1
	}
	if os.Getpid() != 1 {
		return fail("pid is %d, want 1", os.Getpid())
	}
	// A private /proc for the new PID namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make mounts private: %v", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail("mount proc: %v", err)
	}

	svc := NewService(identity.NewState(), slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn})))
	defer svc.Close()
	if !svc.reaper.Global() {
		return fail("service as PID 1 does not use the global reaper")
	}
	path, h := processconnect.NewProcessHandler(svc)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := processconnect.NewProcessClient(srv.Client(), srv.URL, connect.WithProtoJSON())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	runCmd := func(script string) (stdout string, end *pb.ProcessEvent_EndEvent, err error) {
		s, err := c.Start(ctx, connect.NewRequest(shell(script)))
		if err != nil {
			return "", nil, err
		}
		defer s.Close()
		var b strings.Builder
		for s.Receive() {
			ev := s.Msg().GetEvent()
			b.Write(ev.GetData().GetStdout())
			if ev.GetEnd() != nil {
				end = ev.GetEnd()
			}
		}
		if err := s.Err(); err != nil {
			return "", nil, err
		}
		if end == nil {
			return "", nil, fmt.Errorf("no end event for %q", script)
		}
		return b.String(), end, nil
	}

	// 1. A double fork: the grandchild outlives its parent and is orphaned
	//    to PID 1; our own child's status must still arrive.
	out, end, err := runCmd("(sleep 3 & echo $!) ; exit 0")
	if err != nil {
		return fail("double fork: %v", err)
	}
	if end.GetExitCode() != 0 || !end.GetExited() {
		return fail("double fork end %v", end)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return fail("orphan pid %q: %v", out, err)
	}

	// The orphan is adopted by PID 1 (checked now, while it still sleeps).
	adopted := false
	for start := time.Now(); time.Since(start) < 2*time.Second; time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
		if err != nil {
			break
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			if f := strings.Fields(s[i+2:]); len(f) > 1 && f[1] == "1" {
				adopted = true
				break
			}
		}
	}
	if !adopted {
		return fail("orphan %d was never seen adopted by PID 1", orphan)
	}

	// 2. Many quick children at once: no status lost to the global reaper.
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, end, err := runCmd(fmt.Sprintf("exit %d", i))
			if err != nil {
				errs <- err
				return
			}
			if end.GetExitCode() != int32(i) || end.GetStatus() != fmt.Sprintf("exit status %d", i) {
				errs <- fmt.Errorf("child %d ended %v", i, end)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return fail("concurrent children: %v", err)
	}

	// 3. The orphan (seen adopted above) is reaped once it exits.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
		if err != nil {
			break // reaped
		}
		if time.Now().After(deadline) {
			return fail("orphan %d not reaped: %s", orphan, b)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// 4. No zombies anywhere in the namespace.
	deadline = time.Now().Add(10 * time.Second)
	for {
		zombies := zombiesInProc()
		if len(zombies) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fail("zombies left: %v", zombies)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Println("PID1 SCENARIO OK")
	return 0
}

func zombiesInProc() []string {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
			out = append(out, s)
		}
	}
	return out
}
