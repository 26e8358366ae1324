package main

import "github.com/paddockhq/paddock/internal/guest"

// The in-sandbox commands (envd, codeinterp) are also commands of paddock,
// so that it can stand in for the guest binary when built without it.
func init() {
	for name, c := range guest.Commands {
		register(name, c.Summary, c.Run)
	}
}
