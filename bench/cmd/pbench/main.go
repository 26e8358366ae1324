// Command pbench holds the Go side of Paddock's benchmarks (see bench/README.md):
// the baselines the SDK figures are compared with (libcontainer floor, Debian's
// runc, host fork+exec, a loopback file server, a static HTTP server) and the
// measurements that need Go (envd directly vs through the proxy, the
// control-plane load generator). Every subcommand prints one JSON object on
// stdout: {"samples": {name: [ms...]}, "values": {name: number}, "notes": [...]}.
// It is driven by bench/sdk/bench.mjs; nothing here asserts anything.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	// Lets the cgroup manager apply device rules.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	// libcontainer's C constructor: enters the container's namespaces before
	// the Go runtime starts when this binary runs as a container init.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// libcontainer re-executes this binary as `pbench init` for every container
// (the floor baselines); that must happen before anything else runs.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
}

// result is what every subcommand prints.
type result struct {
	Samples map[string][]float64 `json:"samples"`
	Values  map[string]float64   `json:"values"`
	Notes   []string             `json:"notes,omitempty"`
}

func newResult() *result {
	return &result{Samples: map[string][]float64{}, Values: map[string]float64{}}
}

func (r *result) add(name string, d time.Duration) {
	r.Samples[name] = append(r.Samples[name], ms(d))
}

func (r *result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type subcommand struct {
	summary string
	run     func(args []string) (*result, error)
}

var subcommands = map[string]subcommand{}

func usage() {
	fmt.Fprintf(os.Stderr, "pbench: Paddock benchmark baselines and load generators\n\nUsage: pbench <command> [flags]\n\n")
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-11s %s\n", n, subcommands[n].summary)
	}
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	c, ok := subcommands[os.Args[1]]
	if !ok {
		usage()
		os.Exit(2)
	}
	res, err := c.run(os.Args[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "pbench %s: %s\n", os.Args[1], strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
	if res == nil {
		return
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "pbench %s: %s\n", os.Args[1], err)
		os.Exit(1)
	}
}
