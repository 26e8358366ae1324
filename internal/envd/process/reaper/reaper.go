// Package reaper owns the exit statuses of the child processes envd starts,
// and, when envd is PID 1, the reaping of every orphan that the kernel
// re-parents to it.
//
// A Reaper works in one of two modes:
//
//   - Global (envd is PID 1 in a sandbox): one goroutine waits for SIGCHLD and
//     reaps every exited child with wait4(-1, WNOHANG). Statuses of registered
//     children go to their owner; the rest are orphans and are discarded.
//   - Per-pid (envd is an ordinary process, e.g. in tests): each registered
//     child is waited for by its own goroutine; nothing else is touched.
//
// In both modes a child is forked and registered under one mutex, and it is
// reaped under the same mutex, so a status can never be reaped before its
// owner is registered, and a signal sent through Signal can never hit a
// recycled pid.
package reaper

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotRunning is returned by Signal when the child has already been reaped
// (or was never started by this Reaper).
var ErrNotRunning = errors.New("process is not running")

// ErrGlobalActive is returned by New when a global Reaper already runs in
// this process: only one may call wait4(-1).
var ErrGlobalActive = errors.New("a global reaper is already active in this process")

// Exit is how a registered child ended.
type Exit struct {
	// Status is the wait status returned by the kernel.
	Status syscall.WaitStatus
	// Err is set when the status could not be collected (the status is then
	// meaningless).
	Err error
}

// globalActive guards the one-global-reaper-per-process rule.
var (
	globalMu     sync.Mutex
	globalActive bool
)

// Reaper collects the exit statuses of children. Create it with New and stop
// it with Close.
type Reaper struct {
	global bool
	log    *slog.Logger

	mu      sync.Mutex // held across fork+register, reaping and signalling
	waiting map[int]chan Exit
	closed  bool
	drained chan struct{} // set by Close; closed when waiting empties

	stop chan struct{}
	wg   sync.WaitGroup // the SIGCHLD loop and the per-pid waiters
}

// New returns a Reaper. With global set it reaps every child of the process
// (use it only when the process is PID 1 or a child subreaper, and when no
// other code in the process waits for its own children).
func New(global bool, log *slog.Logger) (*Reaper, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reaper{
		global:  global,
		log:     log,
		waiting: map[int]chan Exit{},
		stop:    make(chan struct{}),
	}
	if !global {
		return r, nil
	}
	globalMu.Lock()
	defer globalMu.Unlock()
	if globalActive {
		return nil, ErrGlobalActive
	}
	globalActive = true
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	r.wg.Add(1)
	go r.loop(sigs)
	return r, nil
}

// Global reports whether r reaps every child of the process.
func (r *Reaper) Global() bool { return r.global }

// Start runs fork (which must start exactly one child and return its pid)
// with the registry locked and registers the child before any status can be
// reaped. The returned channel receives the child's Exit exactly once.
// If fork fails, its error is returned and nothing is registered.
func (r *Reaper) Start(fork func() (int, error)) (int, <-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, nil, errors.New("reaper is closed")
	}
	pid, err := fork()
	if err != nil {
		return 0, nil, err
	}
	if pid <= 0 {
		return 0, nil, fmt.Errorf("fork returned invalid pid %d", pid)
	}
	ch := make(chan Exit, 1)
	r.waiting[pid] = ch
	if !r.global {
		r.wg.Add(1)
		go r.waitPid(pid)
	}
	return pid, ch, nil
}

// Signal sends sig to the registered child pid, or to its whole process group
// (kill(-pid)) when group is set; the child must lead its group. It returns
// ErrNotRunning once the child has been reaped, so a recycled pid is never
// signalled.
func (r *Reaper) Signal(pid int, sig syscall.Signal, group bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiting[pid]; !ok {
		return ErrNotRunning
	}
	target := pid
	if group {
		target = -pid
	}
	err := syscall.Kill(target, sig)
	if errors.Is(err, syscall.ESRCH) && group {
		// The group is gone but the leader is still unreaped (a zombie
		// that left its group cannot happen; be lenient anyway).
		err = syscall.Kill(pid, sig)
	}
	if err != nil {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	return nil
}

// Close kills (SIGKILL, whole group) every child still registered, waits for
// their statuses to be collected and stops the SIGCHLD loop. Children started
// afterwards are refused.
func (r *Reaper) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	for pid := range r.waiting {
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	var drained chan struct{}
	if len(r.waiting) > 0 {
		drained = make(chan struct{})
		r.drained = drained
	}
	r.mu.Unlock()
	if drained != nil {
		<-drained // the loop or the per-pid waiters collect the killed children
	}
	close(r.stop)
	r.wg.Wait()
	if r.global {
		globalMu.Lock()
		globalActive = false
		globalMu.Unlock()
	}
}

// loop is the global mode's SIGCHLD loop.
func (r *Reaper) loop(sigs chan os.Signal) {
	defer r.wg.Done()
	defer signal.Stop(sigs)
	r.reapAll() // children that exited before Notify took effect
	for {
		select {
		case <-sigs:
			r.reapAll()
		case <-r.stop:
			r.reapAll()
			return
		}
	}
}

// reapAll collects every exited child without blocking.
func (r *Reaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.deliverLocked(pid, Exit{Status: ws})
	}
}

// waitPid is the per-pid mode's waiter: it blocks until pid has exited
// without reaping it (WNOWAIT), then reaps it with the registry locked.
func (r *Reaper) waitPid(pid int) {
	defer r.wg.Done()
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			r.mu.Lock()
			r.deliverLocked(pid, Exit{Err: fmt.Errorf("wait for %d: %w", pid, err)})
			r.mu.Unlock()
			return
		}
		break
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		switch {
		case err != nil:
			r.deliverLocked(pid, Exit{Err: fmt.Errorf("reap %d: %w", pid, err)})
		case got == pid:
			r.deliverLocked(pid, Exit{Status: ws})
		default:
			// waitid said it exited; wait4 must find it. Treat as lost.
			r.deliverLocked(pid, Exit{Err: fmt.Errorf("reap %d: no status", pid)})
		}
		return
	}
}

// deliverLocked hands a status to the registered owner of pid; statuses of
// unregistered pids are orphans and are dropped. r.mu must be held.
func (r *Reaper) deliverLocked(pid int, e Exit) {
	ch, ok := r.waiting[pid]
	if !ok {
		r.log.Debug("reaped orphan", "pid", pid, "status", int(e.Status))
		return
	}
	delete(r.waiting, pid)
	ch <- e // buffered, delivered exactly once
	if r.drained != nil && len(r.waiting) == 0 {
		close(r.drained)
		r.drained = nil
	}
}
