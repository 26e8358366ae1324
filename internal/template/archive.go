package template

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// The machine cache stores finished layers as GNU tar archives, compressed
// with zstd when the zstd binary is installed. Numeric owners, modes
// (setuid included), hard links, device nodes and every extended attribute
// (file capabilities included) round-trip; DigestTree of the extracted tree
// equals that of the original.

// tarFlags are the metadata options used for both creating and extracting.
var tarFlags = []string{"--numeric-owner", "--xattrs", "--xattrs-include=*"}

// zstdAvailable reports whether archives can be zstd-compressed here.
func zstdAvailable() bool {
	_, err := exec.LookPath("zstd")
	return err == nil
}

// writeArchive archives the tree at src into dst (".tar.zst" means zstd),
// atomically: dst appears complete or not at all.
func writeArchive(ctx context.Context, src, dst string) error {
	tmp := dst + ".tmp-" + strconv.Itoa(os.Getpid())
	args := []string{"--create", "--file=" + tmp, "--sparse"}
	if strings.HasSuffix(dst, ".zst") {
		args = append(args, "--use-compress-program=zstd -T0 -q")
	}
	args = append(args, tarFlags...)
	args = append(args, "--directory="+src, ".")
	if err := runTar(ctx, args); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("archive %s to %s: %w", src, dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("archive %s to %s: %w", src, dst, err)
	}
	return nil
}

// extractArchive unpacks an archive written by writeArchive into dst, an
// existing empty directory, whose own owner and mode are set from the
// archive too.
func extractArchive(ctx context.Context, archive, dst string) error {
	args := []string{"--extract", "--file=" + archive, "--same-owner", "--same-permissions"}
	if strings.HasSuffix(archive, ".zst") {
		args = append(args, "--use-compress-program=zstd -q")
	}
	args = append(args, tarFlags...)
	args = append(args, "--directory="+dst)
	if err := runTar(ctx, args); err != nil {
		return fmt.Errorf("extract %s: %w", archive, err)
	}
	return nil
}

func runTar(ctx context.Context, args []string) error {
	cmd := exec.CommandContext(ctx, "tar", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tar: %w: %s", err, strings.TrimSpace(lastLines(out.String(), 10)))
	}
	return nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
