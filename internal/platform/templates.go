package platform

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/paddockhq/paddock/internal/platform/api"
	"github.com/paddockhq/paddock/internal/template"
)

// TemplateUse tells the template routes whether sandboxes still run from a
// template (the sandbox service).
type TemplateUse interface {
	UsingTemplate(ctx context.Context, templateID string) (int, error)
}

// templateError maps template errors to API errors.
func (s *Server) templateError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, template.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, template.ErrForbidden), errors.Is(err, template.ErrUploadToken):
		status = http.StatusForbidden
	case errors.Is(err, template.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, template.ErrAliasTaken), errors.Is(err, template.ErrExists):
		status = http.StatusConflict
	case errors.Is(err, context.Canceled):
		status = 499
	}
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, status, err.Error())
}

// templatesReady answers 503 when templates are not wired (no manager).
func (s *Server) templatesReady(w http.ResponseWriter) bool {
	if s.cfg.Templates == nil {
		writeError(w, http.StatusServiceUnavailable, "templates are not available on this server")
		return false
	}
	return true
}

// RequestTemplateBuildV3 is POST /v3/templates (Template.build's first call).
func (s *Server) RequestTemplateBuildV3(w http.ResponseWriter, r *http.Request) {
	if !s.templatesReady(w) {
		return
	}
	var body api.TemplateBuildRequestV3
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := deref(body.Name)
	if name == "" {
		name = deref(body.Alias)
	}
	if name == "" {
		writeError(w, http.StatusBadRequest, "name is required")
		return
	}
	req := template.BuildRequest{Name: name}
	if body.Tags != nil {
		req.Tags = *body.Tags
	}
	if body.CpuCount != nil {
		req.CPUCount = int(*body.CpuCount)
	}
	if body.MemoryMB != nil {
		req.MemoryMB = int(*body.MemoryMB)
	}
	out, err := s.cfg.Templates.RequestBuild(r.Context(), teamOf(r), req)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, api.TemplateRequestResponseV3{
		TemplateID: out.TemplateID, BuildID: out.BuildID, Public: out.Public,
		Names: out.Names, Tags: out.Tags, Aliases: out.Aliases,
	})
}

// GetTemplateFileUpload is GET /templates/{id}/files/{hash}: present when
// the team uploaded these files before, else an upload URL on this server.
func (s *Server) GetTemplateFileUpload(w http.ResponseWriter, r *http.Request, templateID api.TemplateID, hash string) {
	if !s.templatesReady(w) {
		return
	}
	team := teamOf(r)
	present, err := s.cfg.Templates.FileUploaded(r.Context(), team, templateID, hash)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	out := api.TemplateBuildFileUpload{Present: present}
	if !present {
		u := baseURL(r) + "/templates/" + url.PathEscape(templateID) + "/files/" + url.PathEscape(hash) +
			"/upload?token=" + url.QueryEscape(s.cfg.Templates.UploadToken(team, templateID, hash))
		out.Url = &u
	}
	writeJSON(w, http.StatusCreated, out)
}

// baseURL is this server's address as the request reached it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// isUploadRoute reports whether a request is a file upload, which carries
// a token instead of an API key.
func isUploadRoute(r *http.Request) bool {
	if r.Method != http.MethodPut {
		return false
	}
	parts := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	return len(parts) == 5 && parts[0] == "templates" && parts[2] == "files" && parts[4] == "upload"
}

// UploadTemplateFiles is PUT /templates/{id}/files/{hash}/upload?token=:
// the tar archive of a COPY step.
func (s *Server) UploadTemplateFiles(w http.ResponseWriter, r *http.Request, templateID api.TemplateID, hash string, params api.UploadTemplateFilesParams) {
	if !s.templatesReady(w) {
		return
	}
	if err := s.cfg.Templates.SaveUpload(params.Token, templateID, hash, r.Body); err != nil {
		s.templateError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// StartTemplateBuildV2 is POST /v2/templates/{id}/builds/{buildID}.
func (s *Server) StartTemplateBuildV2(w http.ResponseWriter, r *http.Request, templateID api.TemplateID, buildID api.BuildID) {
	if !s.templatesReady(w) {
		return
	}
	var body api.TemplateBuildStartV2
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	spec := template.Spec{
		FromImage: deref(body.FromImage), FromTemplate: deref(body.FromTemplate),
		StartCmd: deref(body.StartCmd), ReadyCmd: deref(body.ReadyCmd),
		Force: body.Force != nil && *body.Force,
	}
	if body.Steps != nil {
		for _, st := range *body.Steps {
			step := template.Step{Type: strings.ToUpper(st.Type), FilesHash: deref(st.FilesHash), Force: st.Force != nil && *st.Force}
			if st.Args != nil {
				step.Args = *st.Args
			}
			spec.Steps = append(spec.Steps, step)
		}
	}
	if err := s.cfg.Templates.StartBuild(r.Context(), teamOf(r), templateID, buildID, spec); err != nil {
		s.templateError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// GetTemplateBuildStatus is GET /templates/{id}/builds/{buildID}/status.
func (s *Server) GetTemplateBuildStatus(w http.ResponseWriter, r *http.Request, templateID api.TemplateID, buildID api.BuildID, params api.GetTemplateBuildStatusParams) {
	if !s.templatesReady(w) {
		return
	}
	offset, limit, level := 0, 100, ""
	if params.LogsOffset != nil {
		offset = int(*params.LogsOffset)
	}
	if params.Limit != nil {
		limit = int(*params.Limit)
	}
	if params.Level != nil {
		level = string(*params.Level)
		if level != "debug" && level != "info" && level != "warn" && level != "error" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("level %q: use debug, info, warn or error", level))
			return
		}
	}
	if offset < 0 || limit < 1 || limit > 100 {
		writeError(w, http.StatusBadRequest, "logsOffset must be at least 0 and limit between 1 and 100")
		return
	}
	rec, entries, err := s.cfg.Templates.BuildStatus(r.Context(), teamOf(r), templateID, buildID, offset, limit, level)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	out := api.TemplateBuildInfo{
		TemplateID: rec.TemplateID, BuildID: rec.ID, Status: api.TemplateBuildStatus(rec.Status),
		LogEntries: make([]api.BuildLogEntry, 0, len(entries)), Logs: make([]string, 0, len(entries)),
	}
	for _, e := range entries {
		le := api.BuildLogEntry{Timestamp: e.Timestamp, Level: api.LogLevel(e.Level), Message: e.Message}
		if e.Step != "" {
			step := e.Step
			le.Step = &step
		}
		out.LogEntries = append(out.LogEntries, le)
		out.Logs = append(out.Logs, e.Timestamp.Format("2006-01-02T15:04:05.000Z07:00")+" "+e.Message)
	}
	if rec.Reason != nil {
		out.Reason = &api.BuildStatusReason{Message: rec.Reason.Message}
		if rec.Reason.Step != "" {
			step := rec.Reason.Step
			out.Reason.Step = &step
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// templateBody is the Template of GET /templates.
func (s *Server) templateBody(ctx context.Context, t template.Template, team string) api.Template {
	builds, _ := s.cfg.Templates.Builds(ctx, team, t.ID)
	return api.Template{
		TemplateID: t.ID, BuildID: t.BuildID, CpuCount: int32(t.CPUCount), MemoryMB: int32(t.MemoryMB),
		DiskSizeMB: int32(t.DiskSizeMB), Public: t.Public, Aliases: nonNil(t.Aliases), Names: nonNil(t.Aliases),
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, BuildCount: int32(len(builds)),
		EnvdVersion: t.EnvdVersion, BuildStatus: api.TemplateBuildStatus(template.BuildReady),
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ListTemplates is GET /templates: the team's own templates.
func (s *Server) ListTemplates(w http.ResponseWriter, r *http.Request, params api.ListTemplatesParams) {
	if !s.templatesReady(w) {
		return
	}
	team := teamOf(r)
	if params.TeamID != nil && *params.TeamID != "" && *params.TeamID != team {
		writeError(w, http.StatusForbidden, "teamID is not the team of the API key")
		return
	}
	list, err := s.cfg.Templates.List(r.Context(), team)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	out := make([]api.Template, 0, len(list))
	for _, t := range list {
		out = append(out, s.templateBody(r.Context(), t, team))
	}
	writeJSON(w, http.StatusOK, out)
}

// GetTemplate is GET /templates/{id}: a template of the team and its builds.
func (s *Server) GetTemplate(w http.ResponseWriter, r *http.Request, templateID api.TemplateID) {
	if !s.templatesReady(w) {
		return
	}
	team := teamOf(r)
	t, err := s.cfg.Templates.Owned(r.Context(), team, templateID)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	builds, err := s.cfg.Templates.Builds(r.Context(), team, t.ID)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	out := api.TemplateWithBuilds{
		TemplateID: t.ID, Public: t.Public, Aliases: nonNil(t.Aliases), Names: nonNil(t.Aliases),
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, Builds: []api.TemplateBuild{},
	}
	for _, b := range builds {
		tb := api.TemplateBuild{
			BuildID: b.ID, Status: api.TemplateBuildStatus(b.Status), CreatedAt: b.CreatedAt, UpdatedAt: b.CreatedAt,
			CpuCount: int32(b.CPUCount), MemoryMB: int32(b.MemoryMB),
		}
		if !b.FinishedAt.IsZero() {
			f := b.FinishedAt
			tb.FinishedAt, tb.UpdatedAt = &f, f
		}
		out.Builds = append(out.Builds, tb)
	}
	writeJSON(w, http.StatusOK, out)
}

// DeleteTemplate is DELETE /templates/{id}; refused (409) while sandboxes
// created from the template exist.
func (s *Server) DeleteTemplate(w http.ResponseWriter, r *http.Request, templateID api.TemplateID) {
	if s.deleteSnapshot(w, r, templateID) { // snapshots are template-like (snapshots.go)
		return
	}
	if !s.templatesReady(w) {
		return
	}
	team := teamOf(r)
	t, err := s.cfg.Templates.Owned(r.Context(), team, templateID)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	if s.cfg.TemplateUse != nil {
		n, err := s.cfg.TemplateUse.UsingTemplate(r.Context(), t.ID)
		if err != nil {
			s.templateError(w, r, err)
			return
		}
		if n > 0 {
			writeError(w, http.StatusConflict, fmt.Sprintf("template %s (%s) is used by %d sandbox(es); kill them before deleting it", t.ID, t.Name(), n))
			return
		}
	}
	if _, err := s.cfg.Templates.Delete(r.Context(), team, t.ID); err != nil {
		s.templateError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) updateTemplate(w http.ResponseWriter, r *http.Request, templateID string) {
	if !s.templatesReady(w) {
		return
	}
	var body api.TemplateUpdateRequest
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	team := teamOf(r)
	t, err := s.cfg.Templates.Owned(r.Context(), team, templateID)
	if err == nil && body.Public != nil {
		t, err = s.cfg.Templates.SetPublic(r.Context(), team, t.ID, *body.Public)
	}
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.TemplateUpdateResponse{Names: nonNil(t.Aliases)})
}

// UpdateTemplateV1 is PATCH /templates/{id} ({"public": bool}).
func (s *Server) UpdateTemplateV1(w http.ResponseWriter, r *http.Request, templateID api.TemplateID) {
	s.updateTemplate(w, r, templateID)
}

// UpdateTemplateV2 is PATCH /v2/templates/{id} ({"public": bool}).
func (s *Server) UpdateTemplateV2(w http.ResponseWriter, r *http.Request, templateID api.TemplateID) {
	s.updateTemplate(w, r, templateID)
}

// aliasRoute returns the alias of a GET /templates/aliases/{alias} request
// (routed by hand, see api/openapi.yaml).
func aliasRoute(r *http.Request) (string, bool) {
	if r.Method != http.MethodGet {
		return "", false
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/templates/aliases/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	alias, err := url.PathUnescape(rest)
	if err != nil {
		return "", false
	}
	return alias, true
}

// getTemplateAlias is GET /templates/aliases/{alias}: 200 when the team may
// use it, 403 when it is another team's private template, 404 when unknown.
func (s *Server) getTemplateAlias(w http.ResponseWriter, r *http.Request, alias string) {
	if !s.templatesReady(w) {
		return
	}
	t, err := s.cfg.Templates.AliasInfo(r.Context(), teamOf(r), alias)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.TemplateAliasResponse{TemplateID: t.ID, Public: t.Public})
}

// AssignTemplateTags is POST /templates/tags.
func (s *Server) AssignTemplateTags(w http.ResponseWriter, r *http.Request) {
	if !s.templatesReady(w) {
		return
	}
	var body api.AssignTemplateTagsRequest
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	buildID, tags, err := s.cfg.Templates.AssignTags(r.Context(), teamOf(r), body.Target, body.Tags)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.AssignedTemplateTags{BuildID: buildID, Tags: tags})
}

// DeleteTemplateTags is DELETE /templates/tags.
func (s *Server) DeleteTemplateTags(w http.ResponseWriter, r *http.Request) {
	if !s.templatesReady(w) {
		return
	}
	var body api.DeleteTemplateTagsRequest
	if err := decode(r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.cfg.Templates.RemoveTags(r.Context(), teamOf(r), body.Name, body.Tags); err != nil {
		s.templateError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// GetTemplateTags is GET /templates/{id}/tags (ID or name).
func (s *Server) GetTemplateTags(w http.ResponseWriter, r *http.Request, templateID api.TemplateID) {
	if !s.templatesReady(w) {
		return
	}
	tags, err := s.cfg.Templates.Tags(r.Context(), teamOf(r), templateID)
	if err != nil {
		s.templateError(w, r, err)
		return
	}
	out := make([]api.TemplateTag, 0, len(tags))
	for _, t := range tags {
		out = append(out, api.TemplateTag{Tag: t.Tag, BuildID: t.BuildID, CreatedAt: t.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
