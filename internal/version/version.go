// Package version holds the Paddock release string, set at build time with
// -ldflags "-X github.com/paddockhq/paddock/internal/version.Version=...".
package version

// Version is the Paddock release; "dev" for untagged builds.
var Version = "dev"
