package local

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

const metaName = "meta.json"

// meta is what the runtime records about a sandbox besides libcontainer's
// state: enough for a control plane to re-adopt it after a restart.
type meta struct {
	ID        string            `json:"id"`
	CreatedAt time.Time         `json:"createdAt"`
	Labels    map[string]string `json:"labels,omitempty"`
	Layers    []string          `json:"layers,omitempty"`
	// What a restore needs, besides Layers, to rebuild the container.
	Hostname  string            `json:"hostname,omitempty"`
	Resources runtime.Resources `json:"resources"`
	Internet  bool              `json:"internet,omitempty"`
	// Checkpoint is set while the sandbox is checkpointed.
	Checkpoint *checkpointMeta `json:"checkpoint,omitempty"`
}

// writeMeta writes dir/meta.json atomically (temp file, rename), with an
// fsync before the rename when durable. The meta of a running sandbox need
// not be durable: its processes, mounts and network do not survive a host
// crash either, and a sandbox dir whose meta is missing or torn is
// reported stopped, to be reaped. A checkpointed sandbox's meta must be.
func writeMeta(dir string, m meta, durable bool) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("write %s: %w", metaName, err)
	}
	f, err := os.CreateTemp(dir, ".meta-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", metaName, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, metaName))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", metaName, err)
	}
	return nil
}

func readMeta(dir string) (meta, error) {
	var m meta
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read %s: %w", metaName, err)
	}
	return m, nil
}
