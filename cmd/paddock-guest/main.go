// Command paddock-guest is the slim in-sandbox binary: envd and codeinterp
// only (package guest). `make build` embeds it into paddock, which installs
// it for the local runtime; it is not meant to be run by hand.
//
// envd's listening sockets must be plain TCP: CRIU (pause with memory)
// cannot dump multipath TCP sockets, which Go uses by default for listeners.
//
//go:debug multipathtcp=0
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/paddockhq/paddock/internal/guest"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	c, ok := guest.Commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "paddock-guest: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := c.Run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "paddock-guest %s: %s\n", os.Args[1], strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}

func usage() {
	names := make([]string, 0, len(guest.Commands))
	for n := range guest.Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "Usage: paddock-guest <command> [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, guest.Commands[n].Summary)
	}
}
