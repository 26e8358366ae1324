package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// The built-in base template.
const (
	// BaseID is the base template's ID (the one E2B's public base has).
	BaseID = "rki5dems9wqfm4r03t7g"
	// BaseAlias is the base template's name.
	BaseAlias = "base"
	// BaseSuite is the Debian release the base is built from.
	BaseSuite = "bookworm"
)

// recipeVersion changes whenever the base build changes in a way the
// recipe's other fields do not show, so existing caches are rebuilt.
const recipeVersion = 1

// basePackages are installed on top of debootstrap's minbase variant.
var basePackages = []string{
	"sudo", "ca-certificates", "curl", "git", "less", "nano", "netbase",
	"procps", "iproute2", "iputils-ping",
	"python3", "python3-pip", "python3-venv", "python-is-python3",
}

// baseUser is the sandbox user E2B templates have.
const (
	baseUserName = "user"
	baseUserID   = 1000
)

// baseSetup runs in the new root (chroot, as root) after debootstrap.
// /etc/sudoers.d/user, the apt sources and the empty network files are
// written before it runs. PEP 668's EXTERNALLY-MANAGED marker is removed so
// `pip install` works as in E2B's templates.
//
// Debian's /etc/profile runs `id -u` to choose PATH, and envd starts every
// command as a login shell (`bash -l -c`, as E2B's does): a fork and an exec
// that cost 5–7 ms of each commands.run on a small VM. bash knows its
// effective UID ($EUID), so the profile asks `id` only in shells that do not
// (dash as `sh -l`); PATH comes out the same in every shell. Likewise root's
// ~/.profile runs `mesg n` (another fork and exec) only when stdin is a
// terminal, the one case where mesg does anything.
const baseSetup = `set -e
groupadd --gid 1000 user
useradd --uid 1000 --gid 1000 --create-home --home-dir /home/user --shell /bin/bash user
visudo --check --quiet --file=/etc/sudoers.d/user
sed -i 's/"$(id -u)"/"${EUID:-$(id -u)}"/g' /etc/profile
grep -q 'EUID:-' /etc/profile
sed -i 's#^mesg n 2> /dev/null || true$#[ -t 0 ] \&\& mesg n 2> /dev/null || true#' /root/.profile
grep -q -- '-t 0 ] && mesg n' /root/.profile
rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old
`

// baseSudoers gives the user passwordless sudo.
const baseSudoers = "user ALL=(ALL:ALL) NOPASSWD: ALL\n"

// baseHosts is a neutral /etc/hosts; the runtime writes the real one.
const baseHosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

// recipe describes the base build; its digest keys the machine cache and is
// recorded in the base template.
type recipe struct {
	Version  int      `json:"version"`
	Suite    string   `json:"suite"`
	Variant  string   `json:"variant"`
	Arch     string   `json:"arch"`
	Packages []string `json:"packages"`
	Setup    string   `json:"setup"`
	Sudoers  string   `json:"sudoers"`
	Hosts    string   `json:"hosts"`
	UIDBase  int      `json:"uidBase"`
	UIDCount int      `json:"uidCount"`
}

func baseRecipe() recipe {
	return recipe{
		Version:  recipeVersion,
		Suite:    BaseSuite,
		Variant:  "minbase",
		Arch:     goruntime.GOARCH,
		Packages: basePackages,
		Setup:    baseSetup,
		Sudoers:  baseSudoers,
		Hosts:    baseHosts,
		UIDBase:  runtime.UIDBase,
		UIDCount: runtime.UIDCount,
	}
}

// digest is the SHA-256 of the recipe's JSON, in hex.
func (r recipe) digest() string {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // plain struct, cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// EnsureBase makes sure the built-in public `base` template exists with a
// layer built from the current recipe and returns it. When the layer is
// missing it is extracted from the machine cache (seconds) or, failing
// that, built with debootstrap (about two minutes) and then cached. Calls
// are single-flight within the process and serialised across processes by
// file locks (per data dir, and per recipe in the cache dir). Progress lines
// go to Config.Progress. On failure nothing is left behind.
func (m *Manager) EnsureBase(ctx context.Context) (Template, error) {
	select {
	case m.baseSem <- struct{}{}:
	case <-ctx.Done():
		return Template{}, fmt.Errorf("ensure base template: %w", ctx.Err())
	}
	defer func() { <-m.baseSem }()

	rec := baseRecipe()
	rd := rec.digest()
	if t, ok := m.currentBase(ctx, rd); ok {
		if t.EnvdVersion == m.cfg.EnvdVersion {
			return t, nil
		}
		return m.registerBase(ctx, t.Layers[0], rd) // only the envd version changed
	}
	unlock, err := lockFile(ctx, filepath.Join(m.layers.Dir(), ".base.lock"), func() {
		m.progressf("waiting for another process preparing the base template in %s...", m.cfg.DataDir)
	})
	if err != nil {
		return Template{}, fmt.Errorf("ensure base template: %w", err)
	}
	defer unlock()
	if t, ok := m.currentBase(ctx, rd); ok {
		return t, nil
	}
	layer, err := m.baseLayer(ctx, rec, rd)
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		m.progressf("preparing the base template failed: %s", msg)
		return Template{}, fmt.Errorf("ensure base template: %w", err)
	}
	defer m.unpin(layer) // pinned by baseLayer until the template references it
	t, err := m.registerBase(ctx, layer, rd)
	if err != nil {
		return Template{}, fmt.Errorf("ensure base template: %w", err)
	}
	return t, nil
}

// currentBase returns the registered base if it was built from recipe rd and
// its layers are on disk.
func (m *Manager) currentBase(ctx context.Context, rd string) (Template, bool) {
	t, err := m.reg.Get(ctx, BaseID)
	if err != nil || t.Recipe != rd {
		return Template{}, false
	}
	for _, d := range t.Layers {
		if !m.layers.Exists(d) {
			return Template{}, false
		}
	}
	return t, true
}

// registerBase creates or updates the base template record.
func (m *Manager) registerBase(ctx context.Context, layer, rd string) (Template, error) {
	set := func(t *Template) {
		t.Aliases = []string{BaseAlias}
		t.Team, t.BuiltIn, t.Public = "", true, true
		t.Layers = []string{layer}
		t.Recipe = rd
		t.BuildID = rd[:8] + "-" + rd[8:12] + "-" + rd[12:16] + "-" + rd[16:20] + "-" + rd[20:32]
		t.User, t.Workdir = DefaultUser, DefaultWorkdir
		t.EnvdVersion = m.cfg.EnvdVersion
	}
	t, err := m.reg.Update(ctx, BaseID, func(t *Template) error { set(t); return nil })
	if errors.Is(err, ErrNotFound) {
		nt := Template{ID: BaseID}
		set(&nt)
		t, err = m.reg.Create(ctx, nt)
		if errors.Is(err, ErrExists) { // created concurrently
			t, err = m.reg.Update(ctx, BaseID, func(t *Template) error { set(t); return nil })
		}
	}
	if err != nil {
		return Template{}, fmt.Errorf("register base template: %w", err)
	}
	return t, nil
}

// cachePaths returns the machine-cache archive candidates of the layer
// named name with recipe digest rd, the preferred (written) one first;
// .tar.zst only when zstd is installed.
func (m *Manager) cachePaths(name, rd string) []string {
	base := filepath.Join(m.cfg.CacheDir, name+"-"+rd+".tar")
	if zstdAvailable() {
		return []string{base + ".zst", base}
	}
	return []string{base}
}

// fromMachineCache looks for the layer named name (recipe digest rd) in
// the machine cache, under the cache's file lock for it. It returns the
// layer's digest on a hit (unusable archives are removed); on a miss,
// useCache tells whether the caller's build should write the cache.
// unlock, never nil, must be called once the build is over.
func (m *Manager) fromMachineCache(ctx context.Context, name, rd string, extract func(context.Context, string) (string, error)) (digest string, useCache bool, unlock func(), err error) {
	unlock = func() {}
	if err := os.MkdirAll(m.cfg.CacheDir, 0o755); err != nil {
		m.log.Warn("machine cache unavailable, building without it", "dir", m.cfg.CacheDir, "err", err)
		return "", false, unlock, nil
	}
	u, err := lockFile(ctx, filepath.Join(m.cfg.CacheDir, name+"-"+rd+".lock"), func() {
		m.progressf("waiting for another process building the %s template (machine cache %s)...", name, m.cfg.CacheDir)
	})
	if err != nil {
		if ctx.Err() != nil {
			return "", false, unlock, err
		}
		m.log.Warn("machine cache lock unavailable, building without the cache", "err", err)
		return "", false, unlock, nil
	}
	for _, p := range m.cachePaths(name, rd) {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		d, err := extract(ctx, p)
		if err == nil {
			return d, true, u, nil
		}
		if ctx.Err() != nil {
			return "", false, u, err
		}
		m.log.Warn("machine cache archive unusable, removing it", "path", p, "err", err)
		m.progressf("cached %s template %s is unusable (%v); rebuilding", name, p, err)
		_ = os.Remove(p)
	}
	return "", true, u, nil
}

// baseLayer produces the base layer for recipe rd, from the machine cache
// or by building it, and returns its digest, pinned (see commitPinned).
func (m *Manager) baseLayer(ctx context.Context, rec recipe, rd string) (string, error) {
	d, useCache, unlock, err := m.fromMachineCache(ctx, "base", rd, m.extractBase)
	defer unlock()
	if d != "" || err != nil {
		return d, err
	}

	start := time.Now()
	m.progressf("building base template from Debian packages (first run only, about 2 minutes)...")
	b, err := m.layers.NewBuild()
	if err != nil {
		return "", err
	}
	defer b.Discard()
	debs := ""
	if useCache {
		debs = filepath.Join(m.cfg.CacheDir, "debs")
		if err := os.MkdirAll(debs, 0o755); err != nil {
			debs = ""
		}
	}
	if err := m.buildBase(ctx, b.Dir(), rec, debs); err != nil {
		return "", err
	}
	m.progressf("  computing layer digest")
	d, err = m.commitPinned(b)
	if err != nil {
		return "", err
	}
	files, size := treeStats(m.layers.Path(d))
	m.progressf("base template built in %.0f s (layer %s, %d files, %d MB)", time.Since(start).Seconds(), d[:12], files, size>>20)
	m.log.Info("base template built", "layer", d, "recipe", rd, "seconds", time.Since(start).Seconds(), "files", files, "bytes", size)

	if useCache {
		p := m.cachePaths("base", rd)[0]
		cs := time.Now()
		if err := writeArchive(ctx, m.layers.Path(d), p); err != nil {
			m.log.Warn("could not save the base template to the machine cache", "path", p, "err", err)
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

// extractBase unpacks a machine-cache archive into a new layer.
func (m *Manager) extractBase(ctx context.Context, archive string) (string, error) {
	start := time.Now()
	m.progressf("extracting base template from the machine cache %s...", archive)
	b, err := m.layers.NewBuild()
	if err != nil {
		return "", err
	}
	defer b.Discard()
	if err := extractArchive(ctx, archive, b.Dir()); err != nil {
		return "", err
	}
	if err := checkBaseTree(b.Dir()); err != nil {
		return "", err
	}
	d, err := m.commitPinned(b)
	if err != nil {
		return "", err
	}
	m.progressf("base template ready in %.1f s (from the machine cache, layer %s)", time.Since(start).Seconds(), d[:12])
	m.log.Info("base template extracted from the machine cache", "layer", d, "archive", archive, "seconds", time.Since(start).Seconds())
	return d, nil
}

// checkBaseTree is a sanity check of an extracted base: a shell owned by
// the shifted root.
func checkBaseTree(root string) error {
	fi, err := os.Lstat(filepath.Join(root, "usr/bin/bash"))
	if err != nil {
		return fmt.Errorf("base tree incomplete: %w", err)
	}
	if uid := ownerOf(fi); uid != runtime.UIDBase {
		return fmt.Errorf("base tree: /usr/bin/bash owned by %d, want %d", uid, runtime.UIDBase)
	}
	return nil
}

// treeStats counts the entries and regular-file bytes of a tree.
func treeStats(root string) (files int, size int64) {
	_ = filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		files++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	return files, size
}

// ownerOf returns the numeric owner of a file.
func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
