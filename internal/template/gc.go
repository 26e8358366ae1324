package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
	"github.com/paddockhq/paddock/internal/store"
)

// Garbage collection of layers. A layer is kept while a template build
// references it, a running build uses it (pinned) or a sandbox of the
// runtime was created on it. Anything else is removed once it has been
// unreferenced for gcGrace: a sandbox create that resolved a template just
// before the template was deleted still finds its layers (creates take far
// less than gcGrace).
const (
	gcGrace    = 2 * time.Minute
	gcInterval = time.Minute
	// buildRecordMaxAge is how long finished build records and logs are kept.
	buildRecordMaxAge = 7 * 24 * time.Hour
)

// unknownLayersWait is how long a collection waits for sandboxes whose
// layers the runtime cannot tell yet (being created or destroyed).
var unknownLayersWait = 5 * time.Second

// pin protects layer d from garbage collection until unpin; false (and
// nothing pinned) when the layer does not exist.
func (m *Manager) pin(d string) bool {
	m.gcMu.Lock()
	defer m.gcMu.Unlock()
	if !m.layers.Exists(d) {
		return false
	}
	m.pins[d]++
	return true
}

// commitPinned commits a layer build and pins the layer in one step, so no
// collection can remove it before something references it; unpin after.
func (m *Manager) commitPinned(b *LayerBuild) (string, error) {
	d, err := DigestTree(b.Dir())
	if err != nil {
		b.Discard()
		return "", fmt.Errorf("commit layer: %w", err)
	}
	m.gcMu.Lock()
	defer m.gcMu.Unlock()
	if err := b.commitAs(d); err != nil {
		return "", err
	}
	m.pins[d]++
	return d, nil
}

func (m *Manager) unpin(d string) {
	m.gcMu.Lock()
	defer m.gcMu.Unlock()
	if m.pins[d] <= 1 {
		delete(m.pins, d)
	} else {
		m.pins[d]--
	}
}

// Start prepares builds and layer garbage collection after a (re)start:
// builds a previous process left unfinished are marked failed, old build
// records pruned, unreferenced layers removed at once (nothing can be
// creating sandboxes yet), and the collector then runs in the background
// until Close. Call it after the sandbox service adopted or reaped the
// runtime's sandboxes.
func (m *Manager) Start(ctx context.Context) error {
	var err error
	m.startOnce.Do(func() {
		if err = m.failInterrupted(ctx); err != nil {
			return
		}
		if m.cfg.Runtime != nil {
			if _, gerr := m.CollectGarbage(ctx, 0); gerr != nil {
				m.log.Error("layer garbage collection", "err", gerr)
			}
		}
		m.wg.Add(1)
		go m.gcLoop()
	})
	return err
}

// Close cancels running builds (their sandboxes are destroyed) and stops
// the collector, waiting for both.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
}

// KickGC asks the collector to look for unreferenced layers soon (after a
// template or tag was removed).
func (m *Manager) KickGC() {
	select {
	case m.gcKick <- struct{}{}:
	default:
	}
}

func (m *Manager) gcLoop() {
	defer m.wg.Done()
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.gcKick:
		}
		if m.cfg.Runtime == nil {
			continue
		}
		if _, err := m.CollectGarbage(m.ctx, gcGrace); err != nil && m.ctx.Err() == nil {
			m.log.Error("layer garbage collection", "err", err)
		}
		m.pruneBuilds(m.ctx)
		m.pruneUploads()
	}
}

// failInterrupted marks builds that were waiting or running when the
// previous process stopped as failed.
func (m *Manager) failInterrupted(ctx context.Context) error {
	builds, err := m.listBuilds(ctx)
	if err != nil {
		return err
	}
	for _, b := range builds {
		if b.Finished() || b.Spec == nil {
			continue // finished, or not started: StartBuild can still run it
		}
		_, err := m.updateBuild(ctx, b.ID, func(r *BuildRecord) error {
			if r.Finished() {
				return nil
			}
			r.Status, r.FinishedAt = BuildError, time.Now().UTC()
			r.Reason = &BuildReason{Message: "the build was interrupted: Paddock restarted while it ran; start it again", Step: PhaseBase}
			return nil
		})
		if err != nil {
			return fmt.Errorf("mark interrupted build %s: %w", b.ID, err)
		}
		m.log.Warn("build interrupted by a restart marked failed", "build", b.ID, "template", b.TemplateID)
	}
	return nil
}

// pruneBuilds removes finished build records (and logs) older than
// buildRecordMaxAge, and requested builds never started for as long.
func (m *Manager) pruneBuilds(ctx context.Context) {
	builds, err := m.listBuilds(ctx)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-buildRecordMaxAge)
	for _, b := range builds {
		at := b.FinishedAt
		if at.IsZero() && b.Spec == nil {
			at = b.CreatedAt
		}
		if at.IsZero() || at.After(cutoff) {
			continue
		}
		if err := store.Delete(ctx, m.cfg.Store, BuildsCollection, b.ID); err == nil {
			m.logs.remove(b.ID)
		}
	}
}

// CollectGarbage removes layers nothing references that have been
// unreferenced for at least grace (0: at once) and returns their digests.
// It also drops build cache entries whose layer is gone. It needs
// Config.Runtime, to know the layers of every sandbox; when the runtime
// cannot tell a sandbox's layers nothing is removed.
func (m *Manager) CollectGarbage(ctx context.Context, grace time.Duration) ([]string, error) {
	if m.cfg.Runtime == nil {
		return nil, errors.New("layer garbage collection needs a runtime")
	}
	// Sandboxes first, outside the lock (the listing may wait): a sandbox
	// created later uses layers a template references or a build pinned.
	boxes, err := m.sandboxLayers(ctx)
	if err != nil {
		return nil, err
	}
	m.gcMu.Lock()
	defer m.gcMu.Unlock()

	used := map[string]bool{}
	tpls, err := m.reg.All(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range tpls {
		for _, d := range t.AllLayers() {
			used[d] = true
		}
	}
	for d := range m.pins {
		used[d] = true
	}
	for _, b := range boxes {
		if b.Layers == nil {
			m.log.Warn("sandbox without recorded layers; skipping layer garbage collection", "sandbox", b.ID)
			return nil, nil
		}
		for _, p := range b.Layers {
			if filepath.Dir(p) == m.layers.Dir() {
				used[filepath.Base(p)] = true
			}
		}
	}
	all, err := m.layers.List()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var removed []string
	for _, d := range all {
		if used[d] {
			delete(m.unusedSince, d)
			continue
		}
		since, seen := m.unusedSince[d]
		if !seen {
			m.unusedSince[d] = now
			since = now
		}
		if grace > 0 && now.Sub(since) < grace {
			continue
		}
		if err := m.layers.Remove(d); err != nil && !errors.Is(err, ErrLayerNotFound) {
			m.log.Error("remove unreferenced layer", "layer", d, "err", err)
			continue
		}
		delete(m.unusedSince, d)
		removed = append(removed, d)
	}
	for d := range m.unusedSince {
		if !m.layers.Exists(d) {
			delete(m.unusedSince, d)
		}
	}
	if len(removed) > 0 {
		m.log.Info("removed unreferenced layers", "count", len(removed))
		m.pruneCache(ctx)
	}
	return removed, nil
}

// layerLister is what a runtime may offer beside List: every sandbox's
// layers by ID (nil when not known yet) without the rest of its state,
// which can cost far more (runtime/local offers it).
type layerLister interface {
	Layers(ctx context.Context) (map[string][]string, error)
}

// listLayers lists the runtime's sandboxes with their layers, through
// layerLister when the runtime has it.
func (m *Manager) listLayers(ctx context.Context) ([]runtime.Info, error) {
	ll, ok := m.cfg.Runtime.(layerLister)
	if !ok {
		return m.cfg.Runtime.List(ctx)
	}
	byID, err := ll.Layers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]runtime.Info, 0, len(byID))
	for id, layers := range byID {
		out = append(out, runtime.Info{ID: id, Layers: layers})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// sandboxLayers lists the runtime's sandboxes. A sandbox being created or
// destroyed may not tell its layers for a moment: the listing is retried
// for up to unknownLayersWait before the caller gives up.
func (m *Manager) sandboxLayers(ctx context.Context) ([]runtime.Info, error) {
	deadline := time.Now().Add(unknownLayersWait)
	for {
		boxes, err := m.listLayers(ctx)
		if err != nil {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		known := true
		for _, b := range boxes {
			known = known && b.Layers != nil
		}
		if known || time.Now().After(deadline) {
			return boxes, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pruneCache drops build cache entries whose layer no longer exists.
func (m *Manager) pruneCache(ctx context.Context) {
	recs, err := m.cfg.Store.List(ctx, CacheCollection)
	if err != nil {
		return
	}
	for _, r := range recs {
		var c cacheRecord
		if json.Unmarshal(r.Value, &c) != nil || (c.Layer != "" && !m.layers.Exists(c.Layer)) {
			_ = m.cfg.Store.Apply(ctx, store.Op{Collection: CacheCollection, Key: r.Key, Cond: store.IfEqual, Old: r.Value})
		}
	}
}
