package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// The built-in code-interpreter template: base plus Debian's Python
// (ipykernel, numpy, pandas, matplotlib) and Node.js (with TypeScript), whose
// sandboxes run `paddock codeinterp` (E2B's code-interpreter API on port
// 49999, used by @e2b/code-interpreter) and are created with its Python
// kernel already up.
const (
	// CodeInterpreterID is the template's fixed ID.
	CodeInterpreterID = "nlhz8vlwyupq845jsdg9"
	// CodeInterpreterAlias is its name: the default template of
	// @e2b/code-interpreter.
	CodeInterpreterAlias = "code-interpreter-v1"
	// CodeInterpreterPort is the port the code interpreter serves in a sandbox.
	CodeInterpreterPort = 49999
)

// codeInterpreterVersion changes whenever the layer's build changes in a
// way its recipe's other fields do not show.
const codeInterpreterVersion = 1

// codeInterpreterPackages are the Debian packages installed on top of
// base (without recommends). python3-munkres satisfies python3-fonttools'
// "python3-scipy | python3-munkres", which would otherwise pull scipy and,
// through pythran, a C++ toolchain.
var codeInterpreterPackages = []string{
	"python3-ipykernel", "python3-numpy", "python3-pandas", "python3-matplotlib",
	"python3-matplotlib-inline", "python3-munkres", "nodejs", "node-typescript",
}

// codeInterpreterScript is the template's one build step, run as root with
// internet access: the packages, the apt cleanup, then caches a first
// kernel would otherwise build as the user (IPython's profile, matplotlib's
// font list).
const codeInterpreterScript = `# code-interpreter-v1: Debian packages, apt cleanup, warm user caches
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 $PACKAGES
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/apt /var/log/dpkg.log
runuser -u user -- env HOME=/home/user MPLBACKEND=agg python3 -m IPython -c 'import matplotlib.pyplot, numpy, pandas'
node -e 'require("typescript")'
`

// The template's start and ready commands. The runtime bind-mounts the
// paddock binary at /.paddock/paddock in every sandbox. /ready answers 200
// once the default Python kernel is up (plain /health answers as soon as
// the server listens), so a create returns with a warm interpreter.
const (
	codeInterpreterStart = "/.paddock/paddock codeinterp"
	codeInterpreterReady = "curl -fsS -m 2 http://127.0.0.1:49999/ready"
)

// Resources of code-interpreter sandboxes.
const (
	codeInterpreterCPUs     = 2
	codeInterpreterMemoryMB = 1024
)

// ciRecipe is what the code-interpreter layer is built from; its digest
// names the machine-cache archive. The base layer is part of it: the
// layer holds the changes made on exactly that base.
type ciRecipe struct {
	Version   int      `json:"version"`
	BaseLayer string   `json:"baseLayer"`
	Packages  []string `json:"packages"`
	Script    string   `json:"script"`
	UIDBase   int      `json:"uidBase"`
	UIDCount  int      `json:"uidCount"`
}

func codeInterpreterRecipe(baseLayer string) ciRecipe {
	return ciRecipe{
		Version:   codeInterpreterVersion,
		BaseLayer: baseLayer,
		Packages:  codeInterpreterPackages,
		Script:    codeInterpreterScript,
		UIDBase:   runtime.UIDBase,
		UIDCount:  runtime.UIDCount,
	}
}

// digest is the SHA-256 of the recipe's JSON, in hex.
func (r ciRecipe) digest() string { return jsonDigest(r) }

// recordDigest covers the layer recipe and everything else the template
// record holds, so a change of the start or ready command updates the
// record without rebuilding the layer.
func (r ciRecipe) recordDigest() string {
	return jsonDigest([]any{r.digest(), codeInterpreterStart, codeInterpreterReady,
		DefaultUser, DefaultWorkdir, codeInterpreterCPUs, codeInterpreterMemoryMB})
}

func jsonDigest(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain values, cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// script is the build step's shell script.
func (r ciRecipe) script() string {
	return strings.Replace(r.Script, "$PACKAGES", strings.Join(r.Packages, " "), 1)
}

// EnsureCodeInterpreter makes sure the built-in public template
// code-interpreter-v1 exists, built from the current recipe on the current
// base (EnsureBase first), and returns it. A missing layer is extracted
// from the machine cache (seconds) or built with the template builder: one
// RUN step in a sandbox on base that installs the Debian packages through
// the host's NAT (minutes), then the start and ready commands checked in a
// sandbox of the result; the layer is then cached. Calls are single-flight
// within the process and serialised across processes by file locks; they
// end early when ctx ends or the Manager is closed. Progress lines go to
// Config.Progress. On failure nothing is left behind and the error says
// what failed, with the build's last output lines.
func (m *Manager) EnsureCodeInterpreter(ctx context.Context) (Template, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)()
	fail := func(err error) (Template, error) {
		return Template{}, fmt.Errorf("ensure %s template: %w", CodeInterpreterAlias, err)
	}
	if err := m.ctx.Err(); err != nil { // closed
		return fail(err)
	}
	select {
	case m.ciSem <- struct{}{}:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	defer func() { <-m.ciSem }()

	base, err := m.EnsureBase(ctx)
	if err != nil {
		return fail(err)
	}
	if len(base.Layers) != 1 {
		return fail(fmt.Errorf("base template has %d layers, want 1", len(base.Layers)))
	}
	rec := codeInterpreterRecipe(base.Layers[0])
	rd := rec.recordDigest()
	if t, ok := m.currentBuiltIn(ctx, CodeInterpreterID, rd); ok && t.EnvdVersion == m.cfg.EnvdVersion {
		return t, nil
	}
	unlock, err := lockFile(ctx, filepath.Join(m.layers.Dir(), ".code-interpreter.lock"), func() {
		m.progressf("waiting for another process preparing the %s template in %s...", CodeInterpreterAlias, m.cfg.DataDir)
	})
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if t, ok := m.currentBuiltIn(ctx, CodeInterpreterID, rd); ok {
		if t.EnvdVersion == m.cfg.EnvdVersion {
			return t, nil
		}
		return m.registerCodeInterpreter(ctx, t.Layers, rd) // only the envd version changed
	}
	if !m.pin(rec.BaseLayer) {
		return fail(fmt.Errorf("base layer %s: %w", rec.BaseLayer, ErrLayerNotFound))
	}
	defer m.unpin(rec.BaseLayer)
	layer, err := m.codeInterpreterLayer(ctx, base, rec)
	if err != nil {
		if ctx.Err() != nil {
			m.progressf("preparing the %s template stopped: %v", CodeInterpreterAlias, ctx.Err())
			return fail(err)
		}
		msg, _, _ := strings.Cut(err.Error(), "\n")
		m.progressf("preparing the %s template failed: %s", CodeInterpreterAlias, msg)
		return fail(err)
	}
	defer m.unpin(layer) // pinned until the template references it
	t, err := m.registerCodeInterpreter(ctx, []string{rec.BaseLayer, layer}, rd)
	if err != nil {
		return fail(err)
	}
	return t, nil
}

// currentBuiltIn returns the registered built-in template id if its recipe
// digest is rd and its layers are on disk.
func (m *Manager) currentBuiltIn(ctx context.Context, id, rd string) (Template, bool) {
	t, err := m.reg.Get(ctx, id)
	if err != nil || !t.BuiltIn || t.Recipe != rd {
		return Template{}, false
	}
	for _, d := range t.Layers {
		if !m.layers.Exists(d) {
			return Template{}, false
		}
	}
	return t, true
}

// registerCodeInterpreter creates or updates the template record.
func (m *Manager) registerCodeInterpreter(ctx context.Context, layers []string, rd string) (Template, error) {
	set := func(t *Template) {
		t.Aliases = []string{CodeInterpreterAlias}
		t.Team, t.BuiltIn, t.Public = "", true, true
		t.Layers = layers
		t.Recipe = rd
		t.BuildID = rd[:8] + "-" + rd[8:12] + "-" + rd[12:16] + "-" + rd[16:20] + "-" + rd[20:32]
		t.StartCmd, t.ReadyCmd = codeInterpreterStart, codeInterpreterReady
		t.User, t.Workdir, t.Env = DefaultUser, DefaultWorkdir, nil
		t.CPUCount, t.MemoryMB = codeInterpreterCPUs, codeInterpreterMemoryMB
		t.EnvdVersion = m.cfg.EnvdVersion
		t.Tags, t.Tagged = nil, nil
	}
	t, err := m.reg.Update(ctx, CodeInterpreterID, func(t *Template) error { set(t); return nil })
	if errors.Is(err, ErrNotFound) {
		nt := Template{ID: CodeInterpreterID}
		set(&nt)
		t, err = m.reg.Create(ctx, nt)
		if errors.Is(err, ErrExists) { // created concurrently
			t, err = m.reg.Update(ctx, CodeInterpreterID, func(t *Template) error { set(t); return nil })
		}
	}
	if err != nil {
		return Template{}, fmt.Errorf("register %s template: %w", CodeInterpreterAlias, err)
	}
	return t, nil
}

// codeInterpreterLayer produces the template's own layer (on top of the
// base layer), from the machine cache or by building it, and returns its
// digest, pinned.
func (m *Manager) codeInterpreterLayer(ctx context.Context, base Template, rec ciRecipe) (string, error) {
	ld := rec.digest()
	d, useCache, unlock, err := m.fromMachineCache(ctx, CodeInterpreterAlias, ld, m.extractCodeInterpreter)
	defer unlock()
	if d != "" || err != nil {
		return d, err
	}

	d, err = m.buildCodeInterpreter(ctx, base, rec)
	if err != nil {
		return "", err
	}
	if useCache {
		p := m.cachePaths(CodeInterpreterAlias, ld)[0]
		cs := time.Now()
		if err := writeArchive(ctx, m.layers.Path(d), p); err != nil {
			m.log.Warn("could not save the code-interpreter template to the machine cache", "path", p, "err", err)
			m.progressf("  could not save the machine cache: %v", err)
		} else {
			var sz int64
			if fi, err := os.Stat(p); err == nil {
				sz = fi.Size()
			}
			m.progressf("  saved machine cache %s (%d MB) in %.1f s", p, sz>>20, time.Since(cs).Seconds())
		}
	}
	return d, nil
}

// buildCodeInterpreter runs the template's build with the template builder
// (its RUN step in a sandbox on base, then the start and ready commands
// checked in a sandbox of the result) and returns the new layer, pinned.
func (m *Manager) buildCodeInterpreter(ctx context.Context, base Template, rec ciRecipe) (string, error) {
	if m.cfg.Runtime == nil {
		return "", errors.New("building it needs a runtime")
	}
	start := time.Now()
	m.progressf("building the %s template on base from Debian packages (first run only, a few minutes): %s",
		CodeInterpreterAlias, strings.Join(rec.Packages, " "))
	tail := &lineRing{max: 30}
	b := &builder{
		m: m,
		rec: BuildRecord{
			ID: newBuildID(), TemplateID: CodeInterpreterID, Alias: CodeInterpreterAlias,
			CPUCount: codeInterpreterCPUs, MemoryMB: buildMinMemoryMB,
		},
		spec:  Spec{FromTemplate: BaseAlias, StartCmd: codeInterpreterStart, ReadyCmd: codeInterpreterReady},
		start: codeInterpreterStart,
		ready: codeInterpreterReady,
		st:    state{Layers: []string{rec.BaseLayer}, User: base.User, Workdir: base.Workdir, Env: map[string]string{}},
		echo: func(e LogEntry) {
			tail.add(e.Message)
			m.log.Debug("code-interpreter template build", "step", e.Step, "line", e.Message)
			if e.Level != LevelInfo || strings.HasPrefix(e.Message, "[") || strings.HasPrefix(e.Message, "CACHED ") ||
				strings.HasPrefix(e.Message, "done in ") || strings.HasPrefix(e.Message, "ready after ") {
				line, _, more := strings.Cut(e.Message, "\n") // the RUN step's label is the whole script
				if more {
					line += " …"
				}
				m.progressf("  %s", line)
			}
		},
	}
	defer b.unpinAll()
	// The first line of the error says what failed (it is what /health
	// shows); the build's last output lines follow.
	failed := func(what string, err error) error {
		out := tail.String()
		last := out[strings.LastIndexByte(out, '\n')+1:]
		return fmt.Errorf("%s: %w (last output line: %q); last output:\n%s", what, err, last, out)
	}
	if err := b.step(ctx, 1, 1, Step{Type: StepRun, Args: []string{rec.script(), "root"}}); err != nil {
		var f *buildFailure
		if errors.As(err, &f) && errors.Unwrap(f.err) != nil {
			err = errors.Unwrap(f.err) // without the step's label: the whole script
		}
		return "", failed("the build step (apt-get install, cache warm-up) failed", err)
	}
	if len(b.st.Layers) != 2 {
		return "", failed("the build step", errors.New("changed no file"))
	}
	if err := b.finalize(ctx); err != nil {
		return "", failed("checking the start and ready commands", err)
	}
	d := b.st.Layers[1]
	if !m.pin(d) { // the caller's pin; the builder's goes with unpinAll
		return "", fmt.Errorf("layer %s: %w", d, ErrLayerNotFound)
	}
	files, size := treeStats(m.layers.Path(d))
	m.progressf("%s template built in %.0f s (layer %s, %d files, %d MB)", CodeInterpreterAlias, time.Since(start).Seconds(), d[:12], files, size>>20)
	m.log.Info("code-interpreter template built", "layer", d, "seconds", time.Since(start).Seconds(), "files", files, "bytes", size)
	return d, nil
}

// extractCodeInterpreter unpacks a machine-cache archive into a new layer.
func (m *Manager) extractCodeInterpreter(ctx context.Context, archive string) (string, error) {
	start := time.Now()
	m.progressf("extracting the %s template from the machine cache %s...", CodeInterpreterAlias, archive)
	b, err := m.layers.NewBuild()
	if err != nil {
		return "", err
	}
	defer b.Discard()
	if err := extractArchive(ctx, archive, b.Dir()); err != nil {
		return "", err
	}
	if err := checkCodeInterpreterTree(b.Dir()); err != nil {
		return "", err
	}
	d, err := m.commitPinned(b)
	if err != nil {
		return "", err
	}
	m.progressf("%s template ready in %.1f s (from the machine cache, layer %s)", CodeInterpreterAlias, time.Since(start).Seconds(), d[:12])
	m.log.Info("code-interpreter template extracted from the machine cache", "layer", d, "archive", archive, "seconds", time.Since(start).Seconds())
	return d, nil
}

// checkCodeInterpreterTree is a sanity check of an extracted layer: node
// and ipykernel, owned by the shifted root.
func checkCodeInterpreterTree(root string) error {
	for _, p := range []string{"usr/bin/node", "usr/lib/python3/dist-packages/ipykernel"} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			return fmt.Errorf("%s layer incomplete: %w", CodeInterpreterAlias, err)
		}
		if uid := ownerOf(fi); uid != runtime.UIDBase {
			return fmt.Errorf("%s layer: /%s owned by %d, want %d", CodeInterpreterAlias, p, uid, runtime.UIDBase)
		}
	}
	return nil
}
