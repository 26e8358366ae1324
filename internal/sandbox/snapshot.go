package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// Snapshots. A snapshot is a running (or paused) sandbox written to disk
// through runtime.Snapshot (processes, memory, files) under
// Config.SnapshotDir/<id>, recorded in the SnapshotCollection. Its ID is
// template-like: Sandbox.create("<id>:default") (or its name) creates new,
// independent sandboxes from it.

// SnapshotCollection is the store collection holding snapshot records.
const SnapshotCollection = "snapshots"

// SnapshotTag is the only tag of a snapshot ("<id>:default").
const SnapshotTag = "default"

// Snapshot is the persisted description of one snapshot.
type Snapshot struct {
	ID        string    `json:"id"`
	Team      string    `json:"team"`
	Name      string    `json:"name"`
	SandboxID string    `json:"sandboxID"`
	CreatedAt time.Time `json:"createdAt"`
	// FilesOnly: no memory was kept (memory snapshots unavailable);
	// sandboxes created from it boot afresh.
	FilesOnly bool `json:"filesOnly,omitempty"`
	// What sandboxes created from it inherit from the source.
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias,omitempty"`
	CPUs        int               `json:"cpus"`
	MemoryMB    int               `json:"memoryMB"`
	DiskMB      int               `json:"diskMB"`
	EnvdVersion string            `json:"envdVersion"`
	EnvVars     map[string]string `json:"envVars,omitempty"`
	User        string            `json:"user,omitempty"`
	Workdir     string            `json:"workdir,omitempty"`
	// Secure: the source had an envd access token, which the snapshot's
	// envd still holds.
	Secure bool `json:"secure"`
}

// SnapshotID is the template-like reference of the snapshot.
func (sn Snapshot) SnapshotID() string { return sn.ID + ":" + SnapshotTag }

// Names are the snapshot's full names, "<team>/<name>:<tag>".
func (sn Snapshot) Names() []string { return []string{sn.Team + "/" + sn.Name + ":" + SnapshotTag} }

var snapshotName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// newSnapshotID returns "snap" + 16 of [a-z0-9].
func newSnapshotID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "snap" + string(b)
}

func (s *Service) snapshotDir(id string) string { return filepath.Join(s.cfg.SnapshotDir, id) }

// CreateSnapshot writes a snapshot of a running or paused sandbox of team;
// the sandbox goes on (it is frozen only while written). A name already
// used by one of the team's snapshots replaces that snapshot's content,
// keeping its ID.
func (s *Service) CreateSnapshot(ctx context.Context, team, sandboxID, name string) (Snapshot, error) {
	if s.cfg.SnapshotDir == "" {
		return Snapshot{}, fmt.Errorf("%w: snapshots are not configured", ErrNotReady)
	}
	if name != "" && !snapshotName.MatchString(name) {
		return Snapshot{}, fmt.Errorf("%w: snapshot name %q: want 1-63 of [a-zA-Z0-9._-], starting alphanumeric", ErrInvalid, name)
	}
	r, err := s.loadForTeam(ctx, team, sandboxID)
	if err != nil {
		return Snapshot{}, err
	}

	sn := Snapshot{
		ID: newSnapshotID(), Team: team, Name: name, SandboxID: sandboxID, CreatedAt: s.now().UTC(),
		TemplateID: r.TemplateID, Alias: r.Alias, CPUs: r.CPUs, MemoryMB: r.MemoryMB, DiskMB: r.DiskMB,
		EnvdVersion: r.EnvdVersion, EnvVars: r.EnvVars, User: r.User, Workdir: r.Workdir, Secure: r.Secure,
	}
	var old *Snapshot
	if name != "" {
		if prev, err := s.findSnapshot(ctx, team, name); err == nil {
			old = &prev
			sn.ID = prev.ID
		} else if !errors.Is(err, ErrNotFound) {
			return Snapshot{}, err
		}
	}
	if sn.Name == "" {
		sn.Name = sn.ID
	}
	if err := s.memoryAvailable(ctx); err != nil {
		sn.FilesOnly = true
		s.log.Warn("snapshot keeps files only: memory snapshots are unavailable", "sandbox", sandboxID, "reason", err.Error())
	}
	tmp := s.snapshotDir(sn.ID) + ".new-" + newSnapshotID()[4:]
	t0 := s.now()
	if err := s.snapshotInto(ctx, sandboxID, tmp, sn.FilesOnly); err != nil {
		return Snapshot{}, err
	}
	lock := s.snapLocks.get(sn.ID)
	lock.Lock()
	defer lock.Unlock()
	final := s.snapshotDir(sn.ID)
	if old != nil {
		if err := os.Rename(final, final+".old"); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = os.RemoveAll(tmp)
			return Snapshot{}, fmt.Errorf("replace snapshot %s: %w", sn.ID, err)
		}
		defer os.RemoveAll(final + ".old")
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.RemoveAll(tmp)
		return Snapshot{}, fmt.Errorf("store snapshot %s: %w", sn.ID, err)
	}
	raw, err := json.Marshal(sn)
	if err != nil {
		return Snapshot{}, err
	}
	if err := s.cfg.Store.Apply(ctx, store.Op{Collection: SnapshotCollection, Key: sn.ID, Value: raw}); err != nil {
		if old == nil {
			_ = os.RemoveAll(final)
		}
		return Snapshot{}, fmt.Errorf("record snapshot %s: %w", sn.ID, err)
	}
	s.event(sandboxID, "snapshot created", "snapshotID", sn.SnapshotID())
	s.log.Info("snapshot created", "snapshot", sn.ID, "sandbox", sandboxID, "filesOnly", sn.FilesOnly, "ms", s.now().Sub(t0).Milliseconds())
	return sn, nil
}

// parseSnapshotRef splits "[namespace/]name[:tag]"; ok is false when the
// tag is not the snapshots' tag.
func parseSnapshotRef(ref string) (name string, ok bool) {
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	if n, tag, found := strings.Cut(ref, ":"); found {
		if tag != SnapshotTag {
			return "", false
		}
		ref = n
	}
	return ref, ref != ""
}

// findSnapshot returns team's snapshot with ref as ID or name (optionally
// "namespace/" prefixed and ":default" tagged); ErrNotFound otherwise.
func (s *Service) findSnapshot(ctx context.Context, team, ref string) (Snapshot, error) {
	name, ok := parseSnapshotRef(ref)
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: snapshot %s", ErrNotFound, ref)
	}
	if raw, err := s.cfg.Store.Get(ctx, SnapshotCollection, name); err == nil {
		var sn Snapshot
		if err := json.Unmarshal(raw, &sn); err != nil {
			return Snapshot{}, fmt.Errorf("decode snapshot %s: %w", name, err)
		}
		if sn.Team == team {
			return sn, nil
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return Snapshot{}, fmt.Errorf("load snapshot %s: %w", name, err)
	}
	all, err := s.snapshots(ctx, team)
	if err != nil {
		return Snapshot{}, err
	}
	for _, sn := range all {
		if sn.Name == name {
			return sn, nil
		}
	}
	return Snapshot{}, fmt.Errorf("%w: snapshot %s", ErrNotFound, ref)
}

// snapshots lists team's snapshots, newest first.
func (s *Service) snapshots(ctx context.Context, team string) ([]Snapshot, error) {
	kvs, err := s.cfg.Store.List(ctx, SnapshotCollection)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var out []Snapshot
	for _, kv := range kvs {
		var sn Snapshot
		if err := json.Unmarshal(kv.Value, &sn); err != nil {
			s.log.Error("undecodable snapshot record", "key", kv.Key, "err", err)
			continue
		}
		if sn.Team == team {
			out = append(out, sn)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// SnapshotFilter selects snapshots of a team.
type SnapshotFilter struct {
	Team string
	// SandboxID keeps the snapshots of that sandbox.
	SandboxID string
	// Name keeps the snapshot with that ID or name (as in findSnapshot).
	Name string
	// Limit is the page size (default and max MaxPageSize).
	Limit int
	// PageToken continues a listing.
	PageToken string
}

// SnapshotPage is one page of snapshots.
type SnapshotPage struct {
	Snapshots []Snapshot
	NextToken string
}

// ListSnapshots lists a team's snapshots, newest first, in pages.
func (s *Service) ListSnapshots(ctx context.Context, f SnapshotFilter) (SnapshotPage, error) {
	if f.Limit <= 0 || f.Limit > MaxPageSize {
		f.Limit = MaxPageSize
	}
	var after *snapshotCursor
	if f.PageToken != "" {
		c, err := decodeSnapshotCursor(f.PageToken)
		if err != nil {
			return SnapshotPage{}, err
		}
		after = &c
	}
	all, err := s.snapshots(ctx, f.Team)
	if err != nil {
		return SnapshotPage{}, err
	}
	name := ""
	if f.Name != "" {
		var ok bool
		if name, ok = parseSnapshotRef(f.Name); !ok {
			return SnapshotPage{Snapshots: []Snapshot{}}, nil
		}
	}
	out := []Snapshot{}
	for _, sn := range all {
		if f.SandboxID != "" && sn.SandboxID != f.SandboxID {
			continue
		}
		if name != "" && sn.Name != name && sn.ID != name {
			continue
		}
		if after != nil && !after.before(sn) {
			continue
		}
		if len(out) == f.Limit {
			last := out[len(out)-1]
			return SnapshotPage{Snapshots: out, NextToken: encodeSnapshotCursor(snapshotCursor{last.CreatedAt, last.ID})}, nil
		}
		out = append(out, sn)
	}
	return SnapshotPage{Snapshots: out}, nil
}

type snapshotCursor struct {
	at time.Time
	id string
}

// before reports whether sn comes after the cursor in the listing order.
func (c snapshotCursor) before(sn Snapshot) bool {
	if !sn.CreatedAt.Equal(c.at) {
		return sn.CreatedAt.Before(c.at)
	}
	return sn.ID > c.id
}

func encodeSnapshotCursor(c snapshotCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.at.Format(time.RFC3339Nano) + "__" + c.id))
}

func decodeSnapshotCursor(tok string) (snapshotCursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return snapshotCursor{}, fmt.Errorf("%w: invalid nextToken", ErrInvalid)
	}
	ts, id, ok := strings.Cut(string(raw), "__")
	at, terr := time.Parse(time.RFC3339Nano, ts)
	if !ok || terr != nil || id == "" {
		return snapshotCursor{}, fmt.Errorf("%w: invalid nextToken", ErrInvalid)
	}
	return snapshotCursor{at, id}, nil
}

// DeleteSnapshot deletes a snapshot of team (by ID or name); ErrNotFound
// when there is none. Sandboxes created from it are not affected.
func (s *Service) DeleteSnapshot(ctx context.Context, team, ref string) error {
	sn, err := s.findSnapshot(ctx, team, ref)
	if err != nil {
		return err
	}
	lock := s.snapLocks.get(sn.ID)
	lock.Lock()
	defer lock.Unlock()
	if err := store.Delete(ctx, s.cfg.Store, SnapshotCollection, sn.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: snapshot %s", ErrNotFound, ref)
		}
		return fmt.Errorf("delete snapshot %s: %w", sn.ID, err)
	}
	if err := os.RemoveAll(s.snapshotDir(sn.ID)); err != nil {
		s.log.Error("remove snapshot files", "snapshot", sn.ID, "err", err)
	}
	s.snapLocks.drop(sn.ID)
	s.log.Info("snapshot deleted", "snapshot", sn.ID)
	return nil
}

// SnapshotsOfTemplate counts the snapshots (of every team) made from
// sandboxes of a template: they need its layers.
func (s *Service) SnapshotsOfTemplate(ctx context.Context, templateID string) (int, error) {
	kvs, err := s.cfg.Store.List(ctx, SnapshotCollection)
	if err != nil {
		return 0, fmt.Errorf("list snapshots: %w", err)
	}
	n := 0
	for _, kv := range kvs {
		var sn Snapshot
		if json.Unmarshal(kv.Value, &sn) == nil && sn.TemplateID == templateID {
			n++
		}
	}
	return n, nil
}

// createFromSnapshot creates a sandbox from a snapshot: its processes go on
// from the snapshot (or boot afresh from a files-only one), and envd is
// given the new sandbox's identity and access token.
func (s *Service) createFromSnapshot(ctx context.Context, req CreateRequest, sn Snapshot) (Record, error) {
	if req.AutoResume && req.AutoPauseFilesOnly {
		return Record{}, fmt.Errorf("%w: autoResume needs memory snapshots (autoPauseMemory must not be false)", ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	now := s.now().UTC()
	env := map[string]string{}
	for k, v := range sn.EnvVars {
		env[k] = v
	}
	for k, v := range req.EnvVars {
		env[k] = v
	}
	rec := Record{
		ID: s.cfg.NewID(), Team: req.Team, TemplateID: sn.TemplateID, Alias: sn.Alias,
		State: StateCreating, Node: s.cfg.Node, CreatedAt: now, Metadata: req.Metadata, EnvVars: env,
		CPUs: sn.CPUs, MemoryMB: sn.MemoryMB, DiskMB: sn.DiskMB, EnvdVersion: sn.EnvdVersion,
		Secure: req.Secure, Internet: req.Internet, InternetSet: req.InternetSet,
		PublicTraffic: req.PublicTraffic, MaskRequestHost: req.MaskRequestHost,
		AutoPause: req.AutoPause, AutoResume: req.AutoResume, AutoPauseFilesOnly: req.AutoPauseFilesOnly,
		User: sn.User, Workdir: sn.Workdir, Snapshot: sn.ID,
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return Record{}, err
	}
	if err := s.cfg.Store.Apply(ctx, store.Op{Collection: Collection, Key: rec.ID, Value: raw, Cond: store.IfAbsent}); err != nil {
		return Record{}, fmt.Errorf("record sandbox %s: %w", rec.ID, err)
	}
	release, _ := s.claim(rec.ID)
	defer release()
	if err := s.startFromSnapshot(ctx, &rec, sn); err != nil {
		s.discard(rec.ID)
		return Record{}, err
	}
	started := s.now().UTC()
	rec.State = StateRunning
	rec.StartedAt = started
	rec.EndAt = started.Add(req.Timeout)
	raw, _ = json.Marshal(rec)
	if err := s.cfg.Store.Apply(ctx, store.Op{Collection: Collection, Key: rec.ID, Value: raw, Cond: store.IfPresent}); err != nil {
		s.discard(rec.ID)
		return Record{}, fmt.Errorf("record running sandbox %s: %w", rec.ID, err)
	}
	s.track(rec)
	s.event(rec.ID, "sandbox created from snapshot", "snapshotID", sn.SnapshotID())
	s.log.Info("sandbox created from snapshot", "sandbox", rec.ID, "snapshot", sn.ID, "team", rec.Team, "ms", s.now().Sub(now).Milliseconds())
	s.running(rec.ID)
	return rec, nil
}

func (s *Service) startFromSnapshot(ctx context.Context, rec *Record, sn Snapshot) error {
	tpl, err := s.cfg.Templates.Resolve(ctx, sn.TemplateID, sn.Team)
	if err != nil {
		return fmt.Errorf("template %s of snapshot %s: %w", sn.TemplateID, sn.ID, err)
	}
	lock := s.snapLocks.get(sn.ID)
	lock.RLock()
	spec := runtime.Spec{
		ID:      rec.ID,
		Network: runtime.Network{Internet: rec.Internet},
		Labels:  map[string]string{"team": rec.Team, "template": rec.TemplateID, "snapshot": sn.ID},
	}
	_, err = s.cfg.Runtime.CreateFromSnapshot(ctx, spec, s.snapshotDir(sn.ID))
	lock.RUnlock()
	if err != nil {
		return fmt.Errorf("create sandbox %s from snapshot %s: %w", rec.ID, sn.ID, err)
	}
	if err := s.envd.waitHealthy(ctx, rec.ID); err != nil {
		return err
	}
	if sn.FilesOnly {
		if err := s.initEnvd(ctx, rec, tpl.Env, ""); err != nil {
			return err
		}
		if tpl.StartCmd != "" || tpl.ReadyCmd != "" {
			return s.startCommand(ctx, rec, tpl)
		}
		return nil
	}
	// envd comes back with the source's state, its token included: prove
	// it (Paddock derives it from the source's ID) and hand over the new
	// sandbox's identity and token.
	current := ""
	if sn.Secure {
		current = s.EnvdToken(sn.SandboxID)
	}
	return s.initEnvd(ctx, rec, tpl.Env, current)
}

// MaxForks bounds the sandboxes one fork request creates.
const MaxForks = 20

// ForkResult is one sandbox of a fork, or why it could not start.
type ForkResult struct {
	Record Record
	Err    error
}

// Fork snapshots a running or paused sandbox of team once and creates count
// independent sandboxes from it, each living for timeout; each succeeds or
// fails on its own. The snapshot is not kept.
func (s *Service) Fork(ctx context.Context, team, id string, count int, timeout time.Duration) ([]ForkResult, error) {
	if s.cfg.SnapshotDir == "" {
		return nil, fmt.Errorf("%w: snapshots are not configured", ErrNotReady)
	}
	if count < 1 || count > MaxForks {
		return nil, fmt.Errorf("%w: count must be between 1 and %d", ErrInvalid, MaxForks)
	}
	if timeout <= 0 || timeout > s.cfg.MaxTimeout {
		return nil, fmt.Errorf("%w: timeout must be positive and at most %s", ErrInvalid, s.cfg.MaxTimeout)
	}
	src, err := s.loadForTeam(ctx, team, id)
	if err != nil {
		return nil, err
	}
	sn := Snapshot{
		ID: "fork" + newSnapshotID()[4:], Team: team, SandboxID: id, CreatedAt: s.now().UTC(),
		TemplateID: src.TemplateID, Alias: src.Alias, CPUs: src.CPUs, MemoryMB: src.MemoryMB, DiskMB: src.DiskMB,
		EnvdVersion: src.EnvdVersion, EnvVars: src.EnvVars, User: src.User, Workdir: src.Workdir, Secure: src.Secure,
	}
	if err := s.memoryAvailable(ctx); err != nil {
		sn.FilesOnly = true
	}
	if err := s.snapshotInto(ctx, id, s.snapshotDir(sn.ID), sn.FilesOnly); err != nil {
		return nil, err
	}
	defer func() {
		s.snapLocks.drop(sn.ID)
		if err := os.RemoveAll(s.snapshotDir(sn.ID)); err != nil {
			s.log.Error("remove fork snapshot", "sandbox", id, "err", err)
		}
	}()
	req := CreateRequest{
		Team: team, Timeout: timeout, Metadata: src.Metadata, Secure: src.Secure,
		Internet: src.Internet, InternetSet: src.InternetSet, PublicTraffic: src.PublicTraffic,
		MaskRequestHost: src.MaskRequestHost, AutoPause: src.AutoPause, AutoResume: src.AutoResume,
		AutoPauseFilesOnly: src.AutoPauseFilesOnly,
	}
	out := make([]ForkResult, count)
	sem := make(chan struct{}, 4) // restores read the same images; a few at a time
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rec, err := s.createFromSnapshot(ctx, req, sn)
			out[i] = ForkResult{Record: rec, Err: err}
		}()
	}
	wg.Wait()
	s.event(id, "sandbox forked", "count", fmt.Sprint(count))
	return out, nil
}

// snapshotInto writes a snapshot of sandbox id into dir (which must not
// exist), holding the sandbox against other lifecycle operations.
func (s *Service) snapshotInto(ctx context.Context, id, dir string, filesOnly bool) error {
	release, err := s.claim(id)
	if err != nil {
		return err
	}
	defer release()
	if err := s.waitSave(ctx, id); err != nil {
		return err
	}
	if err := os.MkdirAll(s.cfg.SnapshotDir, 0o711); err != nil {
		return fmt.Errorf("snapshot dir: %w", err)
	}
	if err := os.Chmod(s.cfg.SnapshotDir, 0o711); err != nil {
		return fmt.Errorf("snapshot dir: %w", err)
	}
	if err := s.cfg.Runtime.Snapshot(ctx, id, runtime.SnapshotOptions{Dir: dir, FilesOnly: filesOnly}); err != nil {
		return fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	return nil
}

// cleanSnapshotDir removes what a crash left in the snapshot directory:
// snapshots being written, replaced or forked from, and files of snapshots
// without a record.
func (s *Service) cleanSnapshotDir(ctx context.Context) error {
	if s.cfg.SnapshotDir == "" {
		return nil
	}
	ents, err := os.ReadDir(s.cfg.SnapshotDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read snapshot dir: %w", err)
	}
	kvs, err := s.cfg.Store.List(ctx, SnapshotCollection)
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	known := map[string]bool{}
	for _, kv := range kvs {
		known[kv.Key] = true
	}
	for _, e := range ents {
		if known[e.Name()] {
			continue
		}
		s.log.Warn("removing leftover snapshot files", "path", filepath.Join(s.cfg.SnapshotDir, e.Name()))
		if err := os.RemoveAll(filepath.Join(s.cfg.SnapshotDir, e.Name())); err != nil {
			return fmt.Errorf("remove leftover snapshot files: %w", err)
		}
	}
	return nil
}
