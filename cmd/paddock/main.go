// Command paddock is the single Paddock binary: the control plane (serve),
// the in-sandbox daemons (envd, codeinterp) and the admin commands. It only
// wires packages together.
//
//go:debug multipathtcp=0
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// command is one subcommand of the binary.
type command struct {
	summary string
	run     func(args []string) error
	hidden  bool
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string) error) {
	commands[name] = command{summary: summary, run: run}
}

func usage() {
	fmt.Fprintf(os.Stderr, "paddock: self-hosted, E2B-compatible sandboxes\n\nUsage: paddock <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'paddock <command> -h' for the flags of a command.\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "paddock: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := c.run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "paddock %s: %s\n", os.Args[1], strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}
