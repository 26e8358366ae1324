package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	envdclient "github.com/paddockhq/paddock/internal/envd/client"
	"github.com/paddockhq/paddock/internal/store"
)

// The warm pool. With Config.PoolSize (or Config.Pools) the service keeps
// started sandboxes ready per template: runtime created, envd healthy,
// /init done (with an access token) and the template's start command
// ready. A pooled sandbox has its ID reserved but no record: it lives only
// in this service's memory and in the runtime, so no API path (get, list,
// metrics, the proxy, template use counts) sees it, and the expiry loop
// does not know it. After a crash the runtime still has it without a
// record, and Start reaps it like any other orphan.
//
// Create takes one when the request is compatible (see poolCompatible) and
// the template resolves to the same build (templateKey): it is removed from
// the pool under the pool's lock (one taker only), envd gets /init again
// with the request's environment and token (unless the request changes
// nothing of what the fill gave it), and its record is written as running,
// tracked for expiry like any other. On any failure it is destroyed in the
// background and the create goes the cold path; the caller never sees the
// difference. One goroutine refills the pool, one sandbox at a time, a
// moment after takes (refillWait), with backoff on errors; every
// poolRecheck it re-resolves the templates (replacing sandboxes of rebuilt
// or deleted ones) and checks the pooled envds. Close stops it and
// destroys what is pooled.

// DefaultPoolTemplate is the template Config.PoolSize applies to: the
// SDKs' default template.
const DefaultPoolTemplate = "base"

// poolLabel marks runtime sandboxes created for the pool (informational:
// the record, written at take, is what makes a sandbox a user's).
const poolLabel = "paddock.pool"

// Timing of the refill loop.
const (
	poolRecheck     = 10 * time.Second // re-resolve templates, check pooled envds, this often
	poolHealthWait  = 2 * time.Second  // a pooled envd not healthy within this is replaced
	poolResolveWait = time.Second      // a template still building answers "not ready" after this
	poolNotReady    = 2 * time.Second  // retry a template still building after this
	poolBackoffMin  = time.Second
	poolBackoffMax  = time.Minute
	poolTakeInit    = 10 * time.Second // bound on the /init of a take

	poolRefillQuiet   = 150 * time.Millisecond // refill this long after the last take…
	poolRefillMaxWait = time.Second            // …or this long after the first one
)

// pool is the warm pool's state; Service.pool guards it with its own lock.
type pool struct {
	mu      sync.Mutex
	targets []*poolTarget
	ready   []pooled // oldest first
	trash   []string // sandboxes to destroy (stale, or a take failed)
	closed  bool
	wake    chan struct{} // capacity 1: something was taken or trashed

	// Takes not refilled yet: the first and the last (refillWait).
	firstTake, lastTake time.Time

	recheck time.Duration // poolRecheck (tests shorten it)
}

// poolTarget is one template the pool keeps sandboxes of.
type poolTarget struct {
	ref  string
	size int

	// Owned by the refill loop.
	tpl     Template
	key     string // fingerprint of tpl; "" until resolved
	retryAt time.Time
	backoff time.Duration
	lastErr string // last resolve error logged (not repeated)
}

// pooled is one ready sandbox.
type pooled struct {
	id         string
	ref        string // the target that filled it
	templateID string
	key        string // fingerprint of the template (build) it was started from
	at         time.Time
}

// newPool builds the pool of a config; nil when it is off.
func newPool(cfg Config) (*pool, error) {
	sizes := map[string]int{}
	if cfg.PoolSize < 0 {
		return nil, fmt.Errorf("pool size must not be negative (got %d)", cfg.PoolSize)
	}
	if cfg.PoolSize > 0 {
		sizes[DefaultPoolTemplate] = cfg.PoolSize
	}
	for ref, n := range cfg.Pools {
		if n < 0 || strings.TrimSpace(ref) == "" {
			return nil, fmt.Errorf("pool of template %q: size %d: want a template and a size ≥ 0", ref, n)
		}
		sizes[ref] = n // overrides PoolSize for the same reference
	}
	for ref, n := range sizes {
		if n == 0 {
			delete(sizes, ref)
		}
	}
	if len(sizes) == 0 {
		return nil, nil
	}
	p := &pool{wake: make(chan struct{}, 1), recheck: poolRecheck}
	for ref, n := range sizes {
		p.targets = append(p.targets, &poolTarget{ref: ref, size: n})
	}
	sort.Slice(p.targets, func(i, j int) bool { return p.targets[i].ref < p.targets[j].ref })
	return p, nil
}

// templateKey fingerprints everything of a template a started sandbox
// depends on: its ID and build (layers), limits, user, workdir,
// environment and start/ready commands.
func templateKey(t Template) string {
	raw, _ := json.Marshal(t) // maps marshal with sorted keys
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// poolCompatible reports whether a create can be served by a sandbox
// started for the pool from tpl. A pooled sandbox has egress (the runtime
// network is fixed at creation) and its start command already runs with
// the pool's environment; everything else a request sets lives in the
// record (team, metadata, timeout, auto-pause/resume, public traffic,
// masked host) or is given to envd at take (environment, access token or
// none).
func poolCompatible(req CreateRequest, tpl Template) bool {
	if !req.Internet {
		return false
	}
	if len(req.EnvVars) > 0 && (tpl.StartCmd != "" || tpl.ReadyCmd != "") {
		return false // the running start command would not see them
	}
	return true
}

func (p *pool) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// pop removes and returns a ready sandbox of template key (the oldest);
// stale says that there are some of the template's ID with another key.
func (p *pool) pop(templateID, key string) (e pooled, ok, stale bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return pooled{}, false, false
	}
	for i, e := range p.ready {
		if e.key != key {
			stale = stale || e.templateID == templateID
			continue
		}
		p.ready = append(p.ready[:i:i], p.ready[i+1:]...)
		now := time.Now()
		if p.firstTake.IsZero() {
			p.firstTake = now
		}
		p.lastTake = now
		return e, true, false
	}
	return pooled{}, false, stale
}

// refillWait is how long a refill should still wait: a sandbox just taken
// is about to run its owner's first commands, which a refill (a sandbox
// start, CPU-heavy) would slow down. Refills wait for poolRefillQuiet
// after the last take, but never more than poolRefillMaxWait after the
// first take not refilled yet.
func (p *pool) refillWait(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastTake.IsZero() {
		return 0
	}
	return max(0, min(p.lastTake.Add(poolRefillQuiet).Sub(now), p.firstTake.Add(poolRefillMaxWait).Sub(now)))
}

// refilled resets the takes waiting for a refill.
func (p *pool) refilled() {
	p.mu.Lock()
	p.firstTake, p.lastTake = time.Time{}, time.Time{}
	p.mu.Unlock()
}

// put adds a started sandbox; false when the pool is closed (the caller
// destroys it).
func (p *pool) put(e pooled) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.ready = append(p.ready, e)
	return true
}

// discardWhere moves the ready sandboxes matching fn to the trash.
func (p *pool) discardWhere(fn func(pooled) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.ready[:0:0]
	n := 0
	for _, e := range p.ready {
		if fn(e) {
			p.trash = append(p.trash, e.id)
			n++
		} else {
			keep = append(keep, e)
		}
	}
	p.ready = keep
	if n > 0 {
		p.signal()
	}
	return n
}

func (p *pool) toTrash(id string) {
	p.mu.Lock()
	p.trash = append(p.trash, id)
	p.mu.Unlock()
	p.signal()
}

func (p *pool) takeTrash() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.trash
	p.trash = nil
	return t
}

func (p *pool) count(ref, key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.ready {
		if e.ref == ref && e.key == key {
			n++
		}
	}
	return n
}

// close marks the pool closed and returns every sandbox it holds.
func (p *pool) close() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	ids := p.trash
	for _, e := range p.ready {
		ids = append(ids, e.id)
	}
	p.ready, p.trash = nil, nil
	return ids
}

// takePooled serves a create from the pool when it can: ok is false when
// the request goes the cold path (pool off, incompatible, empty, or the
// pooled sandbox failed to take the request, in which case it is thrown
// away).
func (s *Service) takePooled(ctx context.Context, req CreateRequest, tpl Template) (Record, bool) {
	p := s.pool
	if p == nil || !poolCompatible(req, tpl) {
		return Record{}, false
	}
	e, ok, stale := p.pop(tpl.ID, templateKey(tpl))
	if !ok {
		if stale {
			p.signal() // the template changed: the refiller replaces them
		}
		return Record{}, false // none ready of this template and build
	}
	t0 := s.now()
	rec, ph, err := s.adoptPooled(ctx, e, req, tpl)
	// Refill once the take is done: a refill started before it competes
	// with it for the CPUs and the disk (its record's fdatasyncs).
	p.signal()
	if err != nil {
		s.log.Warn("taking a pooled sandbox failed; destroying it, cold create instead", "sandbox", e.id, "template", tpl.ID, "err", err)
		p.toTrash(e.id)
		return Record{}, false
	}
	s.event(rec.ID, "sandbox created", "templateID", rec.TemplateID, "pool", "true")
	s.log.Info("sandbox created", "sandbox", rec.ID, "template", rec.TemplateID, "team", rec.Team,
		"pool", true, "pooledFor", t0.Sub(e.at).Round(time.Millisecond).String(), "init", ph.init, "record", ph.record,
		"ms", float64(s.now().Sub(t0).Microseconds())/1000)
	return rec, true
}

// takePhases times a take for its log line.
type takePhases struct{ init, record time.Duration }

// adoptPooled gives a pooled sandbox to a request: envd's /init with the
// request's environment and token (proving the pool's), then the record.
func (s *Service) adoptPooled(ctx context.Context, e pooled, req CreateRequest, tpl Template) (Record, takePhases, error) {
	var ph takePhases
	now := s.now().UTC()
	rec := s.newRecord(e.id, req, tpl, now)
	rec.State = StateRunning
	rec.StartedAt, rec.EndAt = now, now.Add(req.Timeout)
	t0 := time.Now()
	// A secure request without environment variables finds envd as /init
	// left it at the fill: the template's environment and E2B_* (same ID
	// and template), the token derived from the ID, the template's user
	// and workdir. Anything else is given to envd now; a request without
	// secure gets no token (an /init without one clears it).
	if len(req.EnvVars) > 0 || !req.Secure {
		ictx, cancel := context.WithTimeout(ctx, poolTakeInit)
		err := s.initEnvd(ictx, &rec, tpl.Env, s.EnvdToken(e.id))
		cancel()
		if err != nil {
			return Record{}, ph, err
		}
	}
	t1 := time.Now()
	ph.init = t1.Sub(t0)
	raw, err := json.Marshal(rec)
	if err != nil {
		return Record{}, ph, err
	}
	if err := s.cfg.Store.Apply(ctx, store.Op{Collection: Collection, Key: rec.ID, Value: raw, Cond: store.IfAbsent}); err != nil {
		return Record{}, ph, fmt.Errorf("record sandbox %s: %w", rec.ID, err)
	}
	ph.record = time.Since(t1)
	s.track(rec)
	return rec, ph, nil
}

// poolLoop refills the pool, one sandbox at a time.
func (s *Service) poolLoop() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	p := s.pool
	checked := time.Now()
	for ctx.Err() == nil {
		s.emptyTrash()
		if time.Since(checked) >= p.recheck {
			s.poolCheck(ctx)
			checked = time.Now()
			s.emptyTrash()
		}
		filled, next := s.poolPass(ctx)
		if filled {
			continue
		}
		wait := min(time.Until(next), time.Until(checked.Add(p.recheck)))
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-p.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// poolPass resolves the targets due and starts at most one sandbox; next
// is when a target in backoff may be tried again.
func (s *Service) poolPass(ctx context.Context) (filled bool, next time.Time) {
	next = time.Now().Add(s.pool.recheck)
	needed := false
	for _, t := range s.pool.targets {
		if ctx.Err() != nil {
			return false, next
		}
		if now := time.Now(); now.Before(t.retryAt) {
			if t.retryAt.Before(next) {
				next = t.retryAt
			}
			continue
		}
		if !s.poolResolve(ctx, t) {
			if t.retryAt.Before(next) {
				next = t.retryAt
			}
			continue
		}
		if s.pool.count(t.ref, t.key) >= t.size {
			continue
		}
		needed = true
		if filled {
			continue
		}
		if wait := s.pool.refillWait(time.Now()); wait > 0 {
			if at := time.Now().Add(wait); at.Before(next) {
				next = at
			}
			continue
		}
		if err := s.poolFill(ctx, t); err != nil {
			if ctx.Err() != nil {
				return false, next
			}
			t.backoff = min(max(2*t.backoff, poolBackoffMin), poolBackoffMax)
			t.retryAt = time.Now().Add(t.backoff)
			s.log.Warn("warm pool: starting a sandbox failed; retrying later", "template", t.ref, "retryIn", t.backoff.String(), "err", err)
			if t.retryAt.Before(next) {
				next = t.retryAt
			}
			continue
		}
		t.backoff = 0
		filled = true
	}
	if !needed {
		s.pool.refilled() // full: no take waits for a refill any more
	}
	return filled, next
}

// poolResolve resolves a target's template; a changed template (rebuilt,
// retagged) throws its stale sandboxes away, a deleted or inaccessible one
// all of them. It reports whether the target can be filled now.
func (s *Service) poolResolve(ctx context.Context, t *poolTarget) bool {
	rctx, cancel := context.WithTimeout(ctx, poolResolveWait)
	tpl, err := s.cfg.Templates.Resolve(rctx, t.ref, s.cfg.PoolTeam)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		switch {
		case errors.Is(err, ErrNotReady) || errors.Is(err, context.DeadlineExceeded):
			t.retryAt = time.Now().Add(poolNotReady)
			s.log.Debug("warm pool: template not ready yet", "template", t.ref, "err", err)
			return false
		case errors.Is(err, ErrTemplate) || errors.Is(err, ErrForbidden) || errors.Is(err, ErrInvalid):
			if n := s.pool.discardWhere(func(e pooled) bool { return e.ref == t.ref }); n > 0 {
				s.log.Info("warm pool: template gone; destroying its pooled sandboxes", "template", t.ref, "count", n)
			}
			t.key = ""
		}
		t.backoff = min(max(2*t.backoff, poolBackoffMin), poolBackoffMax)
		t.retryAt = time.Now().Add(t.backoff)
		if msg := err.Error(); msg != t.lastErr {
			t.lastErr = msg
			s.log.Warn("warm pool: cannot resolve template; retrying later", "template", t.ref, "err", err)
		}
		return false
	}
	t.lastErr = ""
	key := templateKey(tpl)
	if key != t.key {
		if n := s.pool.discardWhere(func(e pooled) bool { return e.ref == t.ref && e.key != key }); n > 0 {
			s.log.Info("warm pool: template changed; destroying stale pooled sandboxes", "template", t.ref, "count", n)
		}
		t.tpl, t.key = tpl, key
	}
	return true
}

// poolFill starts one sandbox for a target and adds it to the pool.
func (s *Service) poolFill(ctx context.Context, t *poolTarget) error {
	ctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	tpl := t.tpl
	rec := Record{
		ID: s.cfg.NewID(), TemplateID: tpl.ID, Alias: tpl.Alias, Node: s.cfg.Node,
		CPUs: tpl.CPUs, MemoryMB: tpl.MemoryMB, DiskMB: tpl.DiskMB, EnvdVersion: tpl.EnvdVersion,
		Secure: true, Internet: true, PublicTraffic: true, User: tpl.User, Workdir: tpl.Workdir,
	}
	t0 := time.Now()
	labels := map[string]string{"template": tpl.ID, poolLabel: "ready"}
	if _, err := s.start(ctx, &rec, tpl, &createPhases{}, labels); err != nil {
		s.discard(rec.ID)
		return err
	}
	s.warmShell(ctx, &rec)
	if !s.pool.put(pooled{id: rec.ID, ref: t.ref, templateID: tpl.ID, key: t.key, at: s.now()}) {
		s.discard(rec.ID)
		return errors.New("the pool is closed")
	}
	s.log.Debug("warm pool: sandbox ready", "sandbox", rec.ID, "template", t.ref, "ready", s.pool.count(t.ref, t.key), "size", t.size, "ms", time.Since(t0).Milliseconds())
	return nil
}

// poolWarmWait bounds the warm-up command of a pooled sandbox.
const poolWarmWait = 5 * time.Second

// poolWarmScript is the warm-up command's script (a variable for tests).
var poolWarmScript = "true"

// warmShell runs `true` once in a new pooled sandbox the way commands.run
// does (a login shell as the template's user), so that its owner's first
// command finds bash, its libraries and the profiles already looked up in
// the sandbox's fresh overlay: measured here, the first command after a
// second of rest took 19.7 ms without it and 15.0 ms with it. It leaves
// nothing behind; a failure (a template without bash) only costs the gain.
func (s *Service) warmShell(ctx context.Context, rec *Record) {
	ctx, cancel := context.WithTimeout(ctx, poolWarmWait)
	defer cancel()
	c := s.commandClient(rec)
	defer c.Close()
	if err := c.Run(ctx, envdclient.Shell(poolWarmScript, rec.User, rec.Workdir, nil), nil); err != nil {
		s.log.Debug("warm pool: warm-up command failed", "sandbox", rec.ID, "err", err)
	}
}

// poolCheck replaces pooled sandboxes whose envd stopped answering (a take
// without /init hands them out as they are).
func (s *Service) poolCheck(ctx context.Context) {
	s.pool.mu.Lock()
	ids := make([]string, 0, len(s.pool.ready))
	for _, e := range s.pool.ready {
		ids = append(ids, e.id)
	}
	s.pool.mu.Unlock()
	for _, id := range ids {
		hctx, cancel := context.WithTimeout(ctx, poolHealthWait)
		err := s.envd.waitHealthy(hctx, id)
		cancel()
		if err == nil || ctx.Err() != nil {
			continue
		}
		if s.pool.discardWhere(func(e pooled) bool { return e.id == id }) > 0 {
			s.log.Warn("warm pool: pooled sandbox unhealthy; replacing it", "sandbox", id, "err", err)
		}
	}
}

// emptyTrash destroys the sandboxes thrown out of the pool.
func (s *Service) emptyTrash() {
	for _, id := range s.pool.takeTrash() {
		s.discard(id)
	}
}

// closePool destroys every pooled sandbox (Close, after the refill loop
// stopped).
func (s *Service) closePool() {
	if s.pool == nil {
		return
	}
	ids := s.pool.close()
	for _, id := range ids {
		s.discard(id)
	}
	if len(ids) > 0 {
		s.log.Info("warm pool: pooled sandboxes destroyed", "count", len(ids))
	}
}

// PoolStatus describes the warm pool for health checks: "" when it is
// off, else "<template> <ready>/<size>" per template, comma-separated.
func (s *Service) PoolStatus() string {
	if s.pool == nil {
		return ""
	}
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	var parts []string
	for _, t := range s.pool.targets {
		n := 0
		for _, e := range s.pool.ready {
			if e.ref == t.ref {
				n++
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d", t.ref, n, t.size))
	}
	return strings.Join(parts, ", ")
}
