package platform

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/paddockhq/paddock/internal/platform/api"
	"github.com/paddockhq/paddock/internal/sandbox"
)

// GetHealth reports readiness (no API key needed).
func (s *Server) GetHealth(w http.ResponseWriter, r *http.Request) {
	ready, checks := true, map[string]string{}
	if s.cfg.Health != nil {
		ready, checks = s.cfg.Health()
	}
	h := api.Health{Status: "ok", Version: &s.cfg.Version, Runtime: &s.cfg.Runtime, Checks: &checks}
	status := http.StatusOK
	if !ready {
		h.Status, status = "starting", http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// createParams is what both create routes share.
type createParams struct {
	template      string
	timeout       *int32
	metadata      *api.SandboxMetadata
	envVars       *api.EnvVars
	internet      *bool
	network       *api.SandboxNetworkConfig
	autoPause     *bool
	autoPauseMem  *bool
	autoResume    *api.SandboxAutoResumeConfig
	secure        bool
	defaultTimout time.Duration
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, p createParams) {
	if strings.TrimSpace(p.template) == "" {
		writeError(w, http.StatusBadRequest, "templateID is required")
		return
	}
	req := sandbox.CreateRequest{
		Team:          teamOf(r),
		Template:      p.template,
		Timeout:       p.defaultTimout,
		Secure:        p.secure,
		Internet:      true,
		PublicTraffic: true,
	}
	if p.timeout != nil {
		req.Timeout = time.Duration(*p.timeout) * time.Second
		if *p.timeout <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("timeout must be a positive number of seconds, got %d", *p.timeout))
			return
		}
	}
	if p.metadata != nil {
		req.Metadata = *p.metadata
	}
	if p.envVars != nil {
		req.EnvVars = *p.envVars
	}
	if p.internet != nil {
		req.Internet, req.InternetSet = *p.internet, true
	}
	if n := p.network; n != nil {
		if n.AllowPublicTraffic != nil {
			req.PublicTraffic = *n.AllowPublicTraffic
		}
		if n.MaskRequestHost != nil {
			req.MaskRequestHost = *n.MaskRequestHost
		}
		if n.DenyOut != nil {
			for _, d := range *n.DenyOut {
				if d == "0.0.0.0/0" {
					req.Internet, req.InternetSet = false, true
				}
			}
		}
	}
	if p.autoPause != nil {
		req.AutoPause = *p.autoPause
	}
	if p.autoPauseMem != nil && !*p.autoPauseMem {
		req.AutoPauseFilesOnly = true
	}
	if p.autoResume != nil {
		req.AutoResume = p.autoResume.Enabled
	}
	rec, err := s.cfg.Sandboxes.Create(r.Context(), req)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxBody(rec))
}

// sandboxBody is the Sandbox response of create and connect.
func (s *Server) sandboxBody(rec sandbox.Record) api.Sandbox {
	out := api.Sandbox{
		SandboxID:   rec.ID,
		TemplateID:  rec.TemplateID,
		ClientID:    sandbox.ClientID,
		EnvdVersion: rec.EnvdVersion,
	}
	if rec.Alias != "" {
		out.Alias = &rec.Alias
	}
	if rec.Secure {
		tok := s.cfg.Sandboxes.EnvdToken(rec.ID)
		out.EnvdAccessToken = &tok
	}
	if !rec.PublicTraffic {
		tok := s.cfg.Sandboxes.TrafficToken(rec.ID)
		out.TrafficAccessToken = &tok
	}
	if d := s.cfg.Sandboxes.Domain(); d != "" {
		out.Domain = &d
	}
	return out
}

// CreateSandboxV1 is POST /sandboxes (SDKs up to e2b 2.50, Python).
func (s *Server) CreateSandboxV1(w http.ResponseWriter, r *http.Request) {
	var body api.NewSandbox
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	secure := true // secure by default; only an explicit false opts out
	if body.Secure != nil {
		secure = *body.Secure
	}
	s.create(w, r, createParams{
		template: body.TemplateID, timeout: body.Timeout, metadata: body.Metadata, envVars: body.EnvVars,
		internet: body.AllowInternetAccess, network: body.Network, autoPause: body.AutoPause, autoPauseMem: body.AutoPauseMemory,
		autoResume: body.AutoResume, secure: secure, defaultTimout: s.cfg.DefaultTimeoutV1,
	})
}

// CreateSandboxV2 is POST /v2/sandboxes (e2b ≥ 2.51).
func (s *Server) CreateSandboxV2(w http.ResponseWriter, r *http.Request) {
	var body api.NewSandboxV2
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.create(w, r, createParams{
		template: body.TemplateID, timeout: body.Timeout, metadata: body.Metadata, envVars: body.EnvVars,
		internet: body.AllowInternetAccess, network: body.Network, autoPause: body.AutoPause, autoPauseMem: body.AutoPauseMemory,
		autoResume: body.AutoResume, secure: true, defaultTimout: s.cfg.DefaultTimeoutV2,
	})
}

// resumeOptions maps a request's "memory" field: false boots a paused
// sandbox from its files instead of restoring its memory.
func resumeOptions(memory *bool) sandbox.ResumeOptions {
	return sandbox.ResumeOptions{FilesOnly: memory != nil && !*memory}
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request, id string, timeout time.Duration, opts sandbox.ResumeOptions) {
	rec, resumed, err := s.cfg.Sandboxes.Connect(r.Context(), teamOf(r), id, timeout, opts)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	status := http.StatusOK
	if resumed {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.sandboxBody(rec))
}

// ConnectSandboxV1 is POST /sandboxes/{id}/connect (timeout required).
func (s *Server) ConnectSandboxV1(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.ConnectSandbox
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Timeout < 0 {
		writeError(w, http.StatusBadRequest, "timeout must not be negative")
		return
	}
	s.connect(w, r, id, time.Duration(body.Timeout)*time.Second, resumeOptions(body.Memory))
}

// ConnectSandboxV2 is POST /v2/sandboxes/{id}/connect (timeout defaults to 300 s).
func (s *Server) ConnectSandboxV2(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.ConnectSandboxV2
	if err := decode(r, &body, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	timeout := s.cfg.DefaultTimeoutV2
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			writeError(w, http.StatusBadRequest, "timeout must not be negative")
			return
		}
		timeout = time.Duration(*body.Timeout) * time.Second
	}
	s.connect(w, r, id, timeout, resumeOptions(body.Memory))
}

// GetSandbox is GET /sandboxes/{id}.
func (s *Server) GetSandbox(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	rec, err := s.cfg.Sandboxes.Get(r.Context(), teamOf(r), id)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	d := api.SandboxDetail{
		SandboxID:   rec.ID,
		TemplateID:  rec.TemplateID,
		ClientID:    sandbox.ClientID,
		StartedAt:   rec.StartedAt,
		EndAt:       rec.EndAt,
		CpuCount:    int32(rec.CPUs),
		MemoryMB:    int32(rec.MemoryMB),
		DiskSizeMB:  int32(rec.DiskMB),
		EnvdVersion: rec.EnvdVersion,
		State:       apiState(rec.State),
		Lifecycle:   &api.SandboxLifecycle{AutoResume: rec.AutoResume, OnTimeout: "kill"},
	}
	if rec.AutoPause {
		d.Lifecycle.OnTimeout = "pause"
	}
	if rec.Alias != "" {
		d.Alias = &rec.Alias
	}
	if rec.Metadata != nil {
		m := api.SandboxMetadata(rec.Metadata)
		d.Metadata = &m
	}
	if rec.Secure {
		tok := s.cfg.Sandboxes.EnvdToken(rec.ID)
		d.EnvdAccessToken = &tok
	}
	if dom := s.cfg.Sandboxes.Domain(); dom != "" {
		d.Domain = &dom
	}
	if rec.InternetSet {
		v := rec.Internet
		d.AllowInternetAccess = &v
	}
	pub := rec.PublicTraffic
	d.Network = &api.SandboxNetworkConfig{AllowPublicTraffic: &pub}
	if rec.MaskRequestHost != "" {
		d.Network.MaskRequestHost = &rec.MaskRequestHost
	}
	writeJSON(w, http.StatusOK, d)
}

func apiState(st sandbox.State) api.SandboxState {
	if st == sandbox.StatePaused {
		return "paused"
	}
	return "running"
}

func listed(rec *sandbox.Record) api.ListedSandbox {
	l := api.ListedSandbox{
		SandboxID:   rec.ID,
		TemplateID:  rec.TemplateID,
		ClientID:    sandbox.ClientID,
		StartedAt:   rec.StartedAt,
		EndAt:       rec.EndAt,
		CpuCount:    int32(rec.CPUs),
		MemoryMB:    int32(rec.MemoryMB),
		DiskSizeMB:  int32(rec.DiskMB),
		EnvdVersion: rec.EnvdVersion,
		State:       apiState(rec.State),
	}
	if rec.Alias != "" {
		l.Alias = &rec.Alias
	}
	m := api.SandboxMetadata(rec.Metadata)
	if m == nil {
		m = api.SandboxMetadata{}
	}
	l.Metadata = &m
	return l
}

// parseMetadataFilter decodes the SDK's metadata filter: the query value is
// "k=v&k2=v2" with keys and values URL-encoded, and the whole string encoded
// once more.
func parseMetadataFilter(raw *string) (map[string]string, error) {
	if raw == nil || *raw == "" {
		return nil, nil
	}
	whole, err := url.QueryUnescape(*raw)
	if err != nil {
		return nil, fmt.Errorf("metadata filter: %w", err)
	}
	out := map[string]string{}
	for _, pair := range strings.Split(whole, "&") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("metadata filter: %q is not key=value", pair)
		}
		if k, err = url.QueryUnescape(k); err != nil {
			return nil, fmt.Errorf("metadata filter key: %w", err)
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, fmt.Errorf("metadata filter value: %w", err)
		}
		out[k] = v
	}
	return out, nil
}

// ListSandboxesV1 is GET /sandboxes: running sandboxes, no pagination.
func (s *Server) ListSandboxesV1(w http.ResponseWriter, r *http.Request, params api.ListSandboxesV1Params) {
	md, err := parseMetadataFilter(params.Metadata)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var out []*sandbox.Record
	f := sandbox.ListFilter{Team: teamOf(r), Metadata: md, States: []sandbox.State{sandbox.StateRunning}}
	for {
		page, err := s.cfg.Sandboxes.List(r.Context(), f)
		if err != nil {
			s.serviceError(w, r, err)
			return
		}
		out = append(out, page.Sandboxes...)
		if page.NextToken == "" {
			break
		}
		f.PageToken = page.NextToken
	}
	s.writeListing(w, r, out)
}

// ListSandboxesV2 is GET /v2/sandboxes with filters and X-Next-Token paging.
func (s *Server) ListSandboxesV2(w http.ResponseWriter, r *http.Request, params api.ListSandboxesV2Params) {
	md, err := parseMetadataFilter(params.Metadata)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f := sandbox.ListFilter{Team: teamOf(r), Metadata: md}
	if params.State != nil {
		for _, st := range *params.State {
			switch st {
			case "running":
				f.States = append(f.States, sandbox.StateRunning)
			case "paused":
				f.States = append(f.States, sandbox.StatePaused)
			default:
				writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown state %q (use running, paused)", st))
				return
			}
		}
	}
	if params.Template != nil {
		f.Template = *params.Template
	}
	if params.StartedAfter != nil {
		f.StartedAfter = *params.StartedAfter
	}
	if params.Order != nil {
		switch *params.Order {
		case "asc":
			f.Ascending = true
		case "desc":
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown order %q (use asc, desc)", *params.Order))
			return
		}
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
	page, err := s.cfg.Sandboxes.List(r.Context(), f)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	if page.NextToken != "" {
		w.Header().Set("X-Next-Token", page.NextToken)
	}
	w.Header().Set("X-Total-Running", strconv.Itoa(page.TotalRunning))
	s.writeListing(w, r, page.Sandboxes)
}

// KillSandbox is DELETE /sandboxes/{id}.
func (s *Server) KillSandbox(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	if err := s.cfg.Sandboxes.Kill(r.Context(), teamOf(r), id); err != nil {
		s.serviceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// SetSandboxTimeout is POST /sandboxes/{id}/timeout.
func (s *Server) SetSandboxTimeout(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.SandboxTimeoutRequest
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Timeout <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("timeout must be a positive number of seconds, got %d", body.Timeout))
		return
	}
	if err := s.cfg.Sandboxes.SetTimeout(r.Context(), teamOf(r), id, time.Duration(body.Timeout)*time.Second); err != nil {
		s.serviceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// RefreshSandbox is POST /sandboxes/{id}/refreshes (legacy keep-alive).
func (s *Server) RefreshSandbox(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.SandboxRefreshRequest
	if err := decode(r, &body, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	d := s.cfg.DefaultTimeoutV1
	if body.Duration != nil {
		if *body.Duration <= 0 || *body.Duration > 3600 {
			writeError(w, http.StatusBadRequest, "duration must be between 1 and 3600 seconds")
			return
		}
		d = time.Duration(*body.Duration) * time.Second
	}
	if _, _, err := s.cfg.Sandboxes.Connect(r.Context(), teamOf(r), id, d, sandbox.ResumeOptions{}); err != nil {
		s.serviceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// PauseSandbox is POST /sandboxes/{id}/pause.
func (s *Server) PauseSandbox(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.SandboxPauseRequest
	if err := decode(r, &body, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	opts := sandbox.PauseOptions{FilesOnly: body.Memory != nil && !*body.Memory}
	res, err := s.cfg.Sandboxes.Pause(r.Context(), teamOf(r), id, opts)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	if res.Notice != "" {
		// Paused, but not as asked: never silently.
		writeJSON(w, http.StatusOK, api.PauseNotice{Message: res.Notice})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ResumeSandbox is POST /sandboxes/{id}/resume (deprecated; connect resumes).
func (s *Server) ResumeSandbox(w http.ResponseWriter, r *http.Request, id api.SandboxID) {
	var body api.ResumedSandbox
	if err := decode(r, &body, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	d := s.cfg.DefaultTimeoutV1
	if body.Timeout != nil {
		d = time.Duration(*body.Timeout) * time.Second
	}
	rec, err := s.cfg.Sandboxes.Resume(r.Context(), teamOf(r), id, d, resumeOptions(body.Memory))
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxBody(rec))
}

// GetSandboxMetrics is GET /sandboxes/{id}/metrics?start=&end= (unix seconds).
func (s *Server) GetSandboxMetrics(w http.ResponseWriter, r *http.Request, id api.SandboxID, params api.GetSandboxMetricsParams) {
	var start, end time.Time
	if params.Start != nil {
		start = time.Unix(*params.Start, 0)
	}
	if params.End != nil {
		end = time.Unix(*params.End+1, 0) // whole second, inclusive
	}
	ms, err := s.cfg.Sandboxes.Metrics(r.Context(), teamOf(r), id, start, end)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	out := make([]api.SandboxMetric, 0, len(ms))
	for _, m := range ms {
		out = append(out, api.SandboxMetric{
			Timestamp:     m.Time,
			TimestampUnix: m.Time.Unix(),
			CpuCount:      int32(m.CPUCount),
			CpuUsedPct:    float32(m.CPUUsedPct),
			MemUsed:       m.MemUsed,
			MemTotal:      m.MemTotal,
			MemCache:      m.MemCache,
			DiskUsed:      m.DiskUsed,
			DiskTotal:     m.DiskTotal,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// GetSandboxLogs is GET /sandboxes/{id}/logs?start=<unix ms>&limit=.
func (s *Server) GetSandboxLogs(w http.ResponseWriter, r *http.Request, id api.SandboxID, params api.GetSandboxLogsParams) {
	var start time.Time
	if params.Start != nil {
		start = time.UnixMilli(*params.Start)
	}
	limit := 1000
	if params.Limit != nil {
		if *params.Limit < 0 {
			writeError(w, http.StatusBadRequest, "limit must not be negative")
			return
		}
		limit = int(*params.Limit)
	}
	lines, err := s.cfg.Sandboxes.Logs(r.Context(), teamOf(r), id, start, limit)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	out := api.SandboxLogs{Logs: []api.SandboxLog{}, LogEntries: []api.SandboxLogEntry{}}
	for _, l := range lines {
		out.Logs = append(out.Logs, api.SandboxLog{Timestamp: l.Time, Line: l.Message})
		fields := l.Fields
		if fields == nil {
			fields = map[string]string{}
		}
		out.LogEntries = append(out.LogEntries, api.SandboxLogEntry{
			Timestamp: l.Time, Level: api.SandboxLogEntryLevel(l.Level), Message: l.Message, Fields: fields,
		})
	}
	writeJSON(w, http.StatusOK, out)
}
