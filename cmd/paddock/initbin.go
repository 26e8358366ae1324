//go:build guestbin

package main

import _ "embed" // the container init, built by `make build` beside this file

// initBinary is cmd/paddock-init, the local runtime's small container init.
//
//go:embed paddock-init
var initBinary []byte
