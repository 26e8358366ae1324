// Package guest owns what runs inside every sandbox besides the template's
// own programs: the commands envd and codeinterp, and the slim binary that
// carries only them (cmd/paddock-guest). The local runtime bind-mounts that
// binary into each sandbox, where it starts as envd; a quarter of the size
// of the full paddock binary, with far fewer packages to initialise, it
// starts in 0.75x the time (about 10 ms sooner here) on every create.
// `make build` embeds it into paddock (build tag guestbin) and Install
// writes it out under the data dir, so one file still carries all of
// Paddock; without it the runtime mounts paddock itself, which has the same
// commands.
package guest

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Command is one command of the in-sandbox binary.
type Command struct {
	// Summary is the one-line help text.
	Summary string
	// Run runs the command with the arguments after its name.
	Run func(args []string) error
}

// Commands are the in-sandbox commands by name, as both paddock and
// paddock-guest offer them (`/.paddock/paddock envd`, `... codeinterp`).
var Commands = map[string]Command{
	"envd":       {Summary: "run the in-sandbox daemon (E2B envd API) in the foreground", Run: Envd},
	"codeinterp": {Summary: "run the in-sandbox code interpreter (E2B port 49999 API) in the foreground", Run: Codeinterp},
}

// newLogger logs text to stderr, at debug level when verbose.
func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// shutdownGrace bounds a command's shutdown after SIGTERM or SIGINT.
const shutdownGrace = 5 * time.Second

// serveUntilSignal runs serve until it returns or SIGTERM or SIGINT
// arrives; then shutdown gets shutdownGrace to stop it.
func serveUntilSignal(serve func() error, shutdown func(context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	return shutdown(sctx)
}
