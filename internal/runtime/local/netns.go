package local

import (
	"context"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// dialInNetns connects to 127.0.0.1:port inside the network namespace at
// nsPath. The socket is created on an OS thread switched into that
// namespace, so it belongs there for its whole life; the connection is then
// used from anywhere.
func dialInNetns(ctx context.Context, nsPath string, port int) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		conn, restored, err := dialFromThread(ctx, nsPath, port)
		if restored {
			goruntime.UnlockOSThread()
		} // else the thread is still in the sandbox's namespace: let it exit with the goroutine
		ch <- result{conn, err}
	}()
	res := <-ch
	return res.conn, res.err
}

// dialFromThread runs on a locked thread; restored reports whether the
// thread is back in its original namespace.
func dialFromThread(ctx context.Context, nsPath string, port int) (conn net.Conn, restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("open own netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, fmt.Errorf("open sandbox netns: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter sandbox netns: %w", err)
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, false, fmt.Errorf("leave sandbox netns: %w", serr)
	}
	return conn, true, err
}

// mountSysfs mounts a read-only sysfs at target as seen from the network
// namespace at nsPath, so /sys/class/net inside a sandbox lists the
// sandbox's own devices. The sandbox cannot mount it itself: the namespace
// belongs to the host's user namespace.
func mountSysfs(nsPath, target string) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		restored, err := mountSysfsFromThread(nsPath, target)
		if restored {
			goruntime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func mountSysfsFromThread(nsPath, target string) (restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("open own netns: %w", err)
	}
	defer orig.Close()
	ns, err := os.Open(nsPath)
	if err != nil {
		return true, fmt.Errorf("open sandbox netns: %w", err)
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("enter sandbox netns: %w", err)
	}
	err = unix.Mount("sysfs", target, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
		if err == nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
		}
		return false, fmt.Errorf("leave sandbox netns: %w", serr)
	}
	if err != nil {
		return true, fmt.Errorf("mount sysfs: %w", err)
	}
	return true, nil
}
