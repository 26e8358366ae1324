package guest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
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
	log := newLogger(*verbose)

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

	serve := func() error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	}
	return serveUntilSignal(serve, func(ctx context.Context) error {
		// Executions stream until their end: close the kernels first so
		// they end.
		_ = srv.Close()
		return hs.Shutdown(ctx)
	})
}
