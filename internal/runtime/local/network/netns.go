package network

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Sysctls every sandbox namespace gets: root of the sandbox's user namespace
// may bind low ports, and any group may open ICMP echo sockets (ping).
var sandboxSysctls = []struct{ key, value string }{
	{"net/ipv4/ip_unprivileged_port_start", "0"},
	{"net/ipv4/ping_group_range", "0 2147483647"},
	// Devices created afterwards (eth0) have no IPv6; lo keeps ::1.
	{"net/ipv6/conf/default/disable_ipv6", "1"},
}

// inNetns runs fn on an OS thread that has joined the network namespace
// nsFd, and returns the thread to the host namespace afterwards. Sockets fn
// creates belong to that namespace. If the thread cannot return, it is left
// locked so that it dies with its goroutine rather than serve other code in
// the wrong namespace.
func (m *Manager) inNetns(nsFd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(nsFd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("join netns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(m.hostNs, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to host netns: %w", err))
			return // thread stays locked and exits
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// createNetns creates a network namespace, pins it by bind-mounting it onto
// path, brings its loopback up and sets the sandbox sysctls. It returns a
// netlink handle working inside the namespace and an open descriptor of it.
// On error nothing is left.
func (m *Manager) createNetns(path string) (inside *netlink.Handle, nsFd int, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, -1, fmt.Errorf("netns file %s exists (left by an earlier run? Detach clears it): %w", path, err)
		}
		return nil, -1, fmt.Errorf("create netns file: %w", err)
	}
	_ = f.Close()

	type result struct {
		h   *netlink.Handle
		fd  int
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			resc <- result{fd: -1, err: fmt.Errorf("unshare netns: %w", err)}
			return
		}
		r := result{fd: -1}
		r.h, r.fd, r.err = setupNetns(path)
		if err := unix.Setns(m.hostNs, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread exits with this goroutine.
			r.err = errors.Join(r.err, fmt.Errorf("return to host netns: %w", err))
			resc <- r
			return
		}
		runtime.UnlockOSThread()
		resc <- r
	}()
	r := <-resc
	if r.err != nil {
		if r.h != nil {
			r.h.Close()
		}
		if r.fd >= 0 {
			_ = unix.Close(r.fd)
		}
		if rerr := removeNetns(path); rerr != nil {
			r.err = errors.Join(r.err, rerr)
		}
		return nil, -1, r.err
	}
	return r.h, r.fd, nil
}

// setupNetns runs on a thread inside the new namespace.
func setupNetns(path string) (*netlink.Handle, int, error) {
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
		return nil, -1, fmt.Errorf("pin netns at %s: %w", path, err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("open netns: %w", err)
	}
	// Netlink sockets belong to the namespace they are created in, so this
	// handle keeps working inside it after the thread leaves.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fd, fmt.Errorf("netlink in netns: %w", err)
	}
	// Loopback is ifindex 1 in every namespace; no lookup needed.
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo"}}); err != nil {
		return h, fd, fmt.Errorf("bring lo up: %w", err)
	}
	// /proc/sys/net shows the namespace of the thread that opens it.
	for _, s := range sandboxSysctls {
		if err := writeSysctl(s.key, s.value); err != nil {
			if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(s.key, "net/ipv6/") {
				continue // kernel without IPv6
			}
			return h, fd, err
		}
	}
	return h, fd, nil
}

// removeNetns unpins a namespace and removes its file; a missing file or a
// file that is not mounted is fine.
func removeNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns file: %w", err)
	}
	return nil
}

// writeSysctl writes value to /proc/sys/<key> (key with slashes).
func writeSysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// makeSharedMount turns dir into a mount point with shared propagation, as
// iproute2 does for /run/netns: a namespace unpinned here is then unpinned in
// every mount namespace that copied the mount meanwhile, instead of being
// kept alive there.
func makeSharedMount(dir string) error {
	err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) { // EINVAL: not a mount point yet
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// unmountSharedMount undoes makeSharedMount when dir is a bind of itself with
// nothing left in it.
func unmountSharedMount(dir string) error {
	selfBind, err := isSelfBind(dir)
	if err != nil || !selfBind {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return nil
	}
	for {
		// Several binds may be stacked if New ran concurrently; drop all.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return nil
			}
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		if ok, err := isSelfBind(dir); err != nil || !ok {
			return err
		}
	}
}

// isSelfBind reports whether dir is a mount point that binds a directory of
// the same path (its root is a suffix of dir: the file system below may be
// mounted higher up, as a tmpfs on /run is).
func isSelfBind(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		root := unescapeMountinfo(fields[3])
		if unescapeMountinfo(fields[4]) == dir && root != "/" && strings.HasSuffix(dir, root) {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMountinfo decodes the octal escapes (\040 and the like) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
