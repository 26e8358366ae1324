package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// Start reconciles the store with the runtime (adopting what survived a
// restart, reaping what cannot be adopted) and starts the background loops.
// Creates wait until it has finished.
func (s *Service) Start(ctx context.Context) error {
	if err := s.recover(ctx); err != nil {
		return err
	}
	if err := s.cleanSnapshotDir(ctx); err != nil {
		return err
	}
	close(s.ready)
	s.wg.Add(3)
	go s.expiryLoop()
	go s.sampleLoop()
	go s.checkMemory()
	if s.pool != nil {
		s.wg.Add(1)
		go s.poolLoop()
	}
	return nil
}

// Close stops the background loops and waits for saves of paused
// sandboxes in flight. Sandboxes keep running; those of the warm pool,
// which no one was given, are destroyed.
func (s *Service) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
	s.closePool()
	s.envd.forget()
}

func (s *Service) track(r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.State == StateRunning && r.Node == s.cfg.Node {
		s.deadline[r.ID] = r.EndAt
	} else {
		delete(s.deadline, r.ID)
	}
}

func (s *Service) untrack(id string) {
	s.mu.Lock()
	delete(s.deadline, id)
	s.mu.Unlock()
}

// recover adopts sandboxes of this node that still run and reaps the rest.
func (s *Service) recover(ctx context.Context) error {
	recs, err := s.cfg.Store.List(ctx, Collection)
	if err != nil {
		return fmt.Errorf("list sandbox records: %w", err)
	}
	infos, err := s.cfg.Runtime.List(ctx)
	if err != nil {
		return fmt.Errorf("list runtime sandboxes: %w", err)
	}
	live := map[string]runtime.Info{}
	for _, in := range infos {
		live[in.ID] = in
	}
	known := map[string]bool{}
	adopted, reaped := 0, 0
	for _, kv := range recs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			s.log.Error("undecodable sandbox record; removing", "key", kv.Key, "err", err)
			_ = store.Delete(ctx, s.cfg.Store, Collection, kv.Key)
			continue
		}
		if r.Node != s.cfg.Node {
			continue // another replica's sandbox
		}
		known[r.ID] = true
		in, ok := live[r.ID]
		switch {
		case r.State == StateRunning && ok && in.State == runtime.StateRunning:
			s.track(r)
			adopted++
		case r.State == StatePaused && ok && (in.State == runtime.StatePaused || in.State == runtime.StateRunning ||
			in.State == runtime.StateCheckpointed):
			s.adoptPaused(ctx, r, in)
			s.track(r)
			adopted++
		case r.State == StateRunning && ok && in.State == runtime.StateCheckpointed:
			// Saved by a pause whose record update was lost: paused it is.
			if r, err := s.update(ctx, r.ID, func(r *Record) error {
				r.State, r.Saved = StatePaused, savedMemory
				return nil
			}); err == nil {
				s.track(r)
			}
			adopted++
		default:
			s.log.Warn("reaping sandbox that cannot be adopted", "sandbox", r.ID, "record", r.State, "runtime", in.State, "present", ok)
			s.discard(r.ID)
			reaped++
		}
	}
	for id, in := range live {
		if !known[id] {
			if in.Labels[poolLabel] != "" {
				// Started for the warm pool and never taken: no one knows it.
				s.log.Info("destroying pooled sandbox left by a previous run", "sandbox", id)
			} else {
				s.log.Warn("reaping runtime sandbox without record", "sandbox", id)
			}
			if err := s.cfg.Runtime.Destroy(ctx, id); err != nil {
				s.log.Error("destroy orphan sandbox", "sandbox", id, "err", err)
			}
			reaped++
		}
	}
	s.log.Info("sandboxes recovered", "adopted", adopted, "reaped", reaped)
	return nil
}

// Get returns a sandbox visible to team.
func (s *Service) Get(ctx context.Context, team, id string) (Record, error) {
	return s.loadForTeam(ctx, team, id)
}

// Kill destroys a sandbox and removes its record.
func (s *Service) Kill(ctx context.Context, team, id string) error {
	if _, err := s.loadForTeam(ctx, team, id); err != nil {
		return err
	}
	release, err := s.claim(id)
	if err != nil {
		return err
	}
	defer release()
	if _, err := s.update(ctx, id, func(r *Record) error {
		if r.State == StateKilling {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		r.State = StateKilling
		return nil
	}); err != nil {
		return err
	}
	s.untrack(id)
	s.discard(id)
	s.log.Info("sandbox killed", "sandbox", id)
	return nil
}

// SetTimeout sets the end time to now + d; it can shorten or extend.
func (s *Service) SetTimeout(ctx context.Context, team, id string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%w: timeout must be positive", ErrInvalid)
	}
	if d > s.cfg.MaxTimeout {
		return fmt.Errorf("%w: timeout %s exceeds the maximum of %s", ErrInvalid, d, s.cfg.MaxTimeout)
	}
	if _, err := s.loadForTeam(ctx, team, id); err != nil {
		return err
	}
	r, err := s.update(ctx, id, func(r *Record) error {
		if r.State == StateKilling {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		r.EndAt = s.now().UTC().Add(d)
		return nil
	})
	if err != nil {
		return err
	}
	s.track(r)
	s.event(id, "timeout set", "endAt", r.EndAt.Format(time.RFC3339))
	return nil
}

// Connect returns a running sandbox, resuming it when paused (resumed is
// then true), and extends (never shortens) its end time to now + d.
func (s *Service) Connect(ctx context.Context, team, id string, d time.Duration, opts ResumeOptions) (rec Record, resumed bool, err error) {
	if d < 0 {
		return Record{}, false, fmt.Errorf("%w: timeout must not be negative", ErrInvalid)
	}
	if d > s.cfg.MaxTimeout {
		return Record{}, false, fmt.Errorf("%w: timeout %s exceeds the maximum of %s", ErrInvalid, d, s.cfg.MaxTimeout)
	}
	r, err := s.loadForTeam(ctx, team, id)
	if err != nil {
		return Record{}, false, err
	}
	if r.State == StatePaused {
		if err := s.resume(ctx, id, opts); err != nil {
			return Record{}, false, err
		}
		resumed = true
	}
	r, err = s.update(ctx, id, func(r *Record) error {
		if r.State != StateRunning {
			return fmt.Errorf("%w: sandbox %s is %s", ErrConflict, id, r.State)
		}
		if end := s.now().UTC().Add(d); end.After(r.EndAt) {
			r.EndAt = end
		}
		return nil
	})
	if err != nil {
		return Record{}, false, err
	}
	s.track(r)
	return r, resumed, nil
}

// Resume resumes a paused sandbox (the deprecated resume route) and sets
// its timeout to d when positive.
func (s *Service) Resume(ctx context.Context, team, id string, d time.Duration, opts ResumeOptions) (Record, error) {
	r, err := s.loadForTeam(ctx, team, id)
	if err != nil {
		return Record{}, err
	}
	if r.State != StatePaused {
		return Record{}, fmt.Errorf("%w: sandbox %s is not paused", ErrConflict, id)
	}
	if err := s.resume(ctx, id, opts); err != nil {
		return Record{}, err
	}
	if d > 0 {
		if err := s.SetTimeout(ctx, team, id, d); err != nil {
			return Record{}, err
		}
	}
	return s.loadForTeam(ctx, team, id)
}

// defaultResumeTimeout is the lifetime a resumed sandbox gets when its
// end time already passed while paused.
const defaultResumeTimeout = 5 * time.Minute

// expiryLoop kills (or pauses, with autoPause) sandboxes past their end time.
func (s *Service) expiryLoop() {
	defer s.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := s.now()
		var due []string
		s.mu.Lock()
		for id, end := range s.deadline {
			if !now.Before(end) && !s.busy[id] {
				due = append(due, id)
			}
		}
		s.mu.Unlock()
		for _, id := range due {
			s.expire(id)
		}
	}
}

func (s *Service) expire(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := s.load(ctx, id)
	if errors.Is(err, ErrNotFound) {
		s.untrack(id)
		return
	}
	if err != nil {
		s.log.Error("expire: load", "sandbox", id, "err", err)
		return
	}
	if r.State != StateRunning || s.now().Before(r.EndAt) {
		s.track(r) // changed meanwhile (timeout extended, paused, ...)
		return
	}
	if r.AutoPause {
		res, err := s.pause(ctx, id, r.AutoPauseFilesOnly)
		if err != nil {
			s.log.Error("auto-pause", "sandbox", id, "err", err)
			return
		}
		if res.Notice != "" {
			s.event(id, res.Notice)
		}
		s.log.Info("sandbox auto-paused at its timeout", "sandbox", id)
		return
	}
	if err := s.Kill(ctx, r.Team, id); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Error("expire: kill", "sandbox", id, "err", err)
		return
	}
	s.log.Info("sandbox expired", "sandbox", id)
}

// isGone reports whether err means the store or runtime no longer has it.
func isGone(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, store.ErrNotFound) || errors.Is(err, runtime.ErrNotFound)
}
