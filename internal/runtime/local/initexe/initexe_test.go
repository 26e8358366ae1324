package initexe_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/paddockhq/paddock/internal/runtime/local/initexe"
)

// As a child started with "init", this test binary says so: it gets there
// only when the constructor did not switch to the published binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		fmt.Print("not switched")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runInit starts this binary as `<exe> init switched` with env, as
// libcontainer starts a container init, and returns its output.
func runInit(t *testing.T, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "init", "switched")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	return string(out)
}

func TestPublishAndSwitch(t *testing.T) {
	if err := initexe.Publish([]byte("#!/bin/sh\necho hi\n")); !errors.Is(err, initexe.ErrInvalid) {
		t.Fatalf("Publish of a script: %v, want ErrInvalid", err)
	}
	// Before anything is published, an init stays this binary.
	if out := runInit(t, "_LIBCONTAINER_INITPIPE=3"); out != "not switched" {
		t.Fatalf("before Publish: %q", out)
	}

	// echo stands in for a small init: it prints the arguments it was given.
	echo, err := os.ReadFile("/bin/echo")
	if err != nil {
		t.Fatal(err)
	}
	if err := initexe.Publish(echo); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := initexe.Publish(echo); err != nil {
		t.Fatalf("Publish of the same binary again: %v", err)
	}
	other, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := initexe.Publish(other); !errors.Is(err, initexe.ErrInvalid) {
		t.Fatalf("Publish of another binary: %v, want ErrInvalid", err)
	}

	fd := "/proc/self/fd/" + strconv.Itoa(initexe.FD)
	link, err := os.Readlink(fd)
	if err != nil || !strings.Contains(link, "memfd:") || !strings.Contains(link, "paddock-init") {
		t.Errorf("%s -> %q, %v: want the sealed memfd", fd, link, err)
	}
	// A libcontainer init (it has _LIBCONTAINER_INITPIPE) becomes the
	// published binary, with the same arguments and environment.
	if out := runInit(t, "_LIBCONTAINER_INITPIPE=3"); out != "init switched\n" {
		t.Errorf("a container init ran %q, want echo's \"init switched\\n\"", out)
	}
	// Anything else stays this binary.
	if out := runInit(t); out != "not switched" {
		t.Errorf("without _LIBCONTAINER_INITPIPE: %q", out)
	}
}
