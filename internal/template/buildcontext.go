package template

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// BuildContext is a directory whose files COPY steps upload, as the E2B SDK
// does it: the files a source matches are hashed (FilesHash) and archived
// (WriteArchive) the same way, so equal files give equal hashes and the
// server's cache recognises them.
type BuildContext struct {
	// Dir is the context directory.
	Dir string
	// Ignore are .dockerignore-style patterns (relative slash paths with
	// path.Match wildcards); a match also excludes everything below it.
	Ignore []string
}

// OpenBuildContext returns the context in dir with the patterns of its
// .dockerignore, if any.
func OpenBuildContext(dir string) (*BuildContext, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("build context %s is not a directory", dir)
	}
	bc := &BuildContext{Dir: abs}
	f, err := os.Open(filepath.Join(abs, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return bc, nil
	}
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			return nil, fmt.Errorf(".dockerignore: exceptions (%s) are not supported", line)
		}
		bc.Ignore = append(bc.Ignore, strings.Trim(path.Clean(line), "/"))
	}
	return bc, sc.Err()
}

func (bc *BuildContext) ignored(rel string) bool {
	for _, p := range bc.Ignore {
		for r := rel; r != "." && r != ""; r = path.Dir(r) {
			if ok, _ := path.Match(p, r); ok {
				return true
			}
		}
	}
	return false
}

// Files returns the slash paths (relative to the context) a COPY source
// matches: matching files, and matching directories with everything below
// them, sorted. A source with no match is an error.
func (bc *BuildContext) Files(src string) ([]string, error) {
	clean := path.Clean(filepath.ToSlash(src))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return nil, fmt.Errorf("COPY source %q must be inside the build context", src)
	}
	var matches []string
	if strings.ContainsAny(clean, "*?[") {
		m, err := filepath.Glob(filepath.Join(bc.Dir, filepath.FromSlash(clean)))
		if err != nil {
			return nil, fmt.Errorf("COPY source %q: %w", src, err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(bc.Dir, p)
			matches = append(matches, filepath.ToSlash(rel))
		}
	} else if _, err := os.Lstat(filepath.Join(bc.Dir, filepath.FromSlash(clean))); err == nil {
		matches = []string{clean}
	}
	set := map[string]bool{}
	for _, m := range matches {
		if bc.ignored(m) {
			continue
		}
		set[m] = true
		full := filepath.Join(bc.Dir, filepath.FromSlash(m))
		fi, err := os.Lstat(full)
		if err != nil || !fi.IsDir() {
			continue
		}
		err = filepath.WalkDir(full, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(bc.Dir, p)
			rel = filepath.ToSlash(rel)
			if bc.ignored(rel) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			set[rel] = true
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("COPY source %q: %w", src, err)
		}
	}
	delete(set, ".")
	if clean == "." {
		set["."] = true
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("COPY source %q: no files found in %s", src, filepath.Join(bc.Dir, filepath.FromSlash(clean)))
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	// By full path, as the SDK sorts.
	sort.Slice(out, func(i, j int) bool {
		return filepath.Join(bc.Dir, out[i]) < filepath.Join(bc.Dir, out[j])
	})
	return out, nil
}

// FilesHash is the SDK's files hash of a COPY step: sha256 over
// "COPY src dest", then per file its relative path, mode and size as
// decimal numbers (lstat for symlinks, followed by the link target), and a
// regular file's content.
func (bc *BuildContext) FilesHash(src, dest string) (string, error) {
	files, err := bc.Files(src)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	io.WriteString(h, "COPY "+src+" "+dest)
	for _, rel := range files {
		full := filepath.Join(bc.Dir, filepath.FromSlash(rel))
		var st syscall.Stat_t
		if err := syscall.Lstat(full, &st); err != nil {
			return "", fmt.Errorf("hash %s: %w", rel, err)
		}
		if rel != "." {
			io.WriteString(h, rel)
		}
		io.WriteString(h, strconv.FormatUint(uint64(st.Mode), 10))
		io.WriteString(h, strconv.FormatInt(st.Size, 10))
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			target, err := os.Readlink(full)
			if err != nil {
				return "", fmt.Errorf("hash %s: %w", rel, err)
			}
			io.WriteString(h, target)
		case syscall.S_IFREG:
			f, err := os.Open(full)
			if err != nil {
				return "", fmt.Errorf("hash %s: %w", rel, err)
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return "", fmt.Errorf("hash %s: %w", rel, err)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteArchive writes the gzip-compressed tar archive of the files src
// matches (directories as entries, symlinks as links), as the SDK uploads
// it.
func (bc *BuildContext) WriteArchive(w io.Writer, src string) error {
	files, err := bc.Files(src)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	for _, rel := range files {
		if rel == "." {
			continue
		}
		full := filepath.Join(bc.Dir, filepath.FromSlash(rel))
		fi, err := os.Lstat(full)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(full); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(full)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("archive %s: %w", rel, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
