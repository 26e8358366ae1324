package network

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// record is the on-disk form of an endpoint: one JSON file per endpoint,
// StateDir/<id>.json, replaced atomically (temp file + rename). It is not
// fsynced: namespaces and veths do not survive a host crash either.
type record struct {
	Version int `json:"version"`
	Endpoint
}

const recordVersion = 1

func recordPath(dir, id string) string { return filepath.Join(dir, id+".json") }

func writeRecord(dir string, ep Endpoint) error {
	data, err := json.Marshal(record{Version: recordVersion, Endpoint: ep})
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+ep.ID+".*.tmp")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), recordPath(dir, ep.ID)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

func removeRecord(dir, id string) error {
	if err := os.Remove(recordPath(dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove state: %w", err)
	}
	return nil
}

// loadState reads every record of StateDir into the Manager, reserving the
// addresses and opening the namespaces for Dial. Unreadable records and
// leftover temp files are logged and skipped.
func (m *Manager) loadState() error {
	ents, err := os.ReadDir(m.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("read state dir: %w", err)
	}
	for _, de := range ents {
		name := de.Name()
		path := filepath.Join(m.cfg.StateDir, name)
		if strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(path) // a write interrupted by a crash
			continue
		}
		if de.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		var r record
		data, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		if err == nil && (r.ID+".json" != name || validID(r.ID) != nil || !r.Addr.Is4()) {
			err = errors.New("inconsistent record")
		}
		if err != nil {
			slog.Warn("network: skipping unreadable endpoint record", "path", path, "err", err)
			continue
		}
		if !m.pool.reserve(r.Addr) {
			slog.Warn("network: endpoint address outside the subnet or taken twice",
				"id", r.ID, "addr", r.Addr, "subnet", m.cfg.Subnet)
		}
		e := &entry{ep: r.Endpoint, nsFd: -1}
		if fd, err := unix.Open(r.NetnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			e.nsFd = fd
		}
		m.endpoints[r.ID] = e
	}
	return nil
}

// vethName is the host-side device name of an endpoint: "pd" and 13 base32
// characters of a hash of bridge and ID (IFNAMSIZ allows 15). It is derived,
// not stored only, so Detach finds the device even without a record.
func vethName(bridge, id string) string {
	sum := sha256.Sum256([]byte(bridge + "\x00" + id))
	enc := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	return "pd" + enc.EncodeToString(sum[:])[:13]
}

// stableMAC is a locally administered unicast MAC derived from name.
func stableMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("paddock-bridge\x00" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// validID accepts IDs usable as file and namespace names.
func validID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("invalid sandbox id %q: want 1-128 characters", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("invalid sandbox id %q: only letters, digits, '-' and '_' are allowed", id)
		}
	}
	if id[0] == '-' {
		return fmt.Errorf("invalid sandbox id %q: must not start with '-'", id)
	}
	return nil
}

func validIfname(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/: \t\n") || name == "." || name == ".." {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// keyedMutex is a set of mutexes by key, created on demand.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

// lock locks key and returns its unlock function.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	l := k.locks[key]
	if l == nil {
		l = &refMutex{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
