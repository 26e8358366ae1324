package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	envdclient "github.com/paddockhq/paddock/internal/envd/client"
	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// CreateRequest is a request to create a sandbox.
type CreateRequest struct {
	Team     string
	Template string
	// Timeout is the lifetime from now; it must be positive.
	Timeout  time.Duration
	Metadata map[string]string
	EnvVars  map[string]string
	// Secure gives the sandbox an envd access token (always true on v2).
	Secure bool
	// Internet allows egress; InternetSet records that the caller chose.
	Internet    bool
	InternetSet bool
	// PublicTraffic false requires the traffic token on non-envd ports.
	PublicTraffic   bool
	MaskRequestHost string
	AutoPause       bool
	AutoResume      bool
	// AutoPauseFilesOnly: the auto-pause keeps files only.
	AutoPauseFilesOnly bool
}

// newRecord is the record of a sandbox created at now for req from tpl;
// the caller sets its state (and times beyond CreatedAt).
func (s *Service) newRecord(id string, req CreateRequest, tpl Template, now time.Time) Record {
	return Record{
		ID:                 id,
		Team:               req.Team,
		TemplateID:         tpl.ID,
		Alias:              tpl.Alias,
		Node:               s.cfg.Node,
		CreatedAt:          now,
		Metadata:           req.Metadata,
		EnvVars:            req.EnvVars,
		CPUs:               tpl.CPUs,
		MemoryMB:           tpl.MemoryMB,
		DiskMB:             tpl.DiskMB,
		EnvdVersion:        tpl.EnvdVersion,
		Secure:             req.Secure,
		Internet:           req.Internet,
		InternetSet:        req.InternetSet,
		PublicTraffic:      req.PublicTraffic,
		MaskRequestHost:    req.MaskRequestHost,
		AutoPause:          req.AutoPause,
		AutoResume:         req.AutoResume,
		AutoPauseFilesOnly: req.AutoPauseFilesOnly,
		User:               tpl.User,
		Workdir:            tpl.Workdir,
	}
}

// createTimeout bounds how long a create may take end to end.
const createTimeout = 45 * time.Second

// Create starts a sandbox and returns once envd inside has accepted /init.
// On error nothing of the sandbox remains.
func (s *Service) Create(ctx context.Context, req CreateRequest) (Record, error) {
	if req.Timeout <= 0 {
		return Record{}, fmt.Errorf("%w: timeout must be positive", ErrInvalid)
	}
	if req.Timeout > s.cfg.MaxTimeout {
		return Record{}, fmt.Errorf("%w: timeout %s exceeds the maximum of %s", ErrInvalid, req.Timeout, s.cfg.MaxTimeout)
	}
	if req.AutoResume && !req.AutoPause {
		return Record{}, fmt.Errorf("%w: autoResume requires autoPause", ErrInvalid)
	}
	if req.AutoResume && req.AutoPauseFilesOnly {
		return Record{}, fmt.Errorf("%w: autoResume needs a memory snapshot (autoPauseMemory must not be false)", ErrInvalid)
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return Record{}, fmt.Errorf("%w: %v", ErrNotReady, ctx.Err())
	}
	// A snapshot of the team's, by ID or name, comes before templates.
	if sn, err := s.findSnapshot(ctx, req.Team, req.Template); err == nil {
		return s.createFromSnapshot(ctx, req, sn)
	} else if !errors.Is(err, ErrNotFound) {
		return Record{}, err
	}
	var ph createPhases
	ph.mark(&ph.begin)
	tpl, err := s.cfg.Templates.Resolve(ctx, req.Template, req.Team)
	if err != nil {
		return Record{}, err
	}
	ph.mark(&ph.resolved)
	ctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	if rec, ok := s.takePooled(ctx, req, tpl); ok {
		s.running(rec.ID)
		return rec, nil
	}

	now := s.now().UTC()
	rec := s.newRecord(s.cfg.NewID(), req, tpl, now)
	rec.State = StateCreating
	raw, err := json.Marshal(rec)
	if err != nil {
		return Record{}, err
	}
	release, err := s.claim(rec.ID)
	if err != nil {
		return Record{}, err
	}
	defer release()
	// The record (state creating) is written while the runtime creates the
	// sandbox: a durable write mostly waits on the disk, the runtime mostly
	// on the CPU. A crash mid-create leaves a record still creating, or
	// runtime state without a record: the next Start reaps either.
	recorded := make(chan error, 1)
	go func() {
		t0 := time.Now()
		err := s.cfg.Store.Apply(ctx, store.Op{Collection: Collection, Key: rec.ID, Value: raw, Cond: store.IfAbsent})
		if err != nil {
			err = fmt.Errorf("record sandbox %s: %w", rec.ID, err)
		}
		ph.recordWrite = time.Since(t0) // read after <-recorded
		recorded <- err
	}()

	started, err := s.start(ctx, &rec, tpl, &ph, nil)
	if recErr := <-recorded; recErr != nil {
		if !errors.As(err, new(nothingCreated)) {
			// Only what this create made goes: the runtime state (the
			// record under this ID, if any, is not this create's).
			s.destroyRuntime(rec.ID)
		}
		return Record{}, recErr
	}
	if err != nil {
		s.discard(rec.ID)
		return Record{}, err
	}
	rec.State = StateRunning
	rec.StartedAt = started
	rec.EndAt = started.Add(req.Timeout)
	raw, _ = json.Marshal(rec)
	if err := s.cfg.Store.Apply(ctx, store.Op{Collection: Collection, Key: rec.ID, Value: raw, Cond: store.IfPresent}); err != nil {
		s.discard(rec.ID)
		return Record{}, fmt.Errorf("record running sandbox %s: %w", rec.ID, err)
	}
	ph.mark(&ph.updated)
	s.track(rec)
	ph.log(s.log, rec.ID)
	s.event(rec.ID, "sandbox created", "templateID", rec.TemplateID)
	s.log.Info("sandbox created", "sandbox", rec.ID, "template", rec.TemplateID, "team", rec.Team, "ms", s.now().Sub(now).Milliseconds())
	s.running(rec.ID)
	return rec, nil
}

// running tells Config.Running that sandbox id now runs for a client.
func (s *Service) running(id string) {
	if s.cfg.Running != nil {
		s.cfg.Running(id)
	}
}

// start creates the runtime sandbox, waits for envd and initialises it.
// labels default to the record's team and template.
func (s *Service) start(ctx context.Context, rec *Record, tpl Template, ph *createPhases, labels map[string]string) (time.Time, error) {
	if labels == nil {
		labels = map[string]string{"team": rec.Team, "template": rec.TemplateID}
	}
	spec := runtime.Spec{
		ID:     rec.ID,
		Layers: tpl.Layers,
		Resources: runtime.Resources{
			CPUs:        float64(tpl.CPUs),
			MemoryBytes: int64(tpl.MemoryMB) << 20,
			Pids:        pidsLimit,
		},
		Network: runtime.Network{Internet: rec.Internet},
		Labels:  labels,
	}
	if _, err := s.cfg.Runtime.Create(ctx, spec); err != nil {
		return time.Time{}, nothingCreated{fmt.Errorf("create sandbox %s: %w", rec.ID, err)}
	}
	ph.mark(&ph.created)
	if err := s.envd.waitHealthy(ctx, rec.ID); err != nil {
		return time.Time{}, err
	}
	ph.mark(&ph.healthy)
	if err := s.initEnvd(ctx, rec, tpl.Env, ""); err != nil {
		return time.Time{}, err
	}
	ph.mark(&ph.initialised)
	if tpl.StartCmd != "" || tpl.ReadyCmd != "" {
		if err := s.startCommand(ctx, rec, tpl); err != nil {
			return time.Time{}, err
		}
	}
	return s.now().UTC(), nil
}

// startCommand starts the template's start command in the sandbox (it
// keeps running, as the template's user) and waits until its ready command
// exits 0, within the create's deadline.
func (s *Service) startCommand(ctx context.Context, rec *Record, tpl Template) error {
	c := s.commandClient(rec)
	defer c.Close()
	t0 := s.now()
	err := c.StartAndWait(ctx, envdclient.StartSpec{Start: tpl.StartCmd, Ready: tpl.ReadyCmd, User: rec.User, Workdir: rec.Workdir})
	if err != nil {
		return fmt.Errorf("sandbox %s of template %s: %w", rec.ID, tpl.ID, err)
	}
	s.event(rec.ID, "start command running", "startCmd", tpl.StartCmd)
	s.log.Debug("start command ready", "sandbox", rec.ID, "ms", s.now().Sub(t0).Milliseconds())
	return nil
}

// commandClient is an envd client for running commands in rec's sandbox,
// with its access token when it is secure. Close it after use.
func (s *Service) commandClient(rec *Record) *envdclient.Client {
	tok := ""
	if rec.Secure {
		tok = s.EnvdToken(rec.ID)
	}
	return envdclient.New(func(ctx context.Context) (net.Conn, error) {
		return s.cfg.Runtime.Dial(ctx, rec.ID, runtime.EnvdPort)
	}, tok)
}

// nothingCreated marks a start that failed before the runtime made
// anything (its Create cleans up after itself).
type nothingCreated struct{ err error }

func (e nothingCreated) Error() string { return e.err.Error() }
func (e nothingCreated) Unwrap() error { return e.err }

// destroyRuntime removes the runtime state of a sandbox (not its record).
func (s *Service) destroyRuntime(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.cfg.Runtime.Destroy(ctx, id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		s.log.Error("destroy sandbox", "sandbox", id, "err", err)
	}
}

// createPhases times the steps of one Create for the debug log line
// "sandbox create phases" (bench/ reads it for the create-path breakdown).
// A nil *createPhases records nothing.
type createPhases struct {
	begin, resolved, created, healthy, initialised, updated time.Time
	recordWrite                                             time.Duration // alongside runtime.Create
}

func (p *createPhases) mark(t *time.Time) {
	if p != nil {
		*t = time.Now()
	}
}

func (p *createPhases) log(log *slog.Logger, id string) {
	if p == nil || !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	log.Debug("sandbox create phases", "sandbox", id,
		"resolve", p.resolved.Sub(p.begin), "recordWrite", p.recordWrite,
		"runtime", p.created.Sub(p.resolved), "envd", p.healthy.Sub(p.created),
		"init", p.initialised.Sub(p.healthy), "update", p.updated.Sub(p.initialised),
		"total", p.updated.Sub(p.begin))
}

// pidsLimit caps tasks per sandbox so a fork bomb stays contained.
const pidsLimit = 1024

// initEnvd sends /init with the sandbox's environment, token and defaults.
func (s *Service) initEnvd(ctx context.Context, rec *Record, templateEnv map[string]string, currentToken string) error {
	env := map[string]string{}
	for k, v := range templateEnv {
		env[k] = v
	}
	for k, v := range rec.EnvVars {
		env[k] = v
	}
	env["E2B_SANDBOX"] = "true"
	env["E2B_SANDBOX_ID"] = rec.ID
	env["E2B_TEMPLATE_ID"] = rec.TemplateID
	body := initBody{
		EnvVars:        env,
		Timestamp:      s.now().UTC(),
		DefaultUser:    rec.User,
		DefaultWorkdir: rec.Workdir,
	}
	if rec.Secure {
		tok := s.EnvdToken(rec.ID)
		body.AccessToken = &tok
	}
	return s.envd.init(ctx, rec.ID, body, currentToken)
}

// discard removes every trace of a sandbox: runtime state and record.
func (s *Service) discard(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.cfg.Runtime.Destroy(ctx, id); err != nil {
		s.log.Error("destroy sandbox", "sandbox", id, "err", err)
	}
	if err := store.Delete(ctx, s.cfg.Store, Collection, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("delete sandbox record", "sandbox", id, "err", err)
	}
	s.untrack(id)
	s.metrics.forget(id)
	s.events.forget(id)
}
