// Package process owns the processes envd starts: the Connect RPC service
// process.Process (Start, Connect, List, SendInput, StreamInput, CloseStdin,
// SendSignal, Update), pipes and pseudo-terminals, output fan-out to every
// attached client, and process lifetimes.
package process

import (
	"log/slog"

	"github.com/paddockhq/paddock/api/envd/process/processconnect"
	"github.com/paddockhq/paddock/internal/envd/identity"
)

// Service implements processconnect.ProcessHandler.
type Service struct {
	processconnect.UnimplementedProcessHandler
	state *identity.State
	log   *slog.Logger
}

// NewService returns a process service acting with the daemon's identity state.
func NewService(state *identity.State, log *slog.Logger) *Service {
	return &Service{state: state, log: log}
}

// Close kills every process the service started and releases their resources.
func (s *Service) Close() {}
