package main

import (
	"errors"
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// libcontainer's C constructor: enters the container's namespaces before
	// the Go runtime starts when this binary runs as a container init.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// The local runtime (libcontainer) re-executes this binary as
// `paddock init` to set up each sandbox before it becomes envd. With the
// embedded cmd/paddock-init (make build), a C constructor switches that
// process to the small binary before any Go code runs (package initexe);
// without it, or if the switch cannot happen, this is the init. That must
// happen before anything else runs, so it is done in an init function, as
// runc does; the command entry only keeps `init` out of the usage text and
// explains a manual call.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
	commands["init"] = command{
		summary: "container init of the local runtime (internal)",
		hidden:  true,
		run: func([]string) error {
			return errors.New("init is started by the local runtime, not by hand")
		},
	}
}
