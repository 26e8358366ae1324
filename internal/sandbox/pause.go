package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// Pausing. A pause freezes the sandbox at once (cgroup freezer: it stops
// using CPU) and records it as paused; a background save then writes it to
// disk through runtime.Checkpoint (memory and processes, or files only) and
// releases its memory. A resume waits for a save in flight, then restores
// the sandbox (or only thaws it, when the save failed and it is still
// frozen). Record.Saved tells which.

// What the runtime holds of a paused sandbox (Record.Saved).
const (
	savedNone   = ""       // frozen in memory: the save is in flight or failed
	savedMemory = "memory" // checkpointed with memory and processes
	savedFiles  = "files"  // checkpointed files only: the resume boots it
)

// Timeouts of the background work.
const (
	saveTimeout    = 10 * time.Minute
	restoreTimeout = 5 * time.Minute
	memCheckWait   = 2 * time.Minute
)

// PauseOptions tune Pause.
type PauseOptions struct {
	// FilesOnly keeps the filesystem only; processes restart on resume
	// (from the template's start command).
	FilesOnly bool
}

// PauseResult says how a sandbox was paused.
type PauseResult struct {
	// FilesOnly: only files are kept; the resume boots the sandbox afresh.
	FilesOnly bool
	// Notice explains why memory was asked for but not kept ("" when it
	// was, or was not asked for).
	Notice string
}

// ResumeOptions tune how a paused sandbox comes back.
type ResumeOptions struct {
	// FilesOnly ignores saved memory and boots the sandbox from its files
	// (E2B's connect with memory=false, "reboot").
	FilesOnly bool
}

// memoryCheck holds the result of the memory snapshot self-test.
type memoryCheck struct {
	done chan struct{}
	err  error // nil: available
}

// checkMemory runs the runtime's checkpoint self-test once, at start.
func (s *Service) checkMemory() {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), memCheckWait)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t0 := time.Now()
	err := s.cfg.Runtime.CheckCheckpoint(ctx)
	s.mem.err = err
	close(s.mem.done)
	if err != nil {
		s.log.Warn("memory snapshots unavailable: pauses and snapshots keep files only (processes restart on resume)", "reason", err.Error())
		return
	}
	s.log.Info("memory snapshots available: pauses and snapshots keep processes and memory", "selfTestMs", time.Since(t0).Milliseconds())
}

// MemorySnapshots reports whether pauses and snapshots keep memory:
// "available", "checking", or "unavailable: <reason>".
func (s *Service) MemorySnapshots() string {
	select {
	case <-s.mem.done:
	default:
		return "checking"
	}
	if s.mem.err != nil {
		return "unavailable: " + s.mem.err.Error()
	}
	return "available"
}

// memoryAvailable waits for the self-test and returns its verdict.
func (s *Service) memoryAvailable(ctx context.Context) error {
	select {
	case <-s.mem.done:
		return s.mem.err
	case <-ctx.Done():
		return fmt.Errorf("the memory snapshot self-test has not finished: %w", ctx.Err())
	}
}

// Pause pauses a running sandbox; ErrConflict when it is already paused.
func (s *Service) Pause(ctx context.Context, team, id string, opts PauseOptions) (PauseResult, error) {
	r, err := s.loadForTeam(ctx, team, id)
	if err != nil {
		return PauseResult{}, err
	}
	if r.State == StatePaused {
		return PauseResult{}, fmt.Errorf("%w: sandbox %s is already paused", ErrConflict, id)
	}
	return s.pause(ctx, id, opts.FilesOnly)
}

func (s *Service) pause(ctx context.Context, id string, filesOnly bool) (PauseResult, error) {
	release, err := s.claim(id)
	if err != nil {
		return PauseResult{}, err
	}
	defer release()
	res := PauseResult{FilesOnly: filesOnly}
	if !filesOnly {
		if err := s.memoryAvailable(ctx); err != nil {
			res.FilesOnly = true
			res.Notice = fmt.Sprintf("memory snapshots are unavailable on this host (%v): sandbox %s was paused with its files only; its processes restart on resume", err, id)
		}
	}
	t0 := s.now()
	if err := s.cfg.Runtime.Pause(ctx, id); err != nil {
		return PauseResult{}, fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	r, err := s.update(ctx, id, func(r *Record) error {
		if r.State != StateRunning {
			return fmt.Errorf("%w: sandbox %s is %s", ErrConflict, id, r.State)
		}
		r.State = StatePaused
		r.Saved = savedNone
		r.PausedFilesOnly = res.FilesOnly
		return nil
	})
	if err != nil {
		_ = s.cfg.Runtime.Resume(ctx, id)
		return PauseResult{}, err
	}
	s.track(r)
	s.startSave(id, res.FilesOnly)
	kind := "memory"
	if res.FilesOnly {
		kind = "files"
	}
	s.event(id, "sandbox paused", "keep", kind)
	s.log.Info("sandbox paused", "sandbox", id, "keep", kind, "ms", s.now().Sub(t0).Milliseconds())
	return res, nil
}

// startSave writes a paused (frozen) sandbox to disk in the background.
func (s *Service) startSave(id string, filesOnly bool) {
	done := make(chan struct{})
	s.mu.Lock()
	if _, ok := s.saving[id]; ok {
		s.mu.Unlock()
		return
	}
	s.saving[id] = done
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.saving, id)
			s.mu.Unlock()
			close(done)
		}()
		s.save(id, filesOnly)
	}()
}

// waitSave waits for the background save of a sandbox, if one runs.
func (s *Service) waitSave(ctx context.Context, id string) error {
	s.mu.Lock()
	done := s.saving[id]
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sandbox %s is being saved: %w", id, ctx.Err())
	}
}

func (s *Service) save(id string, filesOnly bool) {
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	t0 := s.now()
	// Pooled control-plane connections to envd would be saved too.
	s.envd.forget()
	err := s.cfg.Runtime.Checkpoint(ctx, id, runtime.CheckpointOptions{FilesOnly: filesOnly})
	if errors.Is(err, runtime.ErrNotFound) {
		return // killed meanwhile
	}
	if err != nil {
		s.event(id, "saving the paused sandbox failed; it stays frozen in memory", "error", err.Error())
		s.log.Error("save paused sandbox; it stays frozen in memory (resume still works, a restart of paddock keeps it frozen)", "sandbox", id, "err", err)
		return
	}
	kind := savedMemory
	if filesOnly {
		kind = savedFiles
	}
	if _, err := s.update(ctx, id, func(r *Record) error {
		if r.State != StatePaused {
			return fmt.Errorf("%w: sandbox %s is %s", ErrConflict, id, r.State)
		}
		r.Saved = kind
		return nil
	}); err != nil {
		if !isGone(err) && !errors.Is(err, ErrConflict) { // killed or resumed meanwhile: fine
			s.log.Error("record saved sandbox", "sandbox", id, "err", err)
		}
		return
	}
	s.event(id, "paused sandbox saved to disk; memory released", "keep", kind)
	s.log.Info("paused sandbox saved", "sandbox", id, "keep", kind, "ms", s.now().Sub(t0).Milliseconds())
}

// resumeCall is one resume in flight; concurrent resumes of the same
// sandbox wait for it instead of failing.
type resumeCall struct {
	done chan struct{}
	err  error
}

// resume brings a paused sandbox back; concurrent callers share one resume.
func (s *Service) resume(ctx context.Context, id string, opts ResumeOptions) error {
	s.mu.Lock()
	if c := s.resuming[id]; c != nil {
		s.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return fmt.Errorf("wait for the resume of sandbox %s: %w", id, ctx.Err())
		}
	}
	c := &resumeCall{done: make(chan struct{})}
	s.resuming[id] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.resuming, id)
		s.mu.Unlock()
		close(c.done)
	}()
	// The restore runs to its end even if this caller goes away: others
	// may be waiting for it.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	c.err = s.doResume(rctx, id, opts)
	return c.err
}

func (s *Service) doResume(ctx context.Context, id string, opts ResumeOptions) error {
	// A resume waits for an operation in flight (a pause still returning
	// after its record already says paused, a snapshot) instead of failing:
	// traffic to an auto-resume sandbox may arrive at any moment.
	release, err := s.claim(id)
	for errors.Is(err, ErrConflict) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("resume sandbox %s: %w (%w)", id, err, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
		release, err = s.claim(id)
	}
	if err != nil {
		return err
	}
	defer release()
	if err := s.waitSave(ctx, id); err != nil {
		return err
	}
	r, err := s.load(ctx, id)
	if err != nil {
		return err
	}
	switch r.State {
	case StatePaused:
	case StateRunning:
		return nil // resumed meanwhile
	default:
		return fmt.Errorf("%w: sandbox %s is %s", ErrNotFound, id, r.State)
	}
	t0 := s.now()
	boot := r.Saved == savedFiles || (opts.FilesOnly && r.Saved == savedMemory)
	if _, err := s.cfg.Runtime.Restore(ctx, id, runtime.RestoreOptions{FilesOnly: opts.FilesOnly}); err != nil {
		s.event(id, "resume failed; the snapshot is kept", "error", err.Error())
		return fmt.Errorf("resume sandbox %s: %w (its snapshot is kept: retry, or connect with memory=false to boot it from its files)", id, err)
	}
	if boot {
		err = s.boot(ctx, &r)
	} else {
		err = s.envd.waitHealthy(ctx, id)
	}
	if err != nil {
		// Back to paused with what it has on disk now.
		if cerr := s.cfg.Runtime.Checkpoint(context.WithoutCancel(ctx), id, runtime.CheckpointOptions{FilesOnly: true}); cerr != nil {
			s.log.Error("re-save sandbox after a failed resume", "sandbox", id, "err", cerr)
		} else {
			_, _ = s.update(ctx, id, func(r *Record) error { r.Saved = savedFiles; return nil })
		}
		s.event(id, "resume failed", "error", err.Error())
		return fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	r, err = s.update(ctx, id, func(r *Record) error {
		if r.State != StatePaused {
			return fmt.Errorf("%w: sandbox %s is %s", ErrConflict, id, r.State)
		}
		r.State = StateRunning
		r.Saved = savedNone
		r.PausedFilesOnly = false
		if now := s.now().UTC(); r.EndAt.Before(now) {
			r.EndAt = now.Add(defaultResumeTimeout)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.track(r)
	how := "restored"
	if boot {
		how = "booted from its files"
	}
	s.event(id, "sandbox resumed", "how", how)
	s.log.Info("sandbox resumed", "sandbox", id, "how", how, "ms", s.now().Sub(t0).Milliseconds())
	s.running(id)
	return nil
}

// boot brings up a sandbox whose envd started afresh (files-only resume or
// snapshot): /init and the template's start command, as at create.
func (s *Service) boot(ctx context.Context, r *Record) error {
	tpl, err := s.cfg.Templates.Resolve(ctx, r.TemplateID, r.Team)
	if err != nil {
		return fmt.Errorf("template %s of sandbox %s: %w", r.TemplateID, r.ID, err)
	}
	if err := s.envd.waitHealthy(ctx, r.ID); err != nil {
		return err
	}
	if err := s.initEnvd(ctx, r, tpl.Env, ""); err != nil {
		return err
	}
	if tpl.StartCmd != "" || tpl.ReadyCmd != "" {
		return s.startCommand(ctx, r, tpl)
	}
	return nil
}

// adoptPaused brings the runtime side of a paused record in line after a
// restart: a sandbox still frozen in memory (its save never finished) is
// saved again.
func (s *Service) adoptPaused(ctx context.Context, r Record, in runtime.Info) {
	switch in.State {
	case runtime.StateCheckpointed:
		if r.Saved == savedNone {
			kind := savedMemory
			if r.PausedFilesOnly {
				kind = savedFiles
			}
			_, _ = s.update(ctx, r.ID, func(r *Record) error { r.Saved = kind; return nil })
		}
	case runtime.StateRunning:
		if err := s.cfg.Runtime.Pause(ctx, r.ID); err != nil {
			s.log.Error("freeze paused sandbox", "sandbox", r.ID, "err", err)
			return
		}
		fallthrough
	case runtime.StatePaused:
		s.startSave(r.ID, r.PausedFilesOnly)
	}
}

// keyedRW is a set of read-write locks by key.
type keyedRW struct {
	mu sync.Mutex
	m  map[string]*sync.RWMutex
}

func (k *keyedRW) get(key string) *sync.RWMutex {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]*sync.RWMutex{}
	}
	l := k.m[key]
	if l == nil {
		l = &sync.RWMutex{}
		k.m[key] = l
	}
	return l
}

// drop forgets key's lock once nothing uses the key any more.
func (k *keyedRW) drop(key string) {
	k.mu.Lock()
	delete(k.m, key)
	k.mu.Unlock()
}
