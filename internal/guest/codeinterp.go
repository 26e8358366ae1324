package guest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/paddockhq/paddock/internal/codeinterp"
)

// Codeinterp runs the code interpreter (E2B's port 49999 API) in the
// foreground until SIGTERM or SIGINT: `codeinterp [flags]`.
func Codeinterp(args []string) error {
	fs := flag.NewFlagSet("codeinterp", flag.ContinueOnError)
	listen := fs.String("listen", codeinterp.DefaultAddr, "address to serve the code-interpreter API on")
	envdURL := fs.String("envd", codeinterp.DefaultEnvdURL, "envd base URL (its GET /envs gives the global environment)")
	cwd := fs.String("cwd", codeinterp.DefaultCwd, "working directory of contexts created without one")
	python := fs.String("python", "", "Python interpreter with ipykernel (default /usr/bin/python3, else python3)")
	node := fs.String("node", "node", "Node.js interpreter for javascript and typescript contexts")
	bash := fs.String("bash", "bash", "bash for bash contexts")
	verbose := fs.Bool("verbose", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	srv, err := codeinterp.New(codeinterp.Config{
		Cwd:            *cwd,
		EnvdURL:        *envdURL,
		Python:         *python,
		Node:           *node,
		Bash:           *bash,
		StartLanguages: []string{"python"},
		Logger:         log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	// No write timeout: /execute streams for as long as the code runs. Idle
	// connections are kept as long as E2B's server keeps them (640 s).
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 640 * time.Second}
	srv.Start()
	log.Info("code interpreter serving", "addr", l.Addr().String(), "pid", os.Getpid())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	// Executions stream until their end: close the kernels first so they end.
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Close()
	return hs.Shutdown(shutdown)
}
