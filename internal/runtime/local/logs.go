package local

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const logName = "envd.log"

// logCheckInterval is how often envd logs are checked against LogMaxBytes.
const logCheckInterval = 10 * time.Second

// openLog opens the sandbox's envd log for appending. envd writes to it
// directly (no pipe through this process), so it keeps logging after this
// process dies; rotateLogs caps its size.
func openLog(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, logName), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open envd log: %w", err)
	}
	return f, nil
}

// rotateLogs periodically rotates envd logs over the size cap until Close.
func (r *Runtime) rotateLogs() {
	defer r.wg.Done()
	t := time.NewTicker(logCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		ents, err := os.ReadDir(r.sandboxDir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if err := rotateLog(filepath.Join(r.sandboxDir, e.Name(), logName), r.cfg.LogMaxBytes); err != nil {
				r.log.Warn("rotate envd log", "sandbox", e.Name(), "err", err)
			}
		}
	}
}

// rotateLog copies path to path.1 and truncates it when it is over max
// bytes. envd appends (O_APPEND), so its next write lands at the new end.
func rotateLog(path string, max int64) error {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= max {
		return nil
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	// Keep the newest max bytes.
	if _, err := src.Seek(-max, io.SeekEnd); err != nil {
		dst.Close()
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Truncate(path, 0)
}

// logTail returns the last max bytes of the sandbox's envd log, trimmed.
func logTail(dir string, max int64) string {
	f, err := os.Open(filepath.Join(dir, logName))
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		if _, err := f.Seek(-max, io.SeekEnd); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	return strings.TrimSpace(string(b))
}
