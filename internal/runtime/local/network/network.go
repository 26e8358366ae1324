// Package network owns the host side of sandbox networking for the local
// runtime: one network namespace per sandbox with a veth into a host bridge,
// address allocation, NAT for egress, nftables rules that keep sandboxes away
// from the host's own services and from each other, and dialing into a
// sandbox's namespace (loopback included).
//
// Every namespace is created by the Manager and so owned by the host's initial
// user namespace: root inside a sandbox (root of its own user namespace only)
// cannot reconfigure addresses, routes or sysctls of its network.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Defaults used when a Config field is left empty.
const (
	DefaultBridge   = "paddock0"
	DefaultTable    = "paddock"
	DefaultNetnsDir = "/run/paddock/netns"
	DefaultStateDir = "/var/lib/paddock/network"
)

// DefaultSubnet is the address pool used when Config.Subnet is unset.
var DefaultSubnet = netip.MustParsePrefix("10.231.0.0/16")

// PeerName is the name of the sandbox side of the veth pair.
const PeerName = "eth0"

// Errors returned (wrapped) by the Manager.
var (
	// ErrNotFound: no endpoint with that ID.
	ErrNotFound = errors.New("network endpoint not found")
	// ErrExists: an endpoint with that ID already exists.
	ErrExists = errors.New("network endpoint already exists")
	// ErrExhausted: the subnet has no free address left.
	ErrExhausted = errors.New("network subnet exhausted")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("network manager closed")
)

// Config configures a Manager.
type Config struct {
	// Bridge is the host bridge's name (default "paddock0").
	Bridge string
	// Subnet holds every sandbox address; the bridge takes the first host
	// address as gateway (default 10.231.0.0/16). IPv4, at most /30.
	Subnet netip.Prefix
	// StateDir keeps one record per endpoint so a restarted Manager finds
	// them (default /var/lib/paddock/network).
	StateDir string
	// NetnsDir is where namespace files are bind-mounted (default /run/paddock/netns).
	NetnsDir string
	// Table is the name of the nftables table (family inet) holding the
	// rules: default "paddock" with the default bridge, "paddock_<bridge>"
	// otherwise. Each bridge on a host needs its own table.
	Table string
	// MTU of the veth pairs; 0 takes the MTU of the host's default-route
	// device (1500 when there is none).
	MTU int
	// DenyEgress are destinations sandboxes can never reach, even with
	// Internet (default: 169.254.0.0/16, link-local and cloud metadata).
	// The Subnet itself (other sandboxes) is always denied.
	DenyEgress []netip.Prefix
	// ResolvConf is the host resolver file ResolvConf reads (default /etc/resolv.conf).
	ResolvConf string
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

// Manager creates and removes sandbox networks. Safe for concurrent use.
type Manager struct {
	cfg     Config
	gateway netip.Addr
	mtu     int
	hostNs  int // fd of the host network namespace, to return threads to it
	nl      *netlink.Handle
	bridge  int // bridge ifindex

	sharedMount bool // New made NetnsDir a shared mount (undone if New fails)

	nftMu sync.Mutex // serialises batches on nft
	nft   *nftables.Conn
	table *nftables.Table
	set   *nftables.Set

	ids keyedMutex // serialises Attach/Detach of one ID

	// life is read-held by every operation using the descriptors above and
	// write-held by Close.
	life   sync.RWMutex
	closed bool

	mu        sync.Mutex // guards the fields below
	endpoints map[string]*entry
	pool      *pool
}

// entry is the in-memory state of one endpoint.
type entry struct {
	ep Endpoint

	mu   sync.RWMutex // write-held while the endpoint is torn down
	nsFd int          // open namespace file, -1 if it could not be opened
	gone bool
}

// New prepares the host (bridge, forwarding, nftables table); idempotent.
// Endpoints recorded in StateDir by an earlier Manager are loaded, and their
// egress policy is restored.
func New(cfg Config) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	m := &Manager{
		cfg:       cfg,
		gateway:   cfg.Subnet.Addr().Next(),
		hostNs:    -1,
		endpoints: map[string]*entry{},
		pool:      newPool(cfg.Subnet),
	}
	if err := m.init(); err != nil {
		m.release()
		if m.sharedMount {
			_ = unmountSharedMount(cfg.NetnsDir) // only when empty
		}
		return nil, fmt.Errorf("prepare host network %s: %w", cfg.Bridge, err)
	}
	return m, nil
}

func (cfg *Config) setDefaults() error {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if err := validIfname(cfg.Bridge); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 {
		return fmt.Errorf("subnet %s: want an IPv4 prefix of at most /30", cfg.Subnet)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = DefaultNetnsDir
	}
	if !filepath.IsAbs(cfg.StateDir) || !filepath.IsAbs(cfg.NetnsDir) {
		return fmt.Errorf("state dir %q and netns dir %q must be absolute", cfg.StateDir, cfg.NetnsDir)
	}
	cfg.StateDir = filepath.Clean(cfg.StateDir)
	cfg.NetnsDir = filepath.Clean(cfg.NetnsDir)
	if cfg.Table == "" {
		// One table per bridge, so a test bridge never touches the real one.
		cfg.Table = DefaultTable
		if cfg.Bridge != DefaultBridge {
			cfg.Table = DefaultTable + "_" + cfg.Bridge
		}
	}
	if len(cfg.Table) > 64 || strings.ContainsAny(cfg.Table, " \t\n\"'/\x00") {
		return fmt.Errorf("table name %q is invalid", cfg.Table)
	}
	if cfg.MTU < 0 || (cfg.MTU != 0 && cfg.MTU < 576) || cfg.MTU > 65535 {
		return fmt.Errorf("mtu %d out of range", cfg.MTU)
	}
	if cfg.DenyEgress == nil {
		cfg.DenyEgress = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}
	}
	cfg.DenyEgress = slices.Clone(cfg.DenyEgress)
	for i, p := range cfg.DenyEgress {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("deny egress %s: want an IPv4 prefix", p)
		}
		cfg.DenyEgress[i] = p.Masked()
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	return nil
}

func (m *Manager) init() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
	}
	for _, d := range []string{m.cfg.StateDir, m.cfg.NetnsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open host netns: %w", err)
	}
	m.hostNs = fd
	if m.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	if err := makeSharedMount(m.cfg.NetnsDir); err != nil {
		return err
	}
	m.sharedMount = true
	if m.mtu = m.cfg.MTU; m.mtu == 0 {
		m.mtu = defaultRouteMTU(m.nl)
	}
	if err := m.ensureBridge(); err != nil {
		return err
	}
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if err := m.loadState(); err != nil {
		return err
	}
	if m.nft, err = nftables.New(nftables.AsLasting()); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	var internet []netip.Addr
	for _, e := range m.endpoints {
		if e.ep.Internet {
			internet = append(internet, e.ep.Addr)
		}
	}
	return m.installRules(internet)
}

// release frees the Manager's own descriptors.
func (m *Manager) release() {
	if m.nft != nil {
		_ = m.nft.CloseLasting()
		m.nft = nil
	}
	if m.nl != nil {
		m.nl.Close()
		m.nl = nil
	}
	if m.hostNs >= 0 {
		_ = unix.Close(m.hostNs)
		m.hostNs = -1
	}
}

// ensureBridge creates the bridge if needed, gives it the gateway address and
// brings it up.
func (m *Manager) ensureBridge() error {
	name := m.cfg.Bridge
	link, err := m.nl.LinkByName(name)
	if err != nil {
		if !isLinkNotFound(err) {
			return fmt.Errorf("look up bridge: %w", err)
		}
		la := netlink.NewLinkAttrs()
		la.Name = name
		// A fixed address stops the bridge from taking the lowest port
		// address, which would change the gateway's MAC under sandboxes.
		la.HardwareAddr = stableMAC(name)
		la.MTU = m.mtu
		if err := m.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge: %w", err)
		}
		if link, err = m.nl.LinkByName(name); err != nil {
			return fmt.Errorf("look up bridge: %w", err)
		}
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("link %s exists and is a %s, not a bridge", name, link.Type())
	}
	addrs, err := m.nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list bridge addresses: %w", err)
	}
	found := false
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		if ip == m.gateway && ones == m.cfg.Subnet.Bits() {
			found = true
			continue
		}
		return fmt.Errorf("bridge %s already has address %s/%d; want only %s/%d (remove it or pick another bridge)",
			name, ip, ones, m.gateway, m.cfg.Subnet.Bits())
	}
	if !found {
		if err := m.nl.AddrAdd(link, &netlink.Addr{IPNet: ipNet(m.gateway, m.cfg.Subnet.Bits())}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("address bridge: %w", err)
		}
	}
	// No IPv6 on the bridge: sandboxes get IPv4 only, and nothing on the
	// host should answer them over link-local IPv6.
	if err := writeSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := m.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring bridge up: %w", err)
	}
	m.bridge = link.Attrs().Index
	return nil
}

// Attach creates the sandbox's namespace and its veth, address and routes.
// On error nothing is left behind.
func (m *Manager) Attach(ctx context.Context, id string, opts Options) (*Endpoint, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("attach network: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("attach network %s: %w", id, err)
	}
	done, err := m.acquire()
	if err != nil {
		return nil, err
	}
	defer done()
	unlock := m.ids.lock(id)
	defer unlock()

	m.mu.Lock()
	if _, ok := m.endpoints[id]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("attach network %s: %w", id, ErrExists)
	}
	addr, err := m.pool.allocate()
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("attach network %s: %w", id, err)
	}

	e := &entry{nsFd: -1, ep: Endpoint{
		ID:        id,
		NetnsPath: m.netnsPath(id),
		HostVeth:  vethName(m.cfg.Bridge, id),
		Addr:      addr,
		Gateway:   m.gateway,
		Internet:  opts.Internet,
	}}
	if err := m.attach(ctx, e); err != nil {
		m.mu.Lock()
		m.pool.release(addr)
		m.mu.Unlock()
		return nil, fmt.Errorf("attach network %s: %w", id, err)
	}
	m.mu.Lock()
	m.endpoints[id] = e
	m.mu.Unlock()
	ep := e.ep
	return &ep, nil
}

// attach builds the endpoint, undoing every step already taken on error.
func (m *Manager) attach(ctx context.Context, e *entry) (err error) {
	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				slog.Warn("network: rollback step failed", "id", e.ep.ID, "err", uerr)
			}
		}
	}()

	// The record comes first: after a crash at any later step it names
	// everything Detach must remove and keeps the address reserved.
	if err := writeRecord(m.cfg.StateDir, e.ep); err != nil {
		return err
	}
	undo = append(undo, func() error { return removeRecord(m.cfg.StateDir, e.ep.ID) })

	inside, nsFd, err := m.createNetns(e.ep.NetnsPath)
	if err != nil {
		return err
	}
	defer inside.Close()
	e.nsFd = nsFd
	undo = append(undo, func() error {
		_ = unix.Close(e.nsFd)
		e.nsFd = -1
		return removeNetns(e.ep.NetnsPath)
	})
	if err := ctx.Err(); err != nil {
		return err
	}

	veth := netlink.NewVeth(netlink.LinkAttrs{
		Name:   e.ep.HostVeth,
		MTU:    m.mtu,
		TxQLen: -1,
		Flags:  net.FlagUp,
	})
	veth.PeerName = PeerName
	veth.PeerMTU = uint32(m.mtu)
	veth.PeerNamespace = netlink.NsFd(nsFd)
	if err := m.nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create veth %s: a link of that name exists (left by an earlier run? Detach clears it): %w", e.ep.HostVeth, err)
		}
		return fmt.Errorf("create veth %s: %w", e.ep.HostVeth, err)
	}
	undo = append(undo, func() error { return m.deleteLink(e.ep.HostVeth) })
	if veth.Index == 0 {
		return fmt.Errorf("create veth %s: no index after creation", e.ep.HostVeth)
	}
	if err := m.nl.LinkSetMasterByIndex(veth, m.bridge); err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", e.ep.HostVeth, m.cfg.Bridge, err)
	}
	if err := m.nl.LinkSetIsolated(veth, true); err != nil {
		return fmt.Errorf("isolate bridge port %s: %w", e.ep.HostVeth, err)
	}

	peer, err := inside.LinkByName(PeerName)
	if err != nil {
		return fmt.Errorf("find %s in netns: %w", PeerName, err)
	}
	if err := inside.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(e.ep.Addr, m.cfg.Subnet.Bits())}); err != nil {
		return fmt.Errorf("address %s: %w", PeerName, err)
	}
	if err := inside.LinkSetUp(peer); err != nil {
		return fmt.Errorf("bring %s up: %w", PeerName, err)
	}
	if err := inside.RouteAdd(&netlink.Route{
		LinkIndex: peer.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        e.ep.Gateway.AsSlice(),
	}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}

	if e.ep.Internet {
		if err := m.setInternet(e.ep.Addr, true); err != nil {
			return err
		}
		undo = append(undo, func() error { return m.setInternet(e.ep.Addr, false) })
	}
	return ctx.Err()
}

// Get returns an existing endpoint (from the state dir after a restart).
func (m *Manager) Get(id string) (*Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.endpoints[id]
	if !ok {
		return nil, fmt.Errorf("network endpoint %s: %w", id, ErrNotFound)
	}
	ep := e.ep
	return &ep, nil
}

// List returns every endpoint the manager has state for.
func (m *Manager) List() ([]*Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Endpoint, 0, len(m.endpoints))
	for _, e := range m.endpoints {
		ep := e.ep
		out = append(out, &ep)
	}
	return out, nil
}

// Detach removes every trace of an endpoint; absent endpoints are not an error.
// It also clears what a crash in the middle of Attach may have left (a
// namespace file without a record, a record without a veth).
func (m *Manager) Detach(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return fmt.Errorf("detach network: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("detach network %s: %w", id, err)
	}
	done, err := m.acquire()
	if err != nil {
		return err
	}
	defer done()
	unlock := m.ids.lock(id)
	defer unlock()

	m.mu.Lock()
	e := m.endpoints[id]
	m.mu.Unlock()

	if err := m.detach(id, e); err != nil {
		return fmt.Errorf("detach network %s: %w", id, err)
	}
	if e != nil {
		m.mu.Lock()
		delete(m.endpoints, id)
		m.pool.release(e.ep.Addr)
		m.mu.Unlock()
	}
	return nil
}

func (m *Manager) detach(id string, e *entry) error {
	vethName, nsPath := vethName(m.cfg.Bridge, id), m.netnsPath(id)
	if e != nil {
		// Stop new dials and wait for running ones.
		e.mu.Lock()
		e.gone = true
		if e.nsFd >= 0 {
			_ = unix.Close(e.nsFd)
			e.nsFd = -1
		}
		e.mu.Unlock()
		if e.ep.Internet {
			if err := m.setInternet(e.ep.Addr, false); err != nil {
				return err
			}
		}
		vethName, nsPath = e.ep.HostVeth, e.ep.NetnsPath
	}
	if err := m.deleteLink(vethName); err != nil {
		return err
	}
	if err := removeNetns(nsPath); err != nil {
		return err
	}
	// The record goes last so a crash above leaves something to retry with.
	return removeRecord(m.cfg.StateDir, id)
}

// deleteLink deletes a host link (a veth takes its peer along); a missing
// link is fine.
func (m *Manager) deleteLink(name string) error {
	link, err := m.nl.LinkByName(name)
	if err != nil {
		if isLinkNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up link %s: %w", name, err)
	}
	if err := m.nl.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// Dial connects to a TCP port on the sandbox's loopback from inside its namespace.
func (m *Manager) Dial(ctx context.Context, id string, port int) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("dial sandbox %s: port %d out of range", id, port)
	}
	done, err := m.acquire()
	if err != nil {
		return nil, err
	}
	defer done()
	m.mu.Lock()
	e, ok := m.endpoints[id]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial sandbox %s: %w", id, ErrNotFound)
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.gone {
		return nil, fmt.Errorf("dial sandbox %s: %w", id, ErrNotFound)
	}
	if e.nsFd < 0 {
		return nil, fmt.Errorf("dial sandbox %s: namespace %s is not available", id, e.ep.NetnsPath)
	}
	var conn net.Conn
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	err = m.inNetns(e.nsFd, func() error {
		// The socket belongs to the namespace of the thread creating it; a
		// single literal address makes the dialer connect on this goroutine.
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", addr)
		conn = c
		return err
	})
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, fmt.Errorf("dial sandbox %s port %d: %w", id, port, err)
	}
	return conn, nil
}

// ResolvConf returns the resolv.conf content sandboxes should get: the
// host's, unless its nameservers are unreachable from a sandbox (loopback or
// link-local), in which case public resolvers replace them.
func (m *Manager) ResolvConf() []byte {
	data, err := os.ReadFile(m.cfg.ResolvConf)
	if err != nil {
		slog.Warn("network: read host resolv.conf", "path", m.cfg.ResolvConf, "err", err)
	}
	return sandboxResolvConf(data)
}

// Close releases the manager; endpoints stay.
func (m *Manager) Close() error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.mu.Lock()
	for _, e := range m.endpoints {
		e.mu.Lock()
		if e.nsFd >= 0 {
			_ = unix.Close(e.nsFd)
			e.nsFd = -1
		}
		e.mu.Unlock()
	}
	m.mu.Unlock()
	m.release()
	return nil
}

// acquire holds the Manager open for one operation; call the returned
// function when done.
func (m *Manager) acquire() (func(), error) {
	m.life.RLock()
	if m.closed {
		m.life.RUnlock()
		return nil, ErrClosed
	}
	return m.life.RUnlock, nil
}

// Teardown detaches every endpoint, then removes the bridge and the
// nftables table (tests, uninstall). The Manager is closed afterwards.
func (m *Manager) Teardown() error {
	eps, _ := m.List()
	var errs []error
	for _, ep := range eps {
		if err := m.Detach(context.Background(), ep.ID); err != nil {
			errs = append(errs, err)
		}
	}
	done, err := m.acquire()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := m.deleteRules(); err != nil {
		errs = append(errs, err)
	}
	if err := m.deleteLink(m.cfg.Bridge); err != nil {
		errs = append(errs, fmt.Errorf("delete bridge: %w", err))
	}
	if err := unmountSharedMount(m.cfg.NetnsDir); err != nil {
		errs = append(errs, err)
	}
	done()
	if err := m.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down network %s: %w", m.cfg.Bridge, err)
	}
	return nil
}

func (m *Manager) netnsPath(id string) string { return filepath.Join(m.cfg.NetnsDir, id) }

// defaultRouteMTU is the MTU of the device carrying the host's IPv4 default
// route, or 1500.
func defaultRouteMTU(h *netlink.Handle) int {
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 1500
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex == 0 {
			continue
		}
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU >= 576 {
			return min(l.Attrs().MTU, 1500)
		}
	}
	return 1500
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}
