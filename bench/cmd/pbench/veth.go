package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func init() {
	subcommands["veth"] = subcommand{"network floor: netns + veth with the peer made inside it, then delete (sync) and the netns file; what attach/detach cost", runVeth}
}

// runVeth times, per iteration: unshare a network namespace and pin it with
// a bind mount, create a veth pair whose peer is born in that namespace,
// then delete the host end (the kernel waits for the peer's namespace to let
// go: synchronize_net) and unmount and remove the namespace file.
func runVeth(args []string) (*result, error) {
	fs := flag.NewFlagSet("veth", flag.ContinueOnError)
	n := fs.Int("n", 30, "iterations")
	dir := fs.String("dir", "/run/paddock-bench-netns", "where namespace files are bind-mounted (created, removed)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *n < 1 {
		return nil, errors.New("--n must be positive")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(*dir)
	res := newResult()
	for i := -3; i < *n; i++ {
		name := fmt.Sprintf("pbv%d-%d", os.Getpid()%10000, i+3)
		path := filepath.Join(*dir, name)
		t0 := time.Now()
		nsFd, err := newNetns(path)
		if err != nil {
			return nil, err
		}
		t1 := time.Now()
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Flags: 0}, PeerName: "eth0", PeerNamespace: netlink.NsFd(nsFd)}
		if err := netlink.LinkAdd(veth); err != nil {
			unix.Close(nsFd)
			_ = unix.Unmount(path, unix.MNT_DETACH)
			return nil, fmt.Errorf("create veth: %w", err)
		}
		t2 := time.Now()
		unix.Close(nsFd)
		link, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkDel(link)
		}
		t3 := time.Now()
		if uerr := unix.Unmount(path, unix.MNT_DETACH); uerr != nil && err == nil {
			err = uerr
		}
		_ = os.Remove(path)
		t4 := time.Now()
		if err != nil {
			return nil, fmt.Errorf("delete veth: %w", err)
		}
		if i >= 0 {
			res.add("netns", t1.Sub(t0))
			res.add("veth_add", t2.Sub(t1))
			res.add("veth_del", t3.Sub(t2))
			res.add("netns_del", t4.Sub(t3))
			res.add("attach", t2.Sub(t0))
			res.add("detach", t4.Sub(t2))
		}
	}
	res.note("netns pinned by a bind mount, veth peer created inside it (as the network manager does); no bridge, addresses or nftables")
	return res, nil
}

// newNetns makes a network namespace pinned at path and returns an fd of it.
// The calling thread is returned to the host namespace.
func newNetns(path string) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return -1, err
	}
	f.Close()
	goruntime.LockOSThread()
	host, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		goruntime.UnlockOSThread()
		return -1, err
	}
	defer unix.Close(host)
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		goruntime.UnlockOSThread()
		return -1, fmt.Errorf("unshare netns: %w", err)
	}
	merr := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	if err := unix.Setns(host, unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("return to host netns: %w", err) // thread stays locked and is discarded
	}
	goruntime.UnlockOSThread()
	if merr != nil {
		return -1, fmt.Errorf("pin netns: %w", merr)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		return -1, err
	}
	return fd, nil
}
