package template

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paddockhq/paddock/internal/envd/client"
	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// Limits of builds.
const (
	// maxBuildTime bounds one build end to end.
	maxBuildTime = 2 * time.Hour
	// readyTimeout bounds the wait for the ready command in the finalize
	// phase.
	readyTimeout = 2 * time.Minute
	// buildMinMemoryMB is the least memory a build sandbox gets (package
	// managers need more than a small template's sandboxes).
	buildMinMemoryMB = 2048
	buildPids        = 4096
	// maxLayers bounds a template's layers (overlayfs stacks at most 500).
	maxLayers = 128
)

// BuildRequest asks for a new build of a template (E2B's
// TemplateBuildRequestV3).
type BuildRequest struct {
	// Name is "[namespace/]alias[:tag]".
	Name string
	// Tags are more tags for the build.
	Tags     []string
	CPUCount int
	MemoryMB int
}

// BuildRequested is the answer to a BuildRequest.
type BuildRequested struct {
	TemplateID string
	BuildID    string
	Names      []string
	Tags       []string
	Aliases    []string
	Public     bool
}

// RequestBuild registers a build of the named template for team: the
// template the team owns under that name, or a new one. The build waits
// for StartBuild. ErrAliasTaken when another team (or a built-in) owns the
// name.
func (m *Manager) RequestBuild(ctx context.Context, team string, req BuildRequest) (BuildRequested, error) {
	n, err := ParseName(req.Name)
	if err != nil {
		return BuildRequested{}, err
	}
	tags, err := ValidateTags(append([]string{n.Tag}, req.Tags...))
	if err != nil {
		return BuildRequested{}, err
	}
	if req.CPUCount < 0 || req.CPUCount > 64 || req.MemoryMB < 0 || (req.MemoryMB != 0 && req.MemoryMB < 128) {
		return BuildRequested{}, fmt.Errorf("%w: cpuCount must be 1-64 and memoryMB at least 128", ErrInvalid)
	}
	alias := n.Identifier()
	if reservedAlias(alias) {
		return BuildRequested{}, fmt.Errorf("%w: %q is a built-in template's name", ErrAliasTaken, alias)
	}
	out := BuildRequested{Names: []string{alias}, Aliases: []string{alias}, Tags: tags}
	owner, _, err := m.reg.lookupAlias(ctx, alias)
	if err != nil {
		return BuildRequested{}, err
	}
	switch {
	case owner != "":
		t, err := m.reg.Get(ctx, owner)
		if err != nil {
			return BuildRequested{}, err
		}
		if t.Team != team || t.BuiltIn {
			return BuildRequested{}, fmt.Errorf("template name %q: %w", alias, ErrAliasTaken)
		}
		out.TemplateID, out.Public = t.ID, t.Public
	default:
		if _, err := m.reg.Get(ctx, alias); err == nil {
			return BuildRequested{}, fmt.Errorf("template name %q is another template's ID: %w", alias, ErrAliasTaken)
		}
		// A build of this new name may already be waiting: share its ID.
		builds, err := m.listBuilds(ctx)
		if err != nil {
			return BuildRequested{}, err
		}
		for _, b := range builds {
			if b.Team == team && b.Alias == alias && !b.Finished() {
				out.TemplateID = b.TemplateID
			}
		}
		if out.TemplateID == "" {
			out.TemplateID = NewID()
		}
	}
	if req.CPUCount == 0 {
		req.CPUCount = DefaultCPUCount
	}
	if req.MemoryMB == 0 {
		req.MemoryMB = DefaultMemoryMB
	}
	rec := BuildRecord{
		ID: newBuildID(), TemplateID: out.TemplateID, Team: team, Alias: alias, Tags: tags,
		Status: BuildWaiting, CPUCount: req.CPUCount, MemoryMB: req.MemoryMB, CreatedAt: time.Now().UTC(),
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return BuildRequested{}, err
	}
	if err := m.cfg.Store.Apply(ctx, store.Op{Collection: BuildsCollection, Key: rec.ID, Value: raw, Cond: store.IfAbsent}); err != nil {
		return BuildRequested{}, fmt.Errorf("record build: %w", err)
	}
	out.BuildID = rec.ID
	m.log.Info("template build requested", "template", rec.TemplateID, "build", rec.ID, "name", alias, "tags", tags, "team", team)
	return out, nil
}

// newBuildID returns a random UUID (version 4), E2B's build ID format.
func newBuildID() string {
	var b [16]byte
	copy(b[:], randomBytes(16))
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ownsTemplate checks that team may build templateID: it owns the template
// or has a build of it waiting. Otherwise ErrNotFound.
func (m *Manager) ownsTemplate(ctx context.Context, team, templateID string) error {
	t, err := m.reg.Get(ctx, templateID)
	if err == nil {
		if t.Team == team && !t.BuiltIn {
			return nil
		}
		return fmt.Errorf("template %q: %w", templateID, ErrNotFound)
	}
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	builds, err := m.listBuilds(ctx)
	if err != nil {
		return err
	}
	for _, b := range builds {
		if b.TemplateID == templateID && b.Team == team {
			return nil
		}
	}
	return fmt.Errorf("template %q: %w", templateID, ErrNotFound)
}

// FileUploaded reports whether team already uploaded the files with that
// hash (E2B's GET /templates/{id}/files/{hash}).
func (m *Manager) FileUploaded(ctx context.Context, team, templateID, hash string) (bool, error) {
	if !ValidDigest(hash) {
		return false, fmt.Errorf("%w: files hash %q is not 64 lowercase hex characters", ErrInvalid, hash)
	}
	if err := m.ownsTemplate(ctx, team, templateID); err != nil {
		return false, err
	}
	return m.hasUpload(team, hash), nil
}

// StartBuild validates spec and starts a requested build in the
// background. Invalid specs (unsupported image, malformed step, files not
// uploaded) fail with ErrInvalid before any work; ErrConflict-like
// ErrExists when the build was already started.
func (m *Manager) StartBuild(ctx context.Context, team, templateID, buildID string, spec Spec) error {
	rec, err := m.getBuild(ctx, buildID)
	if err != nil {
		return err
	}
	if rec.Team != team || rec.TemplateID != templateID {
		return fmt.Errorf("build %q of template %q: %w", buildID, templateID, ErrNotFound)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	for i, st := range spec.Steps {
		if st.Type == StepCopy && !m.hasUpload(team, st.FilesHash) {
			return fmt.Errorf("%w: step %d (COPY %s): its files (hash %s) were not uploaded", ErrInvalid, i+1, st.Args[0], st.FilesHash)
		}
	}
	if m.cfg.Runtime == nil {
		return errors.New("template builds need a runtime")
	}
	rec, err = m.updateBuild(ctx, buildID, func(b *BuildRecord) error {
		if b.Status != BuildWaiting || b.Spec != nil {
			return fmt.Errorf("build %s was already started (%s): %w", buildID, b.Status, ErrExists)
		}
		b.Spec = &spec
		return nil
	})
	if err != nil {
		return err
	}
	if err := m.logs.open(buildID); err != nil {
		return err
	}
	m.wg.Add(1)
	go m.runBuild(rec)
	return nil
}

// BuildStatus returns a build of team's template and a page of its log
// (limit at most 100; level filters by minimum level).
func (m *Manager) BuildStatus(ctx context.Context, team, templateID, buildID string, offset, limit int, level string) (BuildRecord, []LogEntry, error) {
	rec, err := m.getBuild(ctx, buildID)
	if err != nil {
		return BuildRecord{}, nil, err
	}
	if rec.Team != team || rec.TemplateID != templateID {
		return BuildRecord{}, nil, fmt.Errorf("build %q of template %q: %w", buildID, templateID, ErrNotFound)
	}
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	return rec, m.logs.page(buildID, offset, limit, level), nil
}

// buildFailure is a build error with the phase or step it happened in.
type buildFailure struct {
	step string
	err  error
}

func (f *buildFailure) Error() string { return f.err.Error() }
func (f *buildFailure) Unwrap() error { return f.err }

func failAt(step string, format string, args ...any) error {
	return &buildFailure{step: step, err: fmt.Errorf(format, args...)}
}

// builder runs one build.
type builder struct {
	m      *Manager
	rec    BuildRecord
	spec   Spec
	st     state
	start  string
	ready  string
	pinned []string
	// echo, when set, receives the log entries instead of the build's log
	// (built-in templates have no build record).
	echo func(LogEntry)
}

// runBuild is a build's goroutine, owned by the Manager (Close waits).
func (m *Manager) runBuild(rec BuildRecord) {
	defer m.wg.Done()
	defer m.logs.close(rec.ID)
	ctx, cancel := context.WithTimeout(m.ctx, maxBuildTime)
	defer cancel()
	b := &builder{m: m, rec: rec, spec: *rec.Spec}
	defer b.unpinAll()

	begin := time.Now()
	b.logf(LevelInfo, "", "Build %s of template %s (%s) queued", rec.ID, rec.TemplateID, rec.Alias)
	var err error
	select {
	case m.buildSem <- struct{}{}:
		defer func() { <-m.buildSem }()
	case <-ctx.Done():
		err = failAt(PhaseBase, "build cancelled while waiting to start: %v", ctx.Err())
	}
	if err == nil {
		_, err = m.updateBuild(ctx, rec.ID, func(r *BuildRecord) error {
			r.Status, r.StartedAt = BuildBuilding, time.Now().UTC()
			return nil
		})
		if err != nil {
			err = failAt(PhaseBase, "%v", err)
		}
	}
	if err == nil {
		err = b.run(ctx)
	}
	// The final record write must happen even when ctx was cancelled.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer wcancel()
	status, reason := BuildReady, (*BuildReason)(nil)
	if err != nil {
		status = BuildError
		reason = &BuildReason{Message: err.Error(), Step: PhaseFinalize}
		var f *buildFailure
		if errors.As(err, &f) {
			reason.Step = f.step
		}
		b.logf(LevelError, reason.Step, "Build failed: %s", err)
		m.log.Warn("template build failed", "template", rec.TemplateID, "build", rec.ID, "step", reason.Step, "err", err)
	} else {
		b.logf(LevelInfo, "", "Build finished in %.1f s: template %s, build %s", time.Since(begin).Seconds(), rec.TemplateID, rec.ID)
		m.log.Info("template built", "template", rec.TemplateID, "build", rec.ID, "seconds", time.Since(begin).Seconds())
	}
	if _, uerr := m.updateBuild(wctx, rec.ID, func(r *BuildRecord) error {
		r.Status, r.Reason, r.FinishedAt = status, reason, time.Now().UTC()
		return nil
	}); uerr != nil {
		m.log.Error("record build result", "build", rec.ID, "err", uerr)
	}
}

func (b *builder) logf(level, step, format string, args ...any) {
	e := LogEntry{Timestamp: time.Now().UTC(), Level: level, Message: fmt.Sprintf(format, args...), Step: step}
	if b.echo != nil {
		b.echo(e)
		return
	}
	b.m.logs.add(b.rec.ID, e)
}

// run executes the base, the steps and the finalize phase, then records
// the build in the template.
func (b *builder) run(ctx context.Context) error {
	if err := b.base(ctx); err != nil {
		return err
	}
	n := len(b.spec.Steps)
	for i, st := range b.spec.Steps {
		if err := b.step(ctx, i+1, n, st); err != nil {
			return err
		}
	}
	if err := checkLayers(b.st.Layers); err != nil {
		return failAt(PhaseFinalize, "%v", err)
	}
	if err := b.finalize(ctx); err != nil {
		return err
	}
	if err := b.commit(ctx); err != nil {
		return failAt(PhaseFinalize, "%v", err)
	}
	return nil
}

// base resolves the build's base into the initial state.
func (b *builder) base(ctx context.Context) error {
	var t Template
	var err error
	if img := b.spec.FromImage; img != "" {
		name, ierr := ImageTemplate(img)
		if ierr != nil {
			return failAt(PhaseBase, "%v", ierr)
		}
		if name != BaseAlias {
			return failAt(PhaseBase, "image %s maps to unknown template %s", img, name)
		}
		b.logf(LevelInfo, PhaseBase, "[base] FROM %s (Paddock's built-in Debian %s base template)", img, BaseSuite)
		t, err = b.m.EnsureBase(ctx)
	} else {
		b.logf(LevelInfo, PhaseBase, "[base] FROM template %s", b.spec.FromTemplate)
		t, err = b.m.reg.Resolve(ctx, b.spec.FromTemplate, b.rec.Team)
	}
	if err != nil {
		return failAt(PhaseBase, "base %s: %v", b.spec.FromImage+b.spec.FromTemplate, err)
	}
	for _, d := range t.Layers {
		if !b.pin(d) {
			return failAt(PhaseBase, "base template %s: layer %s is missing", t.ID, d)
		}
	}
	b.st = state{Layers: slices.Clone(t.Layers), User: t.User, Workdir: t.Workdir, Env: maps.Clone(t.Env)}
	if b.st.Env == nil {
		b.st.Env = map[string]string{}
	}
	b.start, b.ready = t.StartCmd, t.ReadyCmd
	if b.spec.StartCmd != "" || b.spec.ReadyCmd != "" {
		b.start, b.ready = b.spec.StartCmd, b.spec.ReadyCmd
	}
	return nil
}

// pin protects a layer from garbage collection for the build's duration;
// false when the layer does not exist.
func (b *builder) pin(d string) bool {
	if !b.m.pin(d) {
		return false
	}
	b.pinned = append(b.pinned, d)
	return true
}

func (b *builder) unpinAll() {
	for _, d := range b.pinned {
		b.m.unpin(d)
	}
	b.pinned = nil
}

type cacheRecord struct {
	Layer string `json:"layer"`
}

// cached returns the layer a step's cache key recorded (ok false on a miss
// or when the layer is gone).
func (b *builder) cached(ctx context.Context, key string) (string, bool) {
	raw, err := b.m.cfg.Store.Get(ctx, CacheCollection, key)
	if err != nil {
		return "", false
	}
	var c cacheRecord
	if json.Unmarshal(raw, &c) != nil {
		return "", false
	}
	if c.Layer != "" && !b.pin(c.Layer) {
		return "", false
	}
	return c.Layer, true
}

func (b *builder) remember(ctx context.Context, key, layer string) {
	raw, _ := json.Marshal(cacheRecord{Layer: layer})
	if err := store.Put(ctx, b.m.cfg.Store, CacheCollection, key, raw); err != nil {
		b.m.log.Warn("record build cache entry", "build", b.rec.ID, "err", err)
	}
}

// step runs (or takes from the cache) step num of n.
func (b *builder) step(ctx context.Context, num, n int, st Step) error {
	name := strconv.Itoa(num)
	label := fmt.Sprintf("[builder %d/%d] %s", num, n, st.describe())
	key := cacheKey(b.rec.Team, b.st, st)
	if !b.spec.Force && !st.Force {
		if layer, ok := b.cached(ctx, key); ok {
			b.logf(LevelInfo, name, "CACHED %s", label)
			b.apply(st, layer)
			return nil
		}
	}
	b.logf(LevelInfo, name, "%s", label)
	t0 := time.Now()
	layer := ""
	switch st.Type {
	case StepEnv, StepUser:
	case StepRun, StepCopy, StepWorkdir:
		var err error
		layer, err = b.inSandbox(ctx, name, func(c *client.Client) error { return b.execute(ctx, c, name, st) })
		if err != nil {
			return &buildFailure{step: name, err: fmt.Errorf("step %d %s: %w", num, st.describe(), err)}
		}
	}
	b.remember(ctx, key, layer)
	b.apply(st, layer)
	if layer != "" {
		files, size := treeStats(b.m.layers.Path(layer))
		b.logf(LevelInfo, name, "done in %.1f s: layer %s (%d entries, %d KiB)", time.Since(t0).Seconds(), layer[:12], files, size>>10)
	} else if st.Type != StepEnv && st.Type != StepUser {
		b.logf(LevelInfo, name, "done in %.1f s: no file changed", time.Since(t0).Seconds())
	}
	return nil
}

// apply records a step's effect on the build's state.
func (b *builder) apply(st Step, layer string) {
	if layer != "" {
		b.st.Layers = append(b.st.Layers, layer)
	}
	switch st.Type {
	case StepEnv:
		env := maps.Clone(b.st.Env)
		for i := 0; i+1 < len(st.Args); i += 2 {
			env[st.Args[i]] = st.Args[i+1]
		}
		b.st.Env = env
	case StepUser:
		b.st.User = st.Args[0]
	case StepWorkdir:
		b.st.Workdir = path.Clean(resolveDir(b.st.Workdir, st.Args[0]))
	}
}

// inSandbox creates a sandbox on the build's current layers, runs fn
// against its envd and returns the layer of the changes ("" when nothing
// changed). The sandbox is always destroyed.
func (b *builder) inSandbox(ctx context.Context, step string, fn func(*client.Client) error) (layer string, err error) {
	id, c, done, err := b.sandbox(ctx)
	if err != nil {
		return "", err
	}
	defer done()
	if err := fn(c); err != nil {
		return "", err
	}
	lb, err := b.m.layers.NewBuild()
	if err != nil {
		return "", err
	}
	defer lb.Discard()
	if err := b.m.cfg.Runtime.ExportChanges(ctx, id, lb.Dir()); err != nil {
		return "", fmt.Errorf("save the step's changes: %w", err)
	}
	if empty, err := emptyDir(lb.Dir()); err != nil || empty {
		return "", err
	}
	d, err := b.m.commitPinned(lb)
	if err != nil {
		return "", err
	}
	b.pinned = append(b.pinned, d)
	return d, nil
}

// sandbox starts a build sandbox on the current state and returns its ID,
// an initialised envd client and the function that destroys it.
func (b *builder) sandbox(ctx context.Context) (string, *client.Client, func(), error) {
	if err := checkLayers(b.st.Layers); err != nil {
		return "", nil, nil, err
	}
	paths := make([]string, len(b.st.Layers))
	for i, d := range b.st.Layers {
		paths[i] = b.m.layers.Path(d)
	}
	rt := b.m.cfg.Runtime
	id := "b" + randomString(20)
	mem := max(b.rec.MemoryMB, buildMinMemoryMB)
	_, err := rt.Create(ctx, runtime.Spec{
		ID:     id,
		Layers: paths,
		Resources: runtime.Resources{
			CPUs: float64(max(b.rec.CPUCount, 1)), MemoryBytes: int64(mem) << 20, Pids: buildPids,
		},
		Network: runtime.Network{Internet: true},
		Labels:  map[string]string{"paddock.build": b.rec.ID, "template": b.rec.TemplateID},
	})
	if err != nil {
		return "", nil, nil, fmt.Errorf("create build sandbox: %w", err)
	}
	c := client.New(func(ctx context.Context) (net.Conn, error) { return rt.Dial(ctx, id, runtime.EnvdPort) }, "")
	done := func() {
		c.Close()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := rt.Destroy(dctx, id); err != nil {
			b.m.log.Error("destroy build sandbox", "sandbox", id, "build", b.rec.ID, "err", err)
		}
	}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.WaitHealthy(hctx); err != nil {
		done()
		return "", nil, nil, fmt.Errorf("build sandbox: %w", err)
	}
	if err := c.Init(hctx, client.Init{
		EnvVars: b.st.Env, Timestamp: time.Now().UTC(), DefaultUser: b.st.User, DefaultWorkdir: b.st.Workdir,
	}); err != nil {
		done()
		return "", nil, nil, fmt.Errorf("build sandbox: %w", err)
	}
	return id, c, done, nil
}

// emptyDir reports whether dir has no entries.
func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	return len(names) == 0, ignoreEOF(err)
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// checkLayers fails when a template would have more layers than a
// sandbox's root filesystem should stack.
func checkLayers(digests []string) error {
	if len(digests) > maxLayers {
		return fmt.Errorf("the template would have %d layers, more than the %d a sandbox's root filesystem stacks; combine RUN steps (one layer per RUN, COPY and WORKDIR that changes files)", len(digests), maxLayers)
	}
	return nil
}

// lineWriter turns a process's output chunks into log lines.
type lineWriter struct {
	b    *builder
	step string
	buf  [2]bytes.Buffer
}

func (w *lineWriter) write(data []byte, stderr bool) {
	i := 0
	if stderr {
		i = 1
	}
	buf := &w.buf[i]
	buf.Write(data)
	for {
		line, err := buf.ReadBytes('\n')
		if err != nil { // partial line: keep it
			rest := slices.Clone(line)
			buf.Reset()
			buf.Write(rest)
			if buf.Len() > 64<<10 {
				w.emit(buf.String())
				buf.Reset()
			}
			return
		}
		w.emit(string(line))
	}
}

func (w *lineWriter) emit(line string) {
	line = strings.TrimRight(line, "\r\n")
	if i := strings.LastIndexByte(line, '\r'); i >= 0 { // progress bars: keep the last state
		line = line[i+1:]
	}
	w.b.logf(LevelInfo, w.step, "%s", line)
}

func (w *lineWriter) flush() {
	for i := range w.buf {
		if w.buf[i].Len() > 0 {
			w.emit(w.buf[i].String())
			w.buf[i].Reset()
		}
	}
}

// execute runs a RUN, COPY or WORKDIR step through envd.
func (b *builder) execute(ctx context.Context, c *client.Client, name string, st Step) error {
	out := &lineWriter{b: b, step: name}
	defer out.flush()
	switch st.Type {
	case StepRun:
		user := b.st.User
		if len(st.Args) > 1 && st.Args[1] != "" {
			user = st.Args[1]
		}
		return runShell(ctx, c, client.Shell(st.Args[0], user, b.st.Workdir, nil), out)
	case StepWorkdir:
		dir := path.Clean(resolveDir(b.st.Workdir, st.Args[0]))
		return runShell(ctx, c, client.Command{
			Cmd: "/bin/bash", Args: []string{"-c", workdirScript}, User: "root", Cwd: "/",
			Env: map[string]string{"D": dir, "U": chownSpec(b.st.User)},
		}, out)
	case StepCopy:
		return b.copyStep(ctx, c, st, out)
	}
	return fmt.Errorf("unsupported step %s", st.Type)
}

// runShell runs cmd and turns a non-zero exit into a clear error.
func runShell(ctx context.Context, c *client.Client, cmd client.Command, out *lineWriter) error {
	err := c.Run(ctx, cmd, out.write)
	var ee *client.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("exited with code %d", ee.Code)
	}
	return err
}

// chownSpec turns a user ("name", "uid", "name:group") into chown's
// owner argument.
func chownSpec(u string) string {
	if strings.Contains(u, ":") {
		return u
	}
	if _, err := strconv.Atoi(u); err == nil {
		return u + ":" + u
	}
	return u + ":"
}

// workdirScript creates directory $D if missing, owned by $U (the new
// directories only).
const workdirScript = `set -eu
x=$D; top=
while [ ! -e "$x" ]; do top=$x; x=$(dirname "$x"); done
if [ -n "$top" ]; then mkdir -p "$D"; chown -R "$U" "$top"; fi
[ -d "$D" ] || { echo "WORKDIR $D exists and is not a directory" >&2; exit 1; }
`

// copyScript extracts archive $A into a staging directory and copies source
// $P of it to $D as Docker's COPY does: a directory's content goes into
// $D; a file goes to $D, or into it when $D ends with "/" or is a
// directory; glob patterns ($G=1) treat $D as a directory. Copied entries
// and the directories created for them are owned by $U; files get mode $M
// when set.
const copyScript = `set -eu
shopt -s nullglob dotglob globstar
S=$(mktemp -d /tmp/.paddock-copy.XXXXXX)
trap 'rm -rf "$S" "$A"' EXIT
tar -x $Z -f "$A" -C "$S" --no-same-owner
cd "$S"
if [ "$G" = 1 ]; then IFS=; set -- $P; unset IFS; else
  if [ ! -e "$P" ] && [ ! -L "$P" ]; then echo "COPY source $P is not among the uploaded files" >&2; exit 1; fi
  set -- "$P"
fi
if [ $# -eq 0 ]; then echo "COPY source $P matches no uploaded file" >&2; exit 1; fi
todir=0
case "$D" in */) todir=1 ;; esac
if [ "$G" = 1 ] || { [ -d "$D" ] && [ ! -L "$D" ]; }; then todir=1; fi
mkd() {
  x=$1; top=
  while [ ! -e "$x" ]; do top=$x; x=$(dirname "$x"); done
  mkdir -p "$1"
  if [ -n "$top" ]; then chown -R "$U" "$top"; fi
}
fix() {
  chown -hR "$U" "$1"
  if [ -n "$M" ]; then find "$1" -type f -exec chmod "$M" {} +; fi
}
for m in "$@"; do
  if [ -d "$m" ] && [ ! -L "$m" ]; then
    mkd "$D"
    for c in "$m"/*; do cp -a "$c" "$D"/; fix "$D/$(basename "$c")"; done
  elif [ $todir = 1 ]; then
    mkd "$D"; t="${D%/}/$(basename "$m")"; rm -rf "$t"; cp -a "$m" "$t"; fix "$t"
  else
    mkd "$(dirname "$D")"; rm -rf "$D"; cp -a "$m" "$D"; fix "$D"
  fi
done
`

// copyStep uploads the step's archive into the sandbox and unpacks it
// there with copyScript, as root.
func (b *builder) copyStep(ctx context.Context, c *client.Client, st Step, out *lineWriter) error {
	archive := b.m.uploadPath(b.rec.Team, st.FilesHash)
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("the uploaded files (hash %s) are gone; upload them again: %w", st.FilesHash, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	gz, err := isGzip(archive)
	if err != nil {
		return err
	}
	tmp := "/tmp/.paddock-copy-" + randomString(12) + ".tar"
	if err := c.Upload(ctx, tmp, "root", f, fi.Size()); err != nil {
		return err
	}
	src := strings.TrimPrefix(path.Clean(st.Args[0]), "./")
	glob := "0"
	if strings.ContainsAny(src, "*?[") {
		glob = "1"
	}
	owner := b.st.User
	if len(st.Args) > 2 && st.Args[2] != "" {
		owner = st.Args[2]
	}
	mode := ""
	if len(st.Args) > 3 {
		mode = st.Args[3]
	}
	z := ""
	if gz {
		z = "-z"
	}
	return runShell(ctx, c, client.Command{
		Cmd: "/bin/bash", Args: []string{"-c", copyScript}, User: "root", Cwd: "/",
		Env: map[string]string{
			"A": tmp, "P": src, "G": glob, "D": resolveDir(b.st.Workdir, st.Args[1]),
			"U": chownSpec(owner), "M": mode, "Z": z,
		},
	}, out)
}

// finalize checks the start and ready commands in a sandbox of the result:
// the start command must start and the ready command pass within
// readyTimeout, as E2B requires before it snapshots. A fully cached build
// whose result was checked before skips it.
func (b *builder) finalize(ctx context.Context) error {
	if b.start == "" && b.ready == "" {
		return nil
	}
	sum := sha256.New()
	_ = json.NewEncoder(sum).Encode([]any{"finalize", b.rec.Team, b.st, b.start, b.ready})
	key := hex.EncodeToString(sum.Sum(nil))
	label := fmt.Sprintf("[finalize] start command %q, ready command %q", b.start, b.ready)
	if !b.spec.Force {
		if _, ok := b.cached(ctx, key); ok {
			b.logf(LevelInfo, PhaseFinalize, "CACHED %s", label)
			return nil
		}
	}
	b.logf(LevelInfo, PhaseFinalize, "%s", label)
	t0 := time.Now()
	_, c, done, err := b.sandbox(ctx)
	if err != nil {
		return failAt(PhaseFinalize, "%v", err)
	}
	defer done()
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err = c.StartAndWait(rctx, client.StartSpec{
		Start: b.start, Ready: b.ready, User: b.st.User, Workdir: b.st.Workdir,
		Output: func(line string) { b.logf(LevelInfo, PhaseFinalize, "%s", line) },
	})
	if err != nil {
		return failAt(PhaseFinalize, "%v", err)
	}
	b.remember(ctx, key, "")
	b.logf(LevelInfo, PhaseFinalize, "ready after %.1f s", time.Since(t0).Seconds())
	return nil
}

// commit records the build in the template: its tags point to it; a new
// template is created with the requested name (its default tag points to
// this first build whatever the tags).
func (b *builder) commit(ctx context.Context) error {
	rec := b.rec
	bl := Build{
		ID: rec.ID, Layers: b.st.Layers, StartCmd: b.start, ReadyCmd: b.ready,
		User: b.st.User, Workdir: b.st.Workdir, Env: b.st.Env,
		CPUCount: rec.CPUCount, MemoryMB: rec.MemoryMB, DiskSizeMB: DefaultDiskSizeMB,
		EnvdVersion: b.m.cfg.EnvdVersion, CreatedAt: time.Now().UTC(),
	}
	if len(bl.Env) == 0 {
		bl.Env = nil
	}
	update := func() error {
		_, err := b.m.reg.Update(ctx, rec.TemplateID, func(t *Template) error {
			if t.Team != rec.Team || t.BuiltIn {
				return fmt.Errorf("template %s belongs to another team: %w", rec.TemplateID, ErrForbidden)
			}
			m := t.TagMap()
			for _, tag := range rec.Tags {
				m[tag] = bl
			}
			return t.SetTagMap(m)
		})
		return err
	}
	err := update()
	if errors.Is(err, ErrNotFound) {
		t := Template{ID: rec.TemplateID, Aliases: []string{rec.Alias}, Team: rec.Team}
		m := map[string]Build{DefaultTag: bl}
		for _, tag := range rec.Tags {
			m[tag] = bl
		}
		if err := t.SetTagMap(m); err != nil {
			return err
		}
		_, err = b.m.reg.Create(ctx, t)
		if errors.Is(err, ErrExists) {
			err = update() // created meanwhile by a concurrent build
		}
		if errors.Is(err, ErrAliasTaken) {
			return fmt.Errorf("the name %q was taken while the build ran: %w", rec.Alias, err)
		}
	}
	if err != nil {
		return fmt.Errorf("record the build in template %s: %w", rec.TemplateID, err)
	}
	b.logf(LevelInfo, PhaseFinalize, "template %s (%s) tags %s now point to build %s (%d layers)",
		rec.TemplateID, rec.Alias, strings.Join(rec.Tags, ", "), rec.ID, len(bl.Layers))
	return nil
}
