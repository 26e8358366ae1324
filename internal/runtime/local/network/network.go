// Package network owns the host side of sandbox networking for the local
// runtime: one network namespace per sandbox with a veth into a host bridge,
// address allocation, NAT for egress, nftables rules that keep sandboxes away
// from the host's own services and from each other, and dialing into a
// sandbox's namespace (loopback included).
package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Config configures a Manager.
type Config struct {
	// Bridge is the host bridge's name (default "paddock0").
	Bridge string
	// Subnet holds every sandbox address; the bridge takes the first host
	// address as gateway (default 10.231.0.0/16).
	Subnet netip.Prefix
	// StateDir keeps one record per endpoint so a restarted Manager finds them.
	StateDir string
	// NetnsDir is where namespace files are bind-mounted (default /run/paddock/netns).
	NetnsDir string
}

// Options is the network policy of one endpoint.
type Options struct {
	// Internet allows egress through the host's NAT.
	Internet bool
}

// Endpoint is one sandbox's network.
type Endpoint struct {
	ID        string     // sandbox ID
	NetnsPath string     // bind-mounted namespace file, for joining
	HostVeth  string     // host side device name
	Addr      netip.Addr // sandbox address
	Gateway   netip.Addr // bridge address
	Internet  bool
}

// ErrNotImplemented marks the stub; remove once implemented.
var ErrNotImplemented = errors.New("network: not implemented")

// Manager creates and removes sandbox networks. Safe for concurrent use.
type Manager struct{ cfg Config }

// New prepares the host (bridge, forwarding, nftables table); idempotent.
func New(cfg Config) (*Manager, error) { return nil, ErrNotImplemented }

// Attach creates the sandbox's namespace and its veth, address and routes.
// On error nothing is left behind.
func (m *Manager) Attach(ctx context.Context, id string, opts Options) (*Endpoint, error) {
	return nil, ErrNotImplemented
}

// Get returns an existing endpoint (from the state dir after a restart).
func (m *Manager) Get(id string) (*Endpoint, error) { return nil, ErrNotImplemented }

// List returns every endpoint the manager has state for.
func (m *Manager) List() ([]*Endpoint, error) { return nil, ErrNotImplemented }

// Detach removes every trace of an endpoint; absent endpoints are not an error.
func (m *Manager) Detach(ctx context.Context, id string) error { return ErrNotImplemented }

// Dial connects to a TCP port on the sandbox's loopback from inside its namespace.
func (m *Manager) Dial(ctx context.Context, id string, port int) (net.Conn, error) {
	return nil, ErrNotImplemented
}

// ResolvConf returns the resolv.conf content sandboxes should get.
func (m *Manager) ResolvConf() []byte { return nil }

// Close releases the manager; endpoints stay.
func (m *Manager) Close() error { return nil }

// Teardown removes the bridge and nftables table (tests, uninstall).
func (m *Manager) Teardown() error { return ErrNotImplemented }
