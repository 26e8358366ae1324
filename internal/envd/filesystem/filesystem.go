// Package filesystem owns envd's file access: the Connect RPC service
// filesystem.Filesystem (Stat, MakeDir, Move, ListDir, Remove, WatchDir and
// the polling watchers) and the REST /files endpoint (download, upload,
// signed URLs).
package filesystem

import (
	"log/slog"
	"net/http"

	"github.com/paddockhq/paddock/api/envd/filesystem/filesystemconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

// Service implements filesystemconnect.FilesystemHandler and /files.
type Service struct {
	filesystemconnect.UnimplementedFilesystemHandler
	state *identity.State
	log   *slog.Logger
}

// NewService returns a filesystem service acting with the daemon's identity state.
func NewService(state *identity.State, log *slog.Logger) *Service {
	return &Service{state: state, log: log}
}

// FilesHandler serves GET and POST /files. It checks the access token or a
// URL signature itself, since signed URLs carry no token.
func (s *Service) FilesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not implemented", http.StatusNotImplemented)
	})
}

// Close stops every watcher.
func (s *Service) Close() {}
