package platform

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/paddockhq/paddock/internal/platform/api"
	"github.com/paddockhq/paddock/internal/sandbox"
)

// CreateSandboxSnapshot is POST /sandboxes/{id}/snapshots.
func (s *Server) CreateSandboxSnapshot(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.CreateSnapshotRequest
	if err := decode(r, &body, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := ""
	if body.Name != nil {
		name = *body.Name
	}
	sn, err := s.cfg.Sandboxes.CreateSnapshot(r.Context(), teamOf(r), id, name)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, snapshotInfo(sn))
}

func snapshotInfo(sn sandbox.Snapshot) api.SnapshotInfo {
	return api.SnapshotInfo{SnapshotID: sn.SnapshotID(), Names: sn.Names()}
}

// ListSnapshots is GET /snapshots?sandboxID&name&limit&nextToken.
func (s *Server) ListSnapshots(w http.ResponseWriter, r *http.Request, params api.ListSnapshotsParams) {
	f := sandbox.SnapshotFilter{Team: teamOf(r)}
	if params.SandboxID != nil {
		f.SandboxID = *params.SandboxID
	}
	if params.Name != nil {
		f.Name = *params.Name
	}
	if params.Limit != nil {
		if *params.Limit < 1 || *params.Limit > sandbox.MaxPageSize {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be between 1 and %d", sandbox.MaxPageSize))
			return
		}
		f.Limit = int(*params.Limit)
	}
	if params.NextToken != nil {
		f.PageToken = *params.NextToken
	}
	page, err := s.cfg.Sandboxes.ListSnapshots(r.Context(), f)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	out := make([]api.SnapshotInfo, 0, len(page.Snapshots))
	for _, sn := range page.Snapshots {
		out = append(out, snapshotInfo(sn))
	}
	if page.NextToken != "" {
		w.Header().Set("X-Next-Token", page.NextToken)
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteSnapshot serves DELETE /templates/{id} when id names one of the
// team's snapshots (the SDK's deleteSnapshot): it reports whether it did.
func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request, ref string) bool {
	err := s.cfg.Sandboxes.DeleteSnapshot(r.Context(), teamOf(r), ref)
	if errors.Is(err, sandbox.ErrNotFound) {
		return false // not a snapshot: a template, or nothing
	}
	if err != nil {
		s.serviceError(w, r, err)
		return true
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// ForkSandbox is POST /sandboxes/{id}/fork: one snapshot, count sandboxes
// from it, each reported on its own.
func (s *Server) ForkSandbox(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.SandboxForkRequest
	if err := decode(r, &body, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	count, timeout := 1, s.cfg.DefaultTimeoutV2
	if body.Count != nil {
		count = int(*body.Count)
	}
	if body.Timeout != nil {
		if *body.Timeout <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("timeout must be a positive number of seconds, got %d", *body.Timeout))
			return
		}
		timeout = time.Duration(*body.Timeout) * time.Second
	}
	results, err := s.cfg.Sandboxes.Fork(r.Context(), teamOf(r), id, count, timeout)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	out := make([]api.SandboxForkResult, 0, len(results))
	for _, res := range results {
		if res.Err != nil {
			status := serviceStatus(res.Err)
			if status == http.StatusInternalServerError {
				s.log.Error("fork failed", "sandbox", id, "err", res.Err)
			}
			out = append(out, api.SandboxForkResult{Error: &api.Error{Code: int32(status), Message: res.Err.Error()}})
			continue
		}
		sb := s.sandboxBody(res.Record)
		out = append(out, api.SandboxForkResult{Sandbox: &sb})
	}
	writeJSON(w, http.StatusCreated, out)
}
