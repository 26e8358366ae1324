package guest

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/paddockhq/paddock/internal/envd"
)

// Envd runs envd, the E2B in-sandbox daemon, in the foreground until
// SIGTERM or SIGINT: `envd [--listen ADDR] [--verbose]`.
func Envd(args []string) error {
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	listen := fs.String("listen", envd.DefaultAddr, "address to serve the envd API on")
	verbose := fs.Bool("verbose", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	d := envd.New(envd.Config{Logger: log})
	log.Info("envd serving", "addr", l.Addr().String(), "version", envd.Version, "pid", os.Getpid())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- d.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Close(shutdown)
}
