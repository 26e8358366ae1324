package guest

import (
	"flag"
	"fmt"
	"net"
	"os"

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
	log := newLogger(*verbose)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	d := envd.New(envd.Config{Logger: log})
	log.Info("envd serving", "addr", l.Addr().String(), "version", envd.Version, "pid", os.Getpid())

	return serveUntilSignal(func() error { return d.Serve(l) }, d.Close)
}
