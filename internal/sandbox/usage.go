package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
)

// UsingTemplate counts the sandboxes of every team created from a template
// that are being created, running or paused, and the snapshots made of them
// (so the template must not be deleted yet).
func (s *Service) UsingTemplate(ctx context.Context, templateID string) (int, error) {
	recs, err := s.cfg.Store.List(ctx, Collection)
	if err != nil {
		return 0, fmt.Errorf("list sandbox records: %w", err)
	}
	n := 0
	for _, kv := range recs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			continue
		}
		if r.TemplateID == templateID && r.State != StateKilling {
			n++
		}
	}
	snaps, err := s.SnapshotsOfTemplate(ctx, templateID)
	if err != nil {
		return 0, err
	}
	return n + snaps, nil
}
