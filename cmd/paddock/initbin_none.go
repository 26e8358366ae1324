//go:build !guestbin

package main

// initBinary is empty without the guestbin build tag: paddock is then its own
// container init (slower to start).
var initBinary []byte
