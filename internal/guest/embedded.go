//go:build guestbin

package guest

import _ "embed" // the guest binary, built by `make build` beside this file

//go:embed paddock-guest
var embedded []byte
