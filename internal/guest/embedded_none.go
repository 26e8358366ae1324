//go:build !guestbin

package guest

// embedded is empty without the guestbin build tag: Install then reports
// that there is no guest binary and the runtime mounts paddock itself.
var embedded []byte
