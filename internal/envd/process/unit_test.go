package process

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/internal/envd/process/reaper"
)

func TestSubscriberBoundsItsQueue(t *testing.T) {
	s := newSubscriber(1000)
	ev := dataEvent(outStdout, make([]byte, 400))
	for i, wantFull := range []bool{false, false, true} {
		accepted, full := s.push(ev, 400)
		if !accepted || full != wantFull {
			t.Fatalf("push %d: accepted %v full %v, want true %v", i, accepted, full, wantFull)
		}
	}
	// A full subscriber makes producers wait; taking alone does not make
	// room (the events are still in flight), sending them does.
	room := make(chan bool, 1)
	go func() { room <- s.waitRoom(time.Minute, nil) }()
	evs, final, err := s.take()
	if len(evs) != 3 || final || err != nil {
		t.Fatalf("take = %d events, final %v, err %v", len(evs), final, err)
	}
	if got := s.waitRoom(10*time.Millisecond, nil); got {
		t.Fatal("room before anything was sent")
	}
	for _, q := range evs {
		s.sent(q.cost)
	}
	if !<-room {
		t.Fatal("waitRoom reported a stall although the events were sent")
	}

	// Nobody sends: the wait gives up, and the subscriber is dropped.
	for range 3 {
		s.push(ev, 400)
	}
	if s.waitRoom(10*time.Millisecond, nil) {
		t.Fatal("waitRoom returned room although nothing was taken")
	}
	s.drop(10 * time.Millisecond)
	evs, final, err = s.take()
	if len(evs) != 0 || final || connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("after drop: %d events, final %v, err %v; want the queue discarded with resource_exhausted", len(evs), final, err)
	}
	// A dropped subscriber accepts nothing more, not even the end.
	if accepted, _ := s.push(ev, 1); accepted {
		t.Fatal("dropped subscriber accepted data")
	}
	s.finish(&pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: &pb.ProcessEvent_EndEvent{}}})
	if evs, final, _ := s.take(); len(evs) != 0 || final {
		t.Fatal("dropped subscriber accepted the end event")
	}

	// The end event is queued regardless of the limit, and is final.
	s = newSubscriber(100)
	s.push(ev, 400)
	s.finish(&pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: &pb.ProcessEvent_EndEvent{}}})
	if accepted, _ := s.push(ev, 1); accepted {
		t.Fatal("push after the end was accepted")
	}
	if !s.waitRoom(time.Minute, nil) {
		t.Fatal("waitRoom blocked on an ended subscriber")
	}
	if evs, final, err := s.take(); len(evs) != 2 || !final || err != nil {
		t.Fatalf("after finish: %d events, final %v, err %v", len(evs), final, err)
	}

	// Closing abort releases waiting producers.
	s = newSubscriber(100)
	s.push(ev, 400)
	abort := make(chan struct{})
	close(abort)
	if !s.waitRoom(time.Minute, abort) {
		t.Fatal("waitRoom did not return on abort")
	}

	// A detached subscriber releases waiting producers.
	s = newSubscriber(100)
	s.push(ev, 400)
	go s.detach()
	if !s.waitRoom(time.Minute, nil) {
		t.Fatal("waitRoom did not return when the stream detached")
	}
}

// TestExitEventMatchesProcessState compares our rendering of wait statuses
// with Go's own os.ProcessState for real exits and signals.
func TestExitEventMatchesProcessState(t *testing.T) {
	for _, script := range []string{"exit 0", "exit 3", "exit 255", "kill -TERM $$", "kill -KILL $$", "kill -INT $$"} {
		cmd := exec.Command("/bin/sh", "-c", script)
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s: %v", script, err)
		}
		ps := cmd.ProcessState
		got := exitEvent(reaper.Exit{Status: ps.Sys().(syscall.WaitStatus)})
		if got.GetStatus() != ps.String() || got.GetExitCode() != int32(ps.ExitCode()) || got.GetExited() != ps.Exited() {
			t.Errorf("%s: end %v, want status %q exitCode %d exited %v", script, got, ps.String(), ps.ExitCode(), ps.Exited())
		}
		wantErr := ""
		if err != nil {
			wantErr = err.Error()
		}
		if got.GetError() != wantErr {
			t.Errorf("%s: error %q, want cmd.Wait's %q", script, got.GetError(), wantErr)
		}
	}
	got := exitEvent(reaper.Exit{Err: errors.New("wait: no child processes")})
	if got.GetExitCode() != -1 || got.GetExited() || got.GetError() == "" {
		t.Errorf("lost status rendered as %v", got)
	}
}
