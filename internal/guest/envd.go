package guest

import (
	"flag"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/paddockhq/paddock/internal/envd"
)

// Envd runs envd, the E2B in-sandbox daemon, in the foreground until
// SIGTERM or SIGINT: `envd [--listen ADDR] [--verbose] [--ready-fd N]`.
func Envd(args []string) error {
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	listen := fs.String("listen", envd.DefaultAddr, "address to serve the envd API on")
	verbose := fs.Bool("verbose", false, "log at debug level")
	readyFd := fs.Int("ready-fd", -1, "inherited file descriptor to write one byte to, and close, once listening (the runtime's readiness notice)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ready *os.File
	if *readyFd >= 0 {
		// Not inherited by the processes envd starts, even before it is closed.
		syscall.CloseOnExec(*readyFd)
		ready = os.NewFile(uintptr(*readyFd), "ready")
	}
	log := newLogger(*verbose)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	if ready != nil {
		if _, err := ready.Write([]byte{1}); err != nil {
			log.Warn("readiness notice not sent", "fd", *readyFd, "err", err)
		}
		ready.Close()
	}
	d := envd.New(envd.Config{Logger: log})
	log.Info("envd serving", "addr", l.Addr().String(), "version", envd.Version, "pid", os.Getpid())

	return serveUntilSignal(func() error { return d.Serve(l) }, d.Close)
}
