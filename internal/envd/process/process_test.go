package process

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

func TestStartStreamsOutputAndExitStatus(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		r := run(t, c, shell("echo out; echo err >&2; exit 3"))
		if r.pid == 0 {
			t.Fatal("start event carried pid 0")
		}
		if got := r.stdout.String(); got != "out\n" {
			t.Errorf("stdout = %q", got)
		}
		if got := r.stderr.String(); got != "err\n" {
			t.Errorf("stderr = %q", got)
		}
		for _, d := range r.data {
			if d.GetPty() != nil {
				t.Errorf("pipe process sent pty data %q", d.GetPty())
			}
		}
		e := r.end
		if e.GetExitCode() != 3 || !e.GetExited() || e.GetStatus() != "exit status 3" || e.GetError() != "exit status 3" {
			t.Errorf("end = %v, want exitCode 3, exited, status/error \"exit status 3\"", e)
		}

		r = run(t, c, shell("true"))
		if e := r.end; e.GetExitCode() != 0 || !e.GetExited() || e.GetStatus() != "exit status 0" || e.Error != nil {
			t.Errorf("clean end = %v, want exitCode 0, exited, status \"exit status 0\", no error", e)
		}
	})
}

func TestStartPassesArgsExactly(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		args := []string{"a b", "", "*", "$HOME", "'q'", "ü\ttab"}
		req := &pb.StartRequest{Process: &pb.ProcessConfig{
			Cmd:  "/bin/sh",
			Args: append([]string{"-c", `for a in "$@"; do printf '[%s]\n' "$a"; done`, "sh"}, args...),
		}, Stdin: proto.Bool(false)}
		r := run(t, c, req)
		var want strings.Builder
		for _, a := range args {
			fmt.Fprintf(&want, "[%s]\n", a)
		}
		if r.stdout.String() != want.String() {
			t.Fatalf("stdout = %q, want %q", r.stdout.String(), want.String())
		}
		// A bare command name is looked up in the process's PATH.
		r = run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "echo", Args: []string{"via", "path"}}})
		if r.stdout.String() != "via path\n" {
			t.Fatalf("echo via PATH: stdout %q", r.stdout.String())
		}
	})
}

func TestStartEnvironment(t *testing.T) {
	requireRoot(t)
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		f.state.Apply(identity.Init{EnvVars: map[string]string{"G_ONLY": "global", "OVER": "global", "HOME": "/from-global"}})
		req := &pb.StartRequest{Process: &pb.ProcessConfig{
			Cmd:  "/bin/sh",
			Args: []string{"-c", `printf '%s|%s|%s|%s|%s|%s|%s' "$PATH" "$HOME" "$USER" "$LOGNAME" "$G_ONLY" "$OVER" "$R_ONLY"`},
			Envs: map[string]string{"OVER": "request", "R_ONLY": "r v=x"},
		}}
		r := run(t, c, req)
		wantPath := os.Getenv("PATH")
		if wantPath == "" {
			wantPath = DefaultPath
		}
		want := wantPath + "|/from-global|root|root|global|request|r v=x"
		if r.stdout.String() != want {
			t.Fatalf("env = %q, want %q", r.stdout.String(), want)
		}
		// Nothing else of envd's own environment leaks into the process.
		t.Setenv("PADDOCK_ENVD_SECRET", "leak")
		r = run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "env"}}})
		if strings.Contains(r.stdout.String(), "PADDOCK_ENVD_SECRET") {
			t.Fatalf("envd's environment leaked: %q", r.stdout.String())
		}
		// Bad variable names are rejected.
		err := startErr(t, c, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{
			Cmd: "/bin/true", Envs: map[string]string{"A=B": "x"},
		}}))
		wantCode(t, err, connect.CodeInvalidArgument, "A=B")
	})
}

func TestStartWorkingDirectory(t *testing.T) {
	requireRoot(t)
	home, err := os.MkdirTemp("/root", "paddock-cwd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	rel := filepath.Base(home)
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		pwd := func(cwd *string) string {
			t.Helper()
			r := run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/pwd", Cwd: cwd}})
			return strings.TrimSpace(r.stdout.String())
		}
		if got := pwd(nil); got != "/root" {
			t.Errorf("no cwd, no default workdir: pwd = %q, want the home /root", got)
		}
		if got := pwd(proto.String("~")); got != "/root" {
			t.Errorf("cwd ~: pwd = %q", got)
		}
		if got := pwd(proto.String("~/" + rel)); got != home {
			t.Errorf("cwd ~/%s: pwd = %q, want %q", rel, got, home)
		}
		if got := pwd(proto.String(rel)); got != home {
			t.Errorf("relative cwd %s: pwd = %q, want %q (against home)", rel, got, home)
		}
		if got := pwd(proto.String("/tmp")); got != "/tmp" {
			t.Errorf("cwd /tmp: pwd = %q", got)
		}
		f.state.Apply(identity.Init{DefaultWorkdir: home})
		if got := pwd(nil); got != home {
			t.Errorf("default workdir: pwd = %q, want %q", got, home)
		}
		missing := filepath.Join(home, "does-not-exist")
		err := startErr(t, c, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/pwd", Cwd: &missing}}))
		wantCode(t, err, connect.CodeInvalidArgument, fmt.Sprintf("cwd '%s' does not exist", missing))
		err = startErr(t, c, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/pwd", Cwd: proto.String("/etc/hostname")}}))
		wantCode(t, err, connect.CodeInvalidArgument, "not a directory")
	})
}

func TestStartActingUser(t *testing.T) {
	requireRoot(t)
	nobody, err := identity.Lookup("nobody")
	if err != nil {
		t.Fatalf("user nobody must exist: %v", err)
	}
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		req := connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{
			Cmd:  "/bin/sh",
			Args: []string{"-c", `echo "$(id -u) $(id -g) $(id -G) $HOME $USER $LOGNAME $(pwd)"`},
			Cwd:  proto.String("/tmp"),
		}})
		req.Header().Set("Authorization", basicUser("nobody"))
		s, err := c.Start(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		r := newEvents(t, s).finish()
		groups := make([]string, 0, len(nobody.Groups))
		for _, g := range nobody.Groups {
			groups = append(groups, strconv.Itoa(int(g)))
		}
		want := fmt.Sprintf("%d %d %s %s nobody nobody /tmp\n", nobody.UID, nobody.GID, strings.Join(groups, " "), nobody.Home)
		if r.stdout.String() != want {
			t.Fatalf("as nobody: %q, want %q", r.stdout.String(), want)
		}

		// Starting a process under another user leaves this process
		// dumpable (checkpoints of a restored envd need it).
		if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 1 {
			t.Errorf("dumpable after starting a process as nobody: %d, %v; want 1", d, err)
		}

		// The default user (root here) acts when no header is sent.
		r = run(t, c, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "id -u"}}})
		if r.stdout.String() != "0\n" {
			t.Fatalf("default user: id -u = %q", r.stdout.String())
		}

		bad := connect.NewRequest(shell("true"))
		bad.Header().Set("Authorization", basicUser("no-such-user-paddock"))
		wantCode(t, startErr(t, c, bad), connect.CodeUnauthenticated, "invalid username: 'no-such-user-paddock'")
	})
}

func TestStdinPipeSendInputAndCloseStdin(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		ctx := testCtx(t)
		// stdin omitted means a pipe (back-compat).
		req := shell(`cat; echo "[eof]"`)
		req.Stdin = nil
		s, err := c.Start(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		ev := newEvents(t, s)
		ev.until("start", func(r *result) bool { return r.pid != 0 })
		pid := ev.res.pid
		for _, chunk := range []string{"hello\n", "wörld\n"} {
			if _, err := c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
				Process: pidSel(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte(chunk)}},
			})); err != nil {
				t.Fatalf("SendInput: %v", err)
			}
		}
		_, err = c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: pidSel(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte("x")}},
		}))
		wantCode(t, err, connect.CodeInvalidArgument, "no pseudo-terminal")
		_, err = c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: pidSel(pid)}))
		wantCode(t, err, connect.CodeInvalidArgument, "input is required")
		if _, err := c.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(pid)})); err != nil {
			t.Fatalf("CloseStdin: %v", err)
		}
		r := ev.finish()
		if r.stdout.String() != "hello\nwörld\n[eof]\n" || r.end.GetExitCode() != 0 {
			t.Fatalf("stdout %q end %v", r.stdout.String(), r.end)
		}

		// stdin:false means /dev/null: cat sees EOF at once, input is refused.
		r = run(t, c, shell(`cat; echo "[eof]"`))
		if r.stdout.String() != "[eof]\n" {
			t.Fatalf("stdin:false stdout %q", r.stdout.String())
		}
		s, err = c.Start(ctx, connect.NewRequest(shell("sleep 30")))
		if err != nil {
			t.Fatal(err)
		}
		ev = newEvents(t, s)
		ev.until("start", func(r *result) bool { return r.pid != 0 })
		_, err = c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: pidSel(ev.res.pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("x")}},
		}))
		wantCode(t, err, connect.CodeFailedPrecondition, "without stdin")
		kill(t, c, ev.res.pid)
		ev.finish()
	})
}

func TestStreamInput(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		ctx := testCtx(t)
		req := shell(`cat; echo "[eof]"`)
		req.Stdin = proto.Bool(true)
		req.Tag = proto.String("cat-tag")
		s, err := c.Start(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		ev := newEvents(t, s)
		ev.until("start", func(r *result) bool { return r.pid != 0 })

		in := c.StreamInput(ctx)
		msgs := []*pb.StreamInputRequest{
			{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: tagSel("cat-tag")}}},
			{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("ab")}}}}},
			{Event: &pb.StreamInputRequest_Keepalive{Keepalive: &pb.StreamInputRequest_KeepAlive{}}},
			{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("c\n")}}}}},
		}
		for _, m := range msgs {
			if err := in.Send(m); err != nil {
				t.Fatalf("StreamInput send: %v", err)
			}
		}
		if _, err := in.CloseAndReceive(); err != nil {
			t.Fatalf("StreamInput: %v", err)
		}
		ev.until("input echoed", func(r *result) bool { return r.stdout.String() == "abc\n" })
		if _, err := c.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: tagSel("cat-tag")})); err != nil {
			t.Fatal(err)
		}
		if r := ev.finish(); r.stdout.String() != "abc\n[eof]\n" {
			t.Fatalf("stdout %q", r.stdout.String())
		}

		// Closing twice is harmless; writing after the close is refused.
		req = shell("sleep 30")
		req.Stdin = proto.Bool(true)
		s, err = c.Start(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		ev = newEvents(t, s)
		ev.until("start", func(r *result) bool { return r.pid != 0 })
		for i := range 2 {
			if _, err := c.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(ev.res.pid)})); err != nil {
				t.Fatalf("CloseStdin #%d: %v", i+1, err)
			}
		}
		_, err = c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: pidSel(ev.res.pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("late")}},
		}))
		wantCode(t, err, connect.CodeFailedPrecondition, "is closed")
		kill(t, c, ev.res.pid)
		ev.finish()

		// Data before start is refused.
		in = c.StreamInput(ctx)
		_ = in.Send(msgs[1])
		_, err = in.CloseAndReceive()
		wantCode(t, err, connect.CodeInvalidArgument, "must be start")
		// An unknown process is NotFound.
		in = c.StreamInput(ctx)
		_ = in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: pidSel(1 << 30)}}})
		_, err = in.CloseAndReceive()
		wantCode(t, err, connect.CodeNotFound, fmt.Sprintf("process with pid %d not found", 1<<30))
	})
}

func TestDisconnectKeepsProcessAndConnectReattaches(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		req := shell(`echo first; read x; echo "second-$x"; echo to-err >&2; exit 7`)
		req.Stdin = proto.Bool(true)
		req.Tag = proto.String("job")
		ctx1, cancel1 := context.WithCancel(context.Background()) // no deadline: no lifetime
		s, err := c.Start(ctx1, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		first := newEvents(t, s)
		first.until("first line", func(r *result) bool { return r.stdout.String() == "first\n" })
		pid := first.res.pid
		cancel1() // the client goes away
		s.Close()

		if listed(t, c, pid) == nil {
			t.Fatal("process vanished from List after its Start stream was cancelled")
		}
		// The cancelled stream detaches (and so stops receiving output).
		f.svc.mu.Lock()
		p := f.svc.running[int(pid)]
		f.svc.mu.Unlock()
		deadline := time.Now().Add(20 * time.Second)
		for {
			p.mu.Lock()
			n := len(p.subs)
			p.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d subscribers still attached after the client left", n)
			}
			time.Sleep(5 * time.Millisecond)
		}

		// Two streams re-attach, one by pid and one by tag; both get the rest.
		ctx := testCtx(t)
		var attached []*events[pb.ConnectResponse, *pb.ConnectResponse]
		for _, sel := range []*pb.ProcessSelector{pidSel(pid), tagSel("job")} {
			cs, err := c.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{Process: sel}))
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			ev := newEvents(t, cs)
			ev.until("start", func(r *result) bool { return r.pid != 0 })
			if ev.res.pid != pid {
				t.Fatalf("Connect(%v) start pid %d, want %d", sel, ev.res.pid, pid)
			}
			attached = append(attached, ev)
		}
		if _, err := c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: pidSel(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("abc\n")}},
		})); err != nil {
			t.Fatal(err)
		}
		for i, ev := range attached {
			r := ev.finish()
			if r.stdout.String() != "second-abc\n" || r.stderr.String() != "to-err\n" {
				t.Fatalf("stream %d re-attached output: stdout %q stderr %q", i, r.stdout.String(), r.stderr.String())
			}
			if r.end.GetExitCode() != 7 || r.end.GetStatus() != "exit status 7" {
				t.Fatalf("stream %d end %v", i, r.end)
			}
		}
	})
}

func TestConnectToEndedAndUnknownProcesses(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		req := shell("echo done; exit 4")
		req.Tag = proto.String("ended")
		r := run(t, c, req)
		waitUnlisted(t, c, r.pid)
		for _, sel := range []*pb.ProcessSelector{pidSel(r.pid), tagSel("ended")} {
			s, err := c.Connect(testCtx(t), connect.NewRequest(&pb.ConnectRequest{Process: sel}))
			if err != nil {
				t.Fatal(err)
			}
			ev := newEvents(t, s)
			got := ev.finish()
			if got.pid != r.pid || ev.n != 2 || got.end.GetExitCode() != 4 || got.stdout.Len() != 0 {
				t.Fatalf("Connect to ended %v: pid %d, %d events, end %v, stdout %q; want start+end only",
					sel, got.pid, ev.n, got.end, got.stdout.String())
			}
			s.Close()
		}
		// An ended process cannot be signalled or fed.
		_, err := c.SendSignal(testCtx(t), connect.NewRequest(&pb.SendSignalRequest{Process: pidSel(r.pid), Signal: pb.Signal_SIGNAL_SIGKILL}))
		wantCode(t, err, connect.CodeNotFound, fmt.Sprintf("process with pid %d not found", r.pid))

		s, err := c.Connect(testCtx(t), connect.NewRequest(&pb.ConnectRequest{Process: pidSel(1 << 30)}))
		if err == nil {
			for s.Receive() {
				t.Fatalf("unknown pid streamed %v", s.Msg())
			}
			err = s.Err()
		}
		wantCode(t, err, connect.CodeNotFound, fmt.Sprintf("process with pid %d not found", 1<<30))
		s, err = c.Connect(testCtx(t), connect.NewRequest(&pb.ConnectRequest{Process: tagSel("nope")}))
		if err == nil {
			for s.Receive() {
			}
			err = s.Err()
		}
		wantCode(t, err, connect.CodeNotFound, "process with tag 'nope' not found")
	})
}

func TestListShowsRunningProcesses(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		req := shell("sleep 30")
		req.Process.Envs = map[string]string{"K": "v"}
		req.Process.Cwd = proto.String("/tmp")
		req.Tag = proto.String("lister")
		s, err := c.Start(testCtx(t), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		ev := newEvents(t, s)
		ev.until("start", func(r *result) bool { return r.pid != 0 })
		info := listed(t, c, ev.res.pid)
		if info == nil {
			t.Fatal("running process not listed")
		}
		want := &pb.ProcessInfo{Config: req.Process, Pid: ev.res.pid, Tag: proto.String("lister")}
		if !proto.Equal(info, want) {
			t.Fatalf("List entry %v, want %v", info, want)
		}
		kill(t, c, ev.res.pid)
		ev.finish()
		waitUnlisted(t, c, ev.res.pid)
	})
}

func TestSendSignal(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		ctx := testCtx(t)
		for _, tc := range []struct {
			sig    pb.Signal
			status string
		}{
			{pb.Signal_SIGNAL_SIGKILL, "signal: killed"},
			{pb.Signal_SIGNAL_SIGTERM, "signal: terminated"},
		} {
			// The background sleep shares the process group and must die too.
			s, err := c.Start(ctx, connect.NewRequest(shell("sleep 300 & echo $!; wait")))
			if err != nil {
				t.Fatal(err)
			}
			ev := newEvents(t, s)
			ev.until("background pid", func(r *result) bool { return strings.HasSuffix(r.stdout.String(), "\n") })
			bg, err := strconv.Atoi(strings.TrimSpace(ev.res.stdout.String()))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: pidSel(ev.res.pid), Signal: tc.sig})); err != nil {
				t.Fatalf("SendSignal(%v): %v", tc.sig, err)
			}
			r := ev.finish()
			if e := r.end; e.GetExitCode() != -1 || e.GetExited() || e.GetStatus() != tc.status || e.GetError() != tc.status {
				t.Fatalf("%v: end %v, want exitCode -1, not exited, status %q", tc.sig, e, tc.status)
			}
			waitGone(t, bg)
		}
		_, err := c.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: pidSel(1), Signal: pb.Signal_SIGNAL_UNSPECIFIED}))
		wantCode(t, err, connect.CodeUnimplemented, "invalid signal")
		_, err = c.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: pidSel(1), Signal: pb.Signal(3)}))
		wantCode(t, err, connect.CodeUnimplemented, "invalid signal")
		_, err = c.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: pidSel(1 << 30), Signal: pb.Signal_SIGNAL_SIGKILL}))
		wantCode(t, err, connect.CodeNotFound, fmt.Sprintf("process with pid %d not found", 1<<30))
		_, err = c.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: tagSel("x"), Signal: pb.Signal_SIGNAL_SIGKILL}))
		wantCode(t, err, connect.CodeNotFound, "process with tag 'x' not found")
	})
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		// The client's deadline becomes Connect-Timeout-Ms: the process lifetime.
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		s, err := c.Start(ctx, connect.NewRequest(shell("sleep 300 & echo $!; sleep 300; echo finished")))
		if err != nil {
			t.Fatal(err)
		}
		ev := newEvents(t, s)
		ev.until("background pid", func(r *result) bool { return strings.HasSuffix(r.stdout.String(), "\n") })
		pid := ev.res.pid
		bg, err := strconv.Atoi(strings.TrimSpace(ev.res.stdout.String()))
		if err != nil {
			t.Fatal(err)
		}
		for {
			e, err := ev.next()
			if e == nil {
				if err == nil && ev.res.end == nil {
					t.Fatal("stream closed cleanly without end")
				}
				if err != nil && connect.CodeOf(err) != connect.CodeDeadlineExceeded {
					t.Fatalf("stream error %v, want deadline_exceeded", err)
				}
				break
			}
		}
		if strings.Contains(ev.res.stdout.String(), "finished") {
			t.Fatal("process ran to completion despite the timeout")
		}
		waitUnlisted(t, c, pid)
		waitGone(t, int(pid))
		waitGone(t, bg)
		// Connect shows how it ended: killed.
		cs, err := c.Connect(testCtx(t), connect.NewRequest(&pb.ConnectRequest{Process: pidSel(pid)}))
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if r := newEvents(t, cs).finish(); r.end.GetStatus() != "signal: killed" {
			t.Fatalf("timed-out process ended with %v, want signal: killed", r.end)
		}
	})
}

func TestBackgroundDescendantHoldingPipesDoesNotHang(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		r := run(t, c, shell("sleep 100 & echo $!"))
		if r.end.GetExitCode() != 0 || !r.end.GetExited() {
			t.Fatalf("end %v", r.end)
		}
		bg, err := strconv.Atoi(strings.TrimSpace(r.stdout.String()))
		if err != nil {
			t.Fatalf("stdout %q: %v", r.stdout.String(), err)
		}
		// The orphan is not ours to manage; clean it up.
		if err := syscall.Kill(bg, syscall.SIGKILL); err != nil {
			t.Fatalf("background sleep %d should still run: %v", bg, err)
		}
		waitGone(t, bg)
	})
}

func TestPTY(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		ctx := testCtx(t)
		req := &pb.StartRequest{
			Process: &pb.ProcessConfig{
				Cmd:  "/bin/bash",
				Args: []string{"--norc", "--noprofile", "-i"},
				Envs: map[string]string{"TERM": "xterm-256color", "PS1": "$ "},
				Cwd:  proto.String("/tmp"),
			},
			Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}},
		}
		s, err := c.Start(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		ev := newEvents(t, s)
		ev.until("start", func(r *result) bool { return r.pid != 0 })
		pid := ev.res.pid
		send := func(text string) {
			t.Helper()
			if _, err := c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
				Process: pidSel(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte(text)}},
			})); err != nil {
				t.Fatalf("SendInput pty: %v", err)
			}
		}
		mark := 0
		since := func(r *result) string { return r.pty.String()[mark:] }
		send("echo \"$((6*7))-ok\"\n")
		ev.until("echo", func(r *result) bool { return strings.Contains(since(r), "42-ok") })
		mark = ev.res.pty.Len()
		send("stty size\n")
		ev.until("24 80", func(r *result) bool { return strings.Contains(since(r), "24 80") })

		if _, err := c.Update(ctx, connect.NewRequest(&pb.UpdateRequest{
			Process: pidSel(pid), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 100, Rows: 30}},
		})); err != nil {
			t.Fatalf("Update: %v", err)
		}
		mark = ev.res.pty.Len()
		send("stty size\n")
		ev.until("30 100", func(r *result) bool { return strings.Contains(since(r), "30 100") })

		// A real terminal, TERM from envs, and the shell leads its own session.
		mark = ev.res.pty.Len()
		send(`read -r _ _ _ _ _ sid _ < /proc/$$/stat; echo "T=$TERM S=$sid P=$$ $(tty)"` + "\n")
		want := fmt.Sprintf("T=xterm-256color S=%d P=%d /dev/pts/", pid, pid)
		ev.until("tty line", func(r *result) bool { return strings.Contains(since(r), want) })

		_, err = c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: pidSel(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("x")}},
		}))
		wantCode(t, err, connect.CodeInvalidArgument, "pseudo-terminal")
		_, err = c.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(pid)}))
		wantCode(t, err, connect.CodeInvalidArgument, "pseudo-terminal")

		send("exit 5\n")
		r := ev.finish()
		if r.end.GetExitCode() != 5 {
			t.Fatalf("pty end %v", r.end)
		}
		for _, d := range r.data {
			if d.GetPty() == nil {
				t.Fatalf("pty process sent non-pty data %v", d)
			}
		}
	})
}

func TestUpdateErrors(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		ctx := testCtx(t)
		s, err := c.Start(ctx, connect.NewRequest(shell("sleep 30")))
		if err != nil {
			t.Fatal(err)
		}
		ev := newEvents(t, s)
		ev.until("start", func(r *result) bool { return r.pid != 0 })
		_, err = c.Update(ctx, connect.NewRequest(&pb.UpdateRequest{
			Process: pidSel(ev.res.pid), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 10, Rows: 10}},
		}))
		wantCode(t, err, connect.CodeFailedPrecondition, "no pseudo-terminal")
		_, err = c.Update(ctx, connect.NewRequest(&pb.UpdateRequest{
			Process: pidSel(1 << 30), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 10, Rows: 10}},
		}))
		wantCode(t, err, connect.CodeNotFound, "not found")
		kill(t, c, ev.res.pid)
		ev.finish()
	})
}

func TestOutputChunkSizes(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		const n = 1 << 20
		r := run(t, c, shell(fmt.Sprintf("head -c %d /dev/zero", n)))
		if r.stdout.Len() != n || bytes.Count(r.stdout.Bytes(), []byte{0}) != n {
			t.Fatalf("got %d stdout bytes, want %d zeros", r.stdout.Len(), n)
		}
		for _, d := range r.data {
			if l := len(d.GetStdout()); l > 32<<10 {
				t.Fatalf("stdout chunk of %d bytes > 32 KiB", l)
			}
		}
		req := &pb.StartRequest{
			Process: &pb.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' Z", n/4)}},
			Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}},
		}
		r = run(t, c, req)
		if got := strings.Count(r.pty.String(), "Z"); got != n/4 {
			t.Fatalf("pty delivered %d of %d bytes", got, n/4)
		}
		for _, d := range r.data {
			if l := len(d.GetPty()); l > 16<<10 {
				t.Fatalf("pty chunk of %d bytes > 16 KiB", l)
			}
		}
	})
}

func TestKeepalive(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		req := connect.NewRequest(shell("sleep 1; echo done"))
		req.Header().Set("Keepalive-Ping-Interval", "0.05")
		s, err := c.Start(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		r := newEvents(t, s).finish()
		if r.keepalives == 0 || r.stdout.String() != "done\n" {
			t.Fatalf("keepalives %d stdout %q: want keepalive events while idle", r.keepalives, r.stdout.String())
		}
		// Without the header the default (90 s) applies: none in a short run.
		r = run(t, c, shell("sleep 0.3; echo done"))
		if r.keepalives != 0 {
			t.Fatalf("%d keepalives with the 90 s default", r.keepalives)
		}
	})
}

// TestFanOutAndSlowSubscriber attaches two streams to one process whose
// output is far larger than a stream's queue: a Connect stream that reads
// everything, and the Start stream whose client stops reading. The reading
// stream must get every byte (the process is throttled to it, not dropped);
// the stalled one must be dropped with resource_exhausted, after which the
// process runs to completion.
func TestFanOutAndSlowSubscriber(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		f.svc.mu.Lock()
		f.svc.subscriberLimit = 256 << 10
		f.svc.stallTimeout = 2 * time.Second
		f.svc.mu.Unlock()
		// Random bytes: the connect-go clients accept gzip, and zeros would
		// compress into nothing on the wire.
		const total = 8 << 20
		src := filepath.Join(t.TempDir(), "random")
		data := make([]byte, total)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		req := shell(fmt.Sprintf(`read go; echo "got $go"; cat %s; echo tail`, src))
		req.Stdin = proto.Bool(true)
		ctx := testCtx(t)
		slow, err := f.stingyClients()[f.codec].client.Start(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		slowEv := newEvents(t, slow)
		slowEv.until("start", func(r *result) bool { return r.pid != 0 })
		pid := slowEv.res.pid

		fast, err := c.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{Process: pidSel(pid)}))
		if err != nil {
			t.Fatal(err)
		}
		defer fast.Close()
		fastEv := newEvents(t, fast)
		fastEv.until("start", func(r *result) bool { return r.pid != 0 })
		if _, err := c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: pidSel(pid), Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("yes\n")}},
		})); err != nil {
			t.Fatal(err)
		}
		r := fastEv.finish()
		want := "got yes\n" + string(data) + "tail\n"
		if r.stdout.Len() != len(want) || r.stdout.String() != want {
			t.Fatalf("reading stream got %d bytes, want %d", r.stdout.Len(), len(want))
		}
		if r.end.GetExitCode() != 0 {
			t.Fatalf("end %v", r.end)
		}

		// Now the stalled client reads: what the network buffered, then the drop.
		var err2 error
		for {
			ev, err := slowEv.next()
			if ev == nil {
				err2 = err
				break
			}
		}
		t.Logf("stalled stream: %d bytes, end %v, err %v", slowEv.res.stdout.Len(), slowEv.res.end, err2)
		wantCode(t, err2, connect.CodeResourceExhausted, "stream dropped")
		if slowEv.res.end != nil {
			t.Fatal("the dropped stream also received the end event")
		}
		if slowEv.res.stdout.Len() >= len(want) {
			t.Fatal("the stalled stream received everything: the test did not exercise the limit")
		}
	})
}

func TestInvalidRequests(t *testing.T) {
	eachCodec(t, func(t *testing.T, f *fixture, c processconnect.ProcessClient) {
		ctx := testCtx(t)
		for name, req := range map[string]*pb.StartRequest{
			"no process":  {},
			"empty cmd":   {Process: &pb.ProcessConfig{}},
			"pty too big": {Process: &pb.ProcessConfig{Cmd: "/bin/true"}, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 1 << 20, Rows: 1}}},
		} {
			err := startErr(t, c, connect.NewRequest(req))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("Start %s: %v, want invalid_argument", name, err)
			}
		}
		err := startErr(t, c, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "no-such-command-paddock"}}))
		wantCode(t, err, connect.CodeInvalidArgument, "executable file not found")
		err = startErr(t, c, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/etc/hostname"}}))
		wantCode(t, err, connect.CodeInvalidArgument, "start process")

		nilSel := "process selector (pid or tag) is required"
		s, err := c.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{}))
		if err == nil {
			for s.Receive() {
			}
			err = s.Err()
		}
		wantCode(t, err, connect.CodeInvalidArgument, nilSel)
		_, err = c.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{}))
		wantCode(t, err, connect.CodeInvalidArgument, nilSel)
		_, err = c.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Signal: pb.Signal_SIGNAL_SIGKILL}))
		wantCode(t, err, connect.CodeInvalidArgument, nilSel)
		_, err = c.Update(ctx, connect.NewRequest(&pb.UpdateRequest{}))
		wantCode(t, err, connect.CodeInvalidArgument, nilSel)
		_, err = c.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: &pb.ProcessSelector{}}))
		wantCode(t, err, connect.CodeInvalidArgument, nilSel)
		in := c.StreamInput(ctx)
		_ = in.Send(&pb.StreamInputRequest{})
		_, err = in.CloseAndReceive()
		wantCode(t, err, connect.CodeInvalidArgument, "without an event")
		f.svc.mu.Lock()
		n := len(f.svc.running)
		f.svc.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d processes left running after rejected requests", n)
		}
	})
}

func TestCloseKillsEverything(t *testing.T) {
	f := newFixture(t)
	c := f.codecs()[0].client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Start(ctx, connect.NewRequest(shell("sleep 300")))
	if err != nil {
		t.Fatal(err)
	}
	ev := newEvents(t, s)
	ev.until("start", func(r *result) bool { return r.pid != 0 })
	pid := int(ev.res.pid)
	f.svc.Close()
	r := ev.finish()
	if r.end.GetStatus() != "signal: killed" {
		t.Fatalf("end after Close: %v", r.end)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("process %d still exists after Close", pid)
	}
	err = startErr(t, c, connect.NewRequest(shell("true")))
	wantCode(t, err, connect.CodeUnavailable, "shutting down")
}
