package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Test host objects use their own names so they never touch a real install.
const (
	testBridge = "pdtest0"
	testTable  = "pdtest"
	uplinkHost = "pdtup0" // host side of the fake internet's veth
)

var (
	testSubnet = netip.MustParsePrefix("10.232.0.0/24")
	// The fake internet: the host is .1 on it, a server answers on .2 and .3;
	// .3 is on the deny list.
	uplinkNet    = netip.MustParsePrefix("10.233.0.0/24")
	uplinkHostIP = netip.MustParseAddr("10.233.0.1")
	uplinkSrvIP  = netip.MustParseAddr("10.233.0.2")
	uplinkDenyIP = netip.MustParseAddr("10.233.0.3")
)

const blockedDialTimeout = 700 * time.Millisecond

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (network namespaces, veth, nftables)")
	}
}

func testConfig(t testing.TB) Config {
	dir := t.TempDir()
	return Config{
		Bridge:     testBridge,
		Subnet:     testSubnet,
		StateDir:   filepath.Join(dir, "state"),
		NetnsDir:   filepath.Join(dir, "netns"),
		Table:      testTable,
		DenyEgress: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.PrefixFrom(uplinkDenyIP, 32)},
	}
}

// newTestManager starts a Manager on test names and tears the host side
// down when the test ends.
func newTestManager(t testing.TB) (*Manager, Config) {
	t.Helper()
	requireRoot(t)
	cfg := testConfig(t)
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		// A fresh Manager also cleans up after managers the test closed.
		m2, err := New(cfg)
		if err != nil {
			t.Errorf("New for teardown: %v", err)
			return
		}
		if err := m2.Teardown(); err != nil {
			t.Errorf("Teardown: %v", err)
		}
		_ = m.Close()
		if l, err := netlink.LinkByName(testBridge); err == nil {
			t.Errorf("bridge %s still exists after Teardown: %v", testBridge, l.Attrs().Name)
		}
	})
	return m, cfg
}

// inNS runs fn on a thread inside the namespace pinned at path.
func inNS(path string, fn func() error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	host, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(host)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(host, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// dialFrom connects from inside the namespace at nsPath to addr.
func dialFrom(nsPath string, addr netip.AddrPort, timeout time.Duration) error {
	return inNS(nsPath, func() error {
		c, err := net.DialTimeout("tcp4", addr.String(), timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// server is a TCP listener that answers "hello <remote ip>\n" and closes.
type server struct {
	ln net.Listener
	wg sync.WaitGroup
}

// listenIn starts a server inside the namespace at nsPath ("" = host).
func listenIn(t testing.TB, nsPath, addr string) *server {
	t.Helper()
	var ln net.Listener
	listen := func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}
	var err error
	if nsPath == "" {
		err = listen()
	} else {
		err = inNS(nsPath, listen) // a listening socket keeps its namespace
	}
	if err != nil {
		t.Fatalf("listen on %s in %q: %v", addr, nsPath, err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			_, _ = fmt.Fprintf(c, "hello %s\n", host)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); s.wg.Wait() })
	return s
}

func (s *server) port() uint16 { return uint16(s.ln.Addr().(*net.TCPAddr).Port) }

// greetFrom connects from nsPath to addr and returns the server's greeting.
func greetFrom(nsPath string, addr netip.AddrPort) (string, error) {
	var line string
	err := inNS(nsPath, func() error {
		c, err := net.DialTimeout("tcp4", addr.String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

func attach(t testing.TB, m *Manager, id string, internet bool) *Endpoint {
	t.Helper()
	ep, err := m.Attach(context.Background(), id, Options{Internet: internet})
	if err != nil {
		t.Fatalf("Attach %s: %v", id, err)
	}
	return ep
}

func readSysctlIn(t *testing.T, nsPath, key string) string {
	t.Helper()
	var v []byte
	if err := inNS(nsPath, func() (err error) {
		v, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	}); err != nil {
		t.Fatalf("read %s in netns: %v", key, err)
	}
	return strings.TrimSpace(string(v))
}

func TestAttachCreatesNamespaceVethAndAddress(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	ep := attach(t, m, "isbx1", false)

	if ep.ID != "isbx1" || !testSubnet.Contains(ep.Addr) || ep.Gateway != netip.MustParseAddr("10.232.0.1") ||
		ep.Addr == ep.Gateway || ep.NetnsPath != filepath.Join(cfg.NetnsDir, "isbx1") || ep.Internet {
		t.Fatalf("unexpected endpoint %+v", ep)
	}
	if len(ep.HostVeth) > 15 || !strings.HasPrefix(ep.HostVeth, "pd") {
		t.Fatalf("host veth name %q", ep.HostVeth)
	}

	// The namespace file is an nsfs mount.
	var st unix.Statfs_t
	if err := unix.Statfs(ep.NetnsPath, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Fatalf("netns file %s: statfs type %#x err %v, want nsfs", ep.NetnsPath, st.Type, err)
	}
	if _, err := os.Stat(recordPath(cfg.StateDir, ep.ID)); err != nil {
		t.Fatalf("state file: %v", err)
	}

	// Host side: up, on the bridge, isolated.
	hv, err := netlink.LinkByName(ep.HostVeth)
	if err != nil {
		t.Fatalf("host veth: %v", err)
	}
	br, err := netlink.LinkByName(testBridge)
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if hv.Type() != "veth" || hv.Attrs().MasterIndex != br.Attrs().Index || hv.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("host veth %s: type %s master %d (bridge %d) flags %v", ep.HostVeth, hv.Type(), hv.Attrs().MasterIndex, br.Attrs().Index, hv.Attrs().Flags)
	}
	pi, err := netlink.LinkGetProtinfo(hv)
	if err != nil || !pi.Isolated {
		t.Fatalf("bridge port isolation of %s: %+v err %v", ep.HostVeth, pi, err)
	}

	// Inside: lo and eth0 up, the address, a default route via the gateway.
	ns, err := netns.GetFromPath(ep.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"eth0", "lo"}) {
		t.Fatalf("links in netns: %v, want eth0 and lo", names)
	}
	eth0, _ := h.LinkByName("eth0")
	lo, _ := h.LinkByName("lo")
	if eth0.Attrs().Flags&net.FlagUp == 0 || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("eth0 flags %v lo flags %v: want both up", eth0.Attrs().Flags, lo.Attrs().Flags)
	}
	if eth0.Attrs().MTU != hv.Attrs().MTU {
		t.Fatalf("MTU eth0 %d host %d", eth0.Attrs().MTU, hv.Attrs().MTU)
	}
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 {
		t.Fatalf("eth0 addresses %v err %v", addrs, err)
	}
	if got := addrs[0].IPNet.String(); got != netip.PrefixFrom(ep.Addr, 24).String() {
		t.Fatalf("eth0 address %s, want %s/24", got, ep.Addr)
	}
	routes, err := h.RouteList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var gw string
	for _, r := range routes {
		if r.Gw != nil {
			gw = r.Gw.String()
		}
	}
	if gw != ep.Gateway.String() {
		t.Fatalf("default route gateway %q, want %s (routes %v)", gw, ep.Gateway, routes)
	}
	if v := readSysctlIn(t, ep.NetnsPath, "net/ipv4/ip_unprivileged_port_start"); v != "0" {
		t.Fatalf("ip_unprivileged_port_start = %q inside", v)
	}
	if v := readSysctlIn(t, ep.NetnsPath, "net/ipv4/ping_group_range"); strings.Join(strings.Fields(v), " ") != "0 2147483647" {
		t.Fatalf("ping_group_range = %q inside", v)
	}
	if v, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(v)) != "1" {
		t.Fatalf("host ip_forward = %q", v)
	}

	// Get, List and duplicate IDs.
	got, err := m.Get("isbx1")
	if err != nil || *got != *ep {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, ep)
	}
	if _, err := m.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown: %v, want ErrNotFound", err)
	}
	if _, err := m.Attach(ctx, "isbx1", Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Attach: %v, want ErrExists", err)
	}
	ep2 := attach(t, m, "isbx2", true)
	if ep2.Addr == ep.Addr {
		t.Fatalf("two endpoints share %s", ep.Addr)
	}
	list, _ := m.List()
	if len(list) != 2 {
		t.Fatalf("List: %d endpoints, want 2", len(list))
	}
	set, err := m.internetAddrs()
	if err != nil || !slices.Equal(set, []netip.Addr{ep2.Addr}) {
		t.Fatalf("internet set %v err %v, want [%s]", set, err, ep2.Addr)
	}
}

func TestSandboxesCannotReachEachOther(t *testing.T) {
	m, _ := newTestManager(t)
	ep1 := attach(t, m, "iiso1", true)
	ep2 := attach(t, m, "iiso2", true)
	srv := listenIn(t, ep2.NetnsPath, "0.0.0.0:0")
	target := netip.AddrPortFrom(ep2.Addr, srv.port())

	// Control: the host reaches the sandbox, so the listener is up.
	c, err := net.DialTimeout("tcp4", target.String(), 2*time.Second)
	if err != nil {
		t.Fatalf("host → sandbox %s: %v", target, err)
	}
	c.Close()
	if err := dialFrom(ep2.NetnsPath, target, 2*time.Second); err != nil {
		t.Fatalf("sandbox → its own address: %v", err)
	}

	if err := dialFrom(ep1.NetnsPath, target, blockedDialTimeout); err == nil {
		t.Fatalf("sandbox 1 reached sandbox 2 at %s", target)
	}
	// Not through the gateway either (routed, not bridged).
	if err := inNS(ep1.NetnsPath, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		return h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(ep2.Addr, 32), Gw: ep1.Gateway.AsSlice()})
	}); err != nil {
		t.Fatalf("add host route via gateway inside sandbox 1 (test setup): %v", err)
	}
	if err := dialFrom(ep1.NetnsPath, target, blockedDialTimeout); err == nil {
		t.Fatalf("sandbox 1 reached sandbox 2 at %s through the gateway", target)
	}
}

// hostAddr is the host's primary IPv4 address (source of the default route).
func hostAddr(t *testing.T) netip.Addr {
	t.Helper()
	routes, err := netlink.RouteGet(net.ParseIP("192.0.2.200"))
	if err == nil && len(routes) > 0 && routes[0].Src != nil {
		if a, ok := netip.AddrFromSlice(routes[0].Src.To4()); ok && !a.IsLoopback() {
			return a
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		if !ip.IsLoopback() && !testSubnet.Contains(ip) && !uplinkNet.Contains(ip) {
			return ip
		}
	}
	t.Fatal("host has no non-loopback IPv4 address")
	return netip.Addr{}
}

func TestSandboxCannotReachHostServices(t *testing.T) {
	m, _ := newTestManager(t)
	ep := attach(t, m, "ihost1", true)
	srv := listenIn(t, "", "0.0.0.0:0")
	port := srv.port()
	targets := []netip.AddrPort{
		netip.AddrPortFrom(ep.Gateway, port),
		netip.AddrPortFrom(hostAddr(t), port),
	}
	for _, target := range targets {
		if c, err := net.DialTimeout("tcp4", target.String(), 2*time.Second); err != nil {
			t.Fatalf("host → own listener at %s: %v", target, err)
		} else {
			c.Close()
		}
		if err := dialFrom(ep.NetnsPath, target, blockedDialTimeout); err == nil {
			t.Fatalf("sandbox reached host service at %s", target)
		}
	}

	// The rules, not something else, block it: without the table the same
	// dial succeeds; with it reinstalled it fails again.
	if err := m.deleteRules(); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(ep.NetnsPath, targets[0], 2*time.Second); err != nil {
		t.Fatalf("without rules sandbox → %s: %v (the test cannot tell the rules work)", targets[0], err)
	}
	if err := m.installRules([]netip.Addr{ep.Addr}); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(ep.NetnsPath, targets[0], blockedDialTimeout); err == nil {
		t.Fatalf("sandbox reached host service at %s after rules were reinstalled", targets[0])
	}
}

func TestDialReachesSandboxLoopback(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	ep := attach(t, m, "idial1", false)
	srv := listenIn(t, ep.NetnsPath, "127.0.0.1:0")
	hostSrv := listenIn(t, "", "127.0.0.1:0")

	greet := func() (string, error) {
		c, err := m.Dial(ctx, ep.ID, int(srv.port()))
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	line, err := greet()
	if err != nil || line != "hello 127.0.0.1" {
		t.Fatalf("Dial: %q, %v", line, err)
	}

	// Many concurrent dials; every goroutine's thread must be back in the
	// host namespace afterwards, where only the host listener exists.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 32 {
		wg.Go(func() {
			if _, err := greet(); err != nil {
				errs <- fmt.Errorf("dial sandbox: %w", err)
				return
			}
			c, err := net.DialTimeout("tcp4", hostSrv.ln.Addr().String(), 2*time.Second)
			if err != nil {
				errs <- fmt.Errorf("dial host after sandbox dial: %w", err)
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	if _, err := m.Dial(ctx, "nope", 80); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Dial unknown: %v, want ErrNotFound", err)
	}
	if _, err := m.Dial(ctx, ep.ID, 0); err == nil {
		t.Fatal("Dial port 0: no error")
	}
	// A port nothing listens on inside (the host listener's port is free there).
	if c, err := m.Dial(ctx, ep.ID, int(hostSrv.port())); err == nil {
		c.Close()
		t.Fatalf("Dial reached port %d, which only the host listens on", hostSrv.port())
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Dial(cctx, ep.ID, int(srv.port())); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with cancelled context: %v", err)
	}
	if err := m.Detach(ctx, ep.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Dial(ctx, ep.ID, int(srv.port())); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Dial after Detach: %v, want ErrNotFound", err)
	}
}

// uplink builds a fake internet: a namespace joined to the host by a veth
// (host 10.233.0.1, inside .2 and .3) with a server on every address.
func uplink(t *testing.T, m *Manager) *server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "uplink")
	inside, fd, err := m.createNetns(path)
	if err != nil {
		t.Fatalf("uplink netns: %v", err)
	}
	defer inside.Close()
	t.Cleanup(func() {
		_ = unix.Close(fd)
		if l, err := netlink.LinkByName(uplinkHost); err == nil {
			_ = netlink.LinkDel(l)
		}
		if err := removeNetns(path); err != nil {
			t.Error(err)
		}
	})
	if l, err := netlink.LinkByName(uplinkHost); err == nil {
		_ = netlink.LinkDel(l) // from an aborted run
	}
	veth := netlink.NewVeth(netlink.LinkAttrs{Name: uplinkHost, TxQLen: -1, Flags: net.FlagUp})
	veth.PeerName = "up0"
	veth.PeerNamespace = netlink.NsFd(fd)
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("uplink veth: %v", err)
	}
	hl, err := netlink.LinkByName(uplinkHost)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: ipNet(uplinkHostIP, 24)}); err != nil {
		t.Fatal(err)
	}
	up0, err := inside.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{uplinkSrvIP, uplinkDenyIP} {
		if err := inside.AddrAdd(up0, &netlink.Addr{IPNet: ipNet(a, 24)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := inside.LinkSetUp(up0); err != nil {
		t.Fatal(err)
	}
	// The server answers on every address; no route back to the sandbox
	// subnet exists, so only masqueraded traffic can get replies.
	return listenIn(t, path, "0.0.0.0:0")
}

func TestEgressFollowsInternetOption(t *testing.T) {
	m, _ := newTestManager(t)
	srv := uplink(t, m)
	on := attach(t, m, "inet1", true)
	off := attach(t, m, "inet2", false)
	target := netip.AddrPortFrom(uplinkSrvIP, srv.port())

	line, err := greetFrom(on.NetnsPath, target)
	if err != nil {
		t.Fatalf("sandbox with Internet → %s: %v", target, err)
	}
	if want := "hello " + uplinkHostIP.String(); line != want {
		t.Fatalf("server saw %q, want %q (masqueraded, not %s)", line, want, on.Addr)
	}
	if err := dialFrom(off.NetnsPath, target, blockedDialTimeout); err == nil {
		t.Fatalf("sandbox without Internet reached %s", target)
	}
	if err := dialFrom(on.NetnsPath, netip.AddrPortFrom(uplinkDenyIP, srv.port()), blockedDialTimeout); err == nil {
		t.Fatalf("sandbox reached %s on the deny list", uplinkDenyIP)
	}

	// Re-attaching with the other policy flips it.
	ctx := context.Background()
	for _, id := range []string{on.ID, off.ID} {
		if err := m.Detach(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	off2 := attach(t, m, on.ID, false)
	on2 := attach(t, m, off.ID, true)
	if err := dialFrom(off2.NetnsPath, target, blockedDialTimeout); err == nil {
		t.Fatalf("re-attached sandbox without Internet reached %s", target)
	}
	if _, err := greetFrom(on2.NetnsPath, target); err != nil {
		t.Fatalf("re-attached sandbox with Internet → %s: %v", target, err)
	}
}

func TestRestartedManagerKeepsEndpoints(t *testing.T) {
	m1, cfg := newTestManager(t)
	ctx := context.Background()
	srv := uplink(t, m1)
	a := attach(t, m1, "irst1", true)
	b := attach(t, m1, "irst2", false)
	inner := listenIn(t, a.NetnsPath, "127.0.0.1:0")
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Attach(ctx, "irst9", Options{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Attach after Close: %v, want ErrClosed", err)
	}

	m2, err := New(cfg)
	if err != nil {
		t.Fatalf("New again: %v", err)
	}
	defer m2.Close()
	for _, want := range []*Endpoint{a, b} {
		got, err := m2.Get(want.ID)
		if err != nil || *got != *want {
			t.Fatalf("Get %s after restart = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	if list, _ := m2.List(); len(list) != 2 {
		t.Fatalf("List after restart: %d endpoints", len(list))
	}
	c := attach(t, m2, "irst3", false)
	if c.Addr == a.Addr || c.Addr == b.Addr {
		t.Fatalf("new endpoint got taken address %s", c.Addr)
	}
	// The restored endpoints still work: egress policy and Dial.
	if _, err := greetFrom(a.NetnsPath, netip.AddrPortFrom(uplinkSrvIP, srv.port())); err != nil {
		t.Fatalf("egress of restored endpoint: %v", err)
	}
	if err := dialFrom(b.NetnsPath, netip.AddrPortFrom(uplinkSrvIP, srv.port()), blockedDialTimeout); err == nil {
		t.Fatal("restored endpoint without Internet has egress")
	}
	conn, err := m2.Dial(ctx, a.ID, int(inner.port()))
	if err != nil {
		t.Fatalf("Dial restored endpoint: %v", err)
	}
	conn.Close()
	if err := m2.Detach(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if set, _ := m2.internetAddrs(); len(set) != 0 {
		t.Fatalf("internet set after Detach: %v", set)
	}
}

// snapshot counts what endpoints leave on the host (links: the manager's
// bridge and the veths enslaved to it).
type snapshot struct {
	links, netnsFiles, stateFiles, setElems, mounts int
}

func takeSnapshot(t *testing.T, m *Manager, cfg Config) snapshot {
	t.Helper()
	var s snapshot
	// Only this manager's links count: other test packages create and
	// delete veths on the same host at the same time.
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if a := l.Attrs(); a.Index == br.Attrs().Index || a.MasterIndex == br.Attrs().Index {
			s.links++
		}
	}
	nf, _ := os.ReadDir(cfg.NetnsDir)
	sf, _ := os.ReadDir(cfg.StateDir)
	s.netnsFiles, s.stateFiles = len(nf), len(sf)
	set, err := m.internetAddrs()
	if err != nil {
		t.Fatal(err)
	}
	s.setElems = len(set)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	s.mounts = strings.Count(string(mi), cfg.NetnsDir+"/")
	return s
}

func TestDetachLeavesNothing(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	before := takeSnapshot(t, m, cfg)
	if before != (snapshot{links: before.links}) {
		t.Fatalf("fresh manager already has objects: %+v", before)
	}

	ep := attach(t, m, "ileak", true)
	during := takeSnapshot(t, m, cfg)
	if want := (snapshot{links: before.links + 1, netnsFiles: 1, stateFiles: 1, setElems: 1, mounts: 1}); during != want {
		t.Fatalf("with one endpoint: %+v, want %+v", during, want)
	}
	if err := m.Detach(ctx, ep.ID); err != nil {
		t.Fatal(err)
	}
	if after := takeSnapshot(t, m, cfg); after != before {
		t.Fatalf("after Detach: %+v, want %+v", after, before)
	}
	if _, err := netlink.LinkByName(ep.HostVeth); err == nil {
		t.Fatalf("veth %s survived Detach", ep.HostVeth)
	}
	if err := m.Detach(ctx, ep.ID); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	if err := m.Detach(ctx, "neverexisted"); err != nil {
		t.Fatalf("Detach of unknown id: %v", err)
	}

	for i := range 50 {
		ep := attach(t, m, fmt.Sprintf("icycle%d", i), i%2 == 0)
		if err := m.Detach(ctx, ep.ID); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	if after := takeSnapshot(t, m, cfg); after != before {
		t.Fatalf("after 50 cycles: %+v, want %+v", after, before)
	}
	m.mu.Lock()
	used := len(m.pool.used)
	m.mu.Unlock()
	if used != 0 {
		t.Fatalf("%d addresses still allocated", used)
	}
}

func TestConcurrentAttachDetach(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	before := takeSnapshot(t, m, cfg)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	seen := sync.Map{}
	for w := range 8 {
		wg.Go(func() {
			for i := range 5 {
				id := fmt.Sprintf("iconc%d-%d", w, i)
				ep, err := m.Attach(ctx, id, Options{Internet: i%2 == 1})
				if err != nil {
					errs <- err
					return
				}
				if other, dup := seen.LoadOrStore(ep.Addr, id); dup {
					errs <- fmt.Errorf("%s and %s both hold %s", id, other, ep.Addr)
				}
				seen.Delete(ep.Addr) // before Detach frees it for others
				if err := m.Detach(ctx, id); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	// Concurrent Attach of one ID: exactly one wins.
	var wins, exists int
	var mu sync.Mutex
	for range 4 {
		wg.Go(func() {
			_, err := m.Attach(ctx, "isame", Options{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrExists):
				exists++
			default:
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if wins != 1 || exists != 3 {
		t.Fatalf("concurrent Attach of one ID: %d succeeded, %d ErrExists", wins, exists)
	}
	if err := m.Detach(ctx, "isame"); err != nil {
		t.Fatal(err)
	}
	if after := takeSnapshot(t, m, cfg); after != before {
		t.Fatalf("after concurrent cycles: %+v, want %+v", after, before)
	}
}

func TestDetachClearsHalfCreatedEndpoints(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	before := takeSnapshot(t, m, cfg)

	// A namespace file without a record (crash before the record existed).
	path := m.netnsPath("ihalf1")
	h, fd, err := m.createNetns(path)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	unix.Close(fd)
	if _, err := m.Attach(ctx, "ihalf1", Options{}); err == nil {
		t.Fatal("Attach over a leftover netns file succeeded")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("failed Attach removed a netns file it did not create: %v", err)
	}
	if err := m.Detach(ctx, "ihalf1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("netns file after Detach: %v", err)
	}

	// A host veth without anything else.
	name := vethName(testBridge, "ihalf2")
	v := netlink.NewVeth(netlink.LinkAttrs{Name: name, TxQLen: -1})
	v.PeerName = "pdtesthalfp"
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	if err := m.Detach(ctx, "ihalf2"); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatalf("veth %s survived Detach", name)
	}

	// A record without namespace or veth (crash right after writing it),
	// found by a restarted manager.
	ep := Endpoint{ID: "ihalf3", NetnsPath: m.netnsPath("ihalf3"), HostVeth: vethName(testBridge, "ihalf3"),
		Addr: netip.MustParseAddr("10.232.0.77"), Gateway: m.gateway}
	if err := writeRecord(cfg.StateDir, ep); err != nil {
		t.Fatal(err)
	}
	// And a temp file of an interrupted write.
	if err := os.WriteFile(filepath.Join(cfg.StateDir, ".ihalf4.123.tmp"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got, err := m2.Get("ihalf3"); err != nil || *got != ep {
		t.Fatalf("Get half-created = %+v, %v", got, err)
	}
	if _, err := m2.Dial(ctx, "ihalf3", 80); err == nil {
		t.Fatal("Dial into a missing namespace succeeded")
	}
	if err := m2.Detach(ctx, "ihalf3"); err != nil {
		t.Fatal(err)
	}
	if after := takeSnapshot(t, m2, cfg); after != before {
		t.Fatalf("after clearing half-created endpoints: %+v, want %+v", after, before)
	}
}

func TestAttachRollsBackOnError(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	before := takeSnapshot(t, m, cfg)

	// Someone else's link holds the veth name: creating the veth fails late.
	name := vethName(testBridge, "iroll")
	squatter := netlink.NewVeth(netlink.LinkAttrs{Name: name, TxQLen: -1})
	squatter.PeerName = "pdtestrollp"
	if err := netlink.LinkAdd(squatter); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	if _, err := m.Attach(ctx, "iroll", Options{Internet: true}); err == nil {
		t.Fatal("Attach succeeded although the veth name is taken")
	}
	if _, err := netlink.LinkByName(name); err != nil {
		t.Fatalf("rollback deleted a link it did not create: %v", err)
	}
	if l, _ := netlink.LinkByName(name); l != nil {
		_ = netlink.LinkDel(l)
	}
	if after := takeSnapshot(t, m, cfg); after != before {
		t.Fatalf("after failed Attach: %+v, want %+v", after, before)
	}
	if _, err := m.Get("iroll"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after failed Attach: %v", err)
	}
	m.mu.Lock()
	used := len(m.pool.used)
	m.mu.Unlock()
	if used != 0 {
		t.Fatalf("failed Attach kept %d addresses", used)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Attach(cctx, "iroll2", Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Attach with cancelled context: %v", err)
	}
	for _, bad := range []string{"", "../x", "a/b", "-x", strings.Repeat("a", 129), "a b"} {
		if _, err := m.Attach(ctx, bad, Options{}); err == nil {
			t.Fatalf("Attach accepted id %q", bad)
		}
		if err := m.Detach(ctx, bad); err == nil {
			t.Fatalf("Detach accepted id %q", bad)
		}
	}
	if after := takeSnapshot(t, m, cfg); after != before {
		t.Fatalf("after bad input: %+v, want %+v", after, before)
	}
}

func TestSubnetExhaustion(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	cfg.Subnet = netip.MustParsePrefix("10.232.1.0/29") // .2 to .6
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Teardown(); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	var got []string
	for i := range 5 {
		ep := attach(t, m, fmt.Sprintf("iex%d", i), false)
		got = append(got, ep.Addr.String())
	}
	if want := []string{"10.232.1.2", "10.232.1.3", "10.232.1.4", "10.232.1.5", "10.232.1.6"}; !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	if _, err := m.Attach(ctx, "iex5", Options{}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Attach on a full subnet: %v, want ErrExhausted", err)
	}
	if err := m.Detach(ctx, "iex2"); err != nil {
		t.Fatal(err)
	}
	if ep := attach(t, m, "iex5", false); ep.Addr.String() != "10.232.1.4" {
		t.Fatalf("freed address not reused: got %s", ep.Addr)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	requireRoot(t)
	bad := []func(*Config){
		func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") },
		func(c *Config) { c.Subnet = netip.MustParsePrefix("10.232.0.0/31") },
		func(c *Config) { c.Bridge = "a-very-long-bridge-name" },
		func(c *Config) { c.StateDir = "relative" },
		func(c *Config) { c.MTU = 100 },
		func(c *Config) { c.Bridge = "lo" }, // exists, not a bridge
	}
	for i, f := range bad {
		cfg := testConfig(t)
		f(&cfg)
		if m, err := New(cfg); err == nil {
			_ = m.Teardown()
			t.Fatalf("config %d accepted: %+v", i, cfg)
		}
	}
}

func TestNewIsIdempotent(t *testing.T) {
	m, cfg := newTestManager(t)
	ep := attach(t, m, "iidem", true)
	for range 3 {
		m2, err := New(cfg)
		if err != nil {
			t.Fatalf("New on a prepared host: %v", err)
		}
		m2.Close()
	}
	br, err := netlink.LinkByName(testBridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.232.0.1/24" {
		t.Fatalf("bridge addresses after repeated New: %v", addrs)
	}
	if set, err := m.internetAddrs(); err != nil || !slices.Equal(set, []netip.Addr{ep.Addr}) {
		t.Fatalf("internet set after repeated New: %v %v", set, err)
	}
	// Another subnet on the same bridge is refused, and leaves it alone.
	other := cfg
	other.Subnet = netip.MustParsePrefix("10.232.5.0/24")
	if m3, err := New(other); err == nil {
		m3.Close()
		t.Fatal("New accepted a bridge that holds another subnet's gateway")
	}
	if addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4); len(addrs) != 1 {
		t.Fatalf("bridge addresses after refused New: %v", addrs)
	}
	// The namespace directory is a shared mount once, not once per New.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	n := 0
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == cfg.NetnsDir {
			n++
			if !strings.Contains(l, "shared:") {
				t.Fatalf("netns dir mount is not shared: %s", l)
			}
		}
	}
	if n != 1 {
		t.Fatalf("netns dir mounted %d times", n)
	}
}

func TestResolvConfFile(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	cfg.ResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(cfg.ResolvConf, []byte("nameserver 127.0.0.53\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Teardown() })
	if got, want := string(m.ResolvConf()), "nameserver 1.1.1.1\nnameserver 8.8.8.8\noptions edns0\n"; got != want {
		t.Fatalf("ResolvConf = %q, want %q", got, want)
	}
}

func BenchmarkAttachDetach(b *testing.B) {
	m, _ := newTestManager(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("ibench%d", i)
		i++
		if _, err := m.Attach(ctx, id, Options{Internet: true}); err != nil {
			b.Fatal(err)
		}
		if err := m.Detach(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttach times Attach alone (Detach runs outside the timer).
func BenchmarkAttach(b *testing.B) {
	m, _ := newTestManager(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("ibench%d", i)
		i++
		if _, err := m.Attach(ctx, id, Options{Internet: true}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := m.Detach(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkDial(b *testing.B) {
	m, _ := newTestManager(b)
	ctx := context.Background()
	ep := attach(b, m, "ibdial", false)
	srv := listenIn(b, ep.NetnsPath, "127.0.0.1:0")
	port := int(srv.port())
	for b.Loop() {
		c, err := m.Dial(ctx, ep.ID, port)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
}
