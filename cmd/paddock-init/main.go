// Command paddock-init is the container init of Paddock's local runtime:
// libcontainer's `init` (namespaces, root filesystem, limits, seccomp) and
// nothing else, so that it starts in a fraction of the time paddock's own
// binary takes. paddock embeds it and runs it from a sealed memfd; see
// package internal/runtime/local/initexe. It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// libcontainer's C constructor: enters the container's namespaces before
	// the Go runtime starts.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
	fmt.Fprintln(os.Stderr, "paddock-init is the container init of paddock's local runtime; paddock serve starts it")
	os.Exit(2)
}
