package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func init() {
	subcommands["runc"] = subcommand{"Debian's runc binary: overlay + config.json + `runc run` of `true` to exit (second reference)", runRunc}
}

func runRunc(args []string) (*result, error) {
	f, err := parseFloorFlags("runc", args, 15)
	if err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("runc")
	if err != nil {
		return nil, fmt.Errorf("runc is not installed (apt-get install runc): %w", err)
	}
	defer os.RemoveAll(f.work)
	defer removeCgroups()
	res := newResult()
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		first, _, _ := strings.Cut(string(out), "\n")
		res.note("%s", strings.TrimSpace(first))
	}
	state := filepath.Join(f.work, "runc-state")
	for i := -f.warmup; i < f.n; i++ {
		id := "runc-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(i+f.warmup)
		dir := filepath.Join(f.work, id)
		t0 := time.Now()
		rootfs, err := mountOverlay(dir, f.layer)
		if err != nil {
			_ = unmountOverlay(dir)
			return nil, err
		}
		spec, err := sandboxSpec(id, rootfs, []string{"/bin/true"}, f.knobs)
		if err != nil {
			_ = unmountOverlay(dir)
			return nil, err
		}
		raw, err := json.Marshal(spec)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o600)
		}
		if err != nil {
			_ = unmountOverlay(dir)
			return nil, err
		}
		t1 := time.Now()
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "--root", state, "run", "--bundle", dir, id)
		cmd.Stderr = &stderr
		err = cmd.Run()
		t2 := time.Now()
		if err != nil {
			_ = exec.Command(bin, "--root", state, "delete", "--force", id).Run()
			_ = unmountOverlay(dir)
			return nil, fmt.Errorf("runc run: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		if err := unmountOverlay(dir); err != nil {
			return nil, err
		}
		if i >= 0 {
			res.add("run", t2.Sub(t1))
			res.add("total", t2.Sub(t0))
		}
	}
	res.note("overlay + config.json (the floor's spec) + `runc run` (create, start, `true`, delete) timed from this process")
	return res, nil
}
