// Package initexe owns the switch of libcontainer's container init to a
// small binary.
//
// libcontainer starts every container by re-executing the running binary
// (through a sealed copy of /proc/self/exe) as `<binary> init`. For paddock
// that is a 45 MiB program whose 184 package initialisers run before
// libcontainer's init code can (on a small VM, `paddock version` takes
// 22–27 ms from exec to exit). A binary holding only libcontainer's init
// (cmd/paddock-init, 5 MiB, 63 packages) takes 13–16 ms.
//
// libcontainer offers no way to name another init binary, so the switch
// happens in the process it starts: the C constructor below runs before
// libcontainer's own (nsenter's, at default priority) and before the Go
// runtime, and when the process is a libcontainer init whose parent has
// published a small init binary (Publish), it executes that binary in its
// place with the same arguments, environment and descriptors. The small
// binary runs nsenter and libcontainer.Init exactly as the big one would have
// (same module version, so the same protocol over the same pipes).
//
// The small binary lives in a sealed memfd (no writes, no resizing, seals
// fixed), as libcontainer's own copies of /proc/self/exe do: a sandbox that
// reaches its init's /proc/<pid>/exe cannot change what the next sandbox
// runs (CVE-2019-5736). The parent publishes the memfd at descriptor FD of
// its own process; the child, still in the host's PID and mount namespaces,
// opens /proc/<parent>/fd/<FD>, checks its name and seals and calls fexecve.
// Anything unexpected (no such descriptor, another file, not sealed, exec
// failure) leaves the constructor without a trace, and the running binary
// carries on as its own init.
//
// Every program that uses libcontainer and imports this package gets the
// constructor; it does nothing unless the program publishes a binary.
package initexe

/*
#cgo CFLAGS: -Wall
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif

// The descriptor number the parent publishes the small init at, and what
// /proc shows for it (exeseal names its memfds "runc_cloned:<name>").
#define PADDOCK_INIT_FD 1000
#define PADDOCK_INIT_NAME "/memfd:runc_cloned:paddock-init "

// Runs before nsenter's constructor: priorities below 65535 come first.
__attribute__((constructor(101))) static void paddock_exec_small_init(int argc, char **argv, char **envp)
{
	if (argc < 2 || argv == NULL || strcmp(argv[1], "init") != 0)
		return;
	if (getenv("_LIBCONTAINER_INITPIPE") == NULL)
		return;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getppid(), PADDOCK_INIT_FD);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	// Only the memfd the parent made for this (see install).
	char self[64], name[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(self, name, sizeof(name) - 1);
	if (n < 0) {
		close(fd);
		return;
	}
	name[n] = 0;
	if (strncmp(name, PADDOCK_INIT_NAME, strlen(PADDOCK_INIT_NAME)) != 0) {
		close(fd);
		return;
	}
	const int want = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & want) != want) {
		close(fd);
		return;
	}
	fexecve(fd, argv, envp);
	close(fd);
}
*/
import "C"

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/opencontainers/runc/libcontainer/exeseal"
	"golang.org/x/sys/unix"
)

// FD is the descriptor of this process that holds the published init
// binary; the constructor above looks for it in its parent.
const FD = C.PADDOCK_INIT_FD

// published is the once-per-process publication: every user of
// libcontainer in the process shares it (the descriptor number is fixed).
var published struct {
	once   sync.Once
	digest [sha256.Size]byte // of the published binary
	err    error
}

// ErrInvalid marks an init binary this process cannot publish: not an ELF
// executable, or not the one it already published.
var ErrInvalid = errors.New("invalid init binary")

// Publish puts bin, a static program that runs libcontainer.Init when its
// first argument is "init", into a sealed memfd at descriptor FD of this
// process, where the constructor of every container init this process starts
// finds it. It is done once per process; a later call with the same binary
// is a no-op, one with another binary fails with ErrInvalid, as does
// anything that is not an ELF executable. Other errors (no sealed memfd, FD
// taken) leave this binary as its own init.
func Publish(bin []byte) error {
	if len(bin) < 4 || !bytes.Equal(bin[:4], []byte("\x7fELF")) {
		return fmt.Errorf("%w: not an ELF executable", ErrInvalid)
	}
	digest := sha256.Sum256(bin)
	published.once.Do(func() {
		published.digest = digest
		published.err = install(bin)
	})
	if published.err != nil {
		return published.err
	}
	if published.digest != digest {
		return fmt.Errorf("%w: this process already runs another one", ErrInvalid)
	}
	return nil
}

func install(bin []byte) error {
	f, err := exeseal.CloneBinary(bytes.NewReader(bin), int64(len(bin)), "paddock-init", os.TempDir())
	if err != nil {
		return fmt.Errorf("seal init binary: %w", err)
	}
	defer f.Close()
	if !exeseal.IsCloned(f) { // an O_TMPFILE fallback: no seals to check
		return errors.New("seal init binary: no sealed memfd on this kernel")
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, FD)
	if err != nil {
		return fmt.Errorf("publish init binary: %w", err)
	}
	if fd != FD {
		unix.Close(fd)
		return fmt.Errorf("publish init binary: descriptor %d is in use", FD)
	}
	// fd stays open for the life of the process: container inits started at
	// any time look for it.
	return nil
}
