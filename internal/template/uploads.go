package template

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Uploads are the archives of COPY steps, content-addressed by the files
// hash the SDK computes (sha256 over the relative paths, modes, sizes and
// contents of the copied files), one directory per team so a team can never
// supply the files of another team's build:
//
//	DataDir/uploads/<sha256(team)[:32]>/<filesHash>   a tar archive, gzip or not
//
// A file's modification time is refreshed on use; unused ones are removed
// after uploadMaxAge.
const (
	uploadMaxAge = 7 * 24 * time.Hour
	// MaxUploadBytes caps one uploaded archive.
	MaxUploadBytes = 8 << 30
	// uploadTokenTTL is how long an upload URL is valid.
	uploadTokenTTL = time.Hour
)

// ErrUploadToken: an upload URL's token is missing, malformed, expired or
// not valid for that template and hash.
var ErrUploadToken = errors.New("invalid upload token")

func (m *Manager) uploadsDir() string { return filepath.Join(m.cfg.DataDir, "uploads") }

func teamDir(team string) string {
	sum := sha256.Sum256([]byte("team\x00" + team))
	return hex.EncodeToString(sum[:16])
}

// uploadPath is where a team's archive with that files hash is stored.
func (m *Manager) uploadPath(team, hash string) string {
	return filepath.Join(m.uploadsDir(), teamDir(team), hash)
}

// hasUpload reports whether the team uploaded files with that hash, and
// marks them used.
func (m *Manager) hasUpload(team, hash string) bool {
	if !ValidDigest(hash) {
		return false
	}
	p := m.uploadPath(team, hash)
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return true
}

// UploadToken returns the token of the upload URL for a team's files hash
// of a template; it is valid for an hour.
func (m *Manager) UploadToken(team, templateID, hash string) string {
	exp := strconv.FormatInt(time.Now().Add(uploadTokenTTL).Unix(), 10)
	t := base64.RawURLEncoding.EncodeToString([]byte(team))
	return "v1." + exp + "." + t + "." + m.uploadSig(exp, t, templateID, hash)
}

func (m *Manager) uploadSig(exp, team, templateID, hash string) string {
	mac := hmac.New(sha256.New, m.secret)
	mac.Write([]byte("template-upload\x00" + exp + "\x00" + team + "\x00" + templateID + "\x00" + hash))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// verifyUploadToken checks a token for templateID and hash and returns the
// team it was issued to.
func (m *Manager) verifyUploadToken(token, templateID, hash string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 4 || parts[0] != "v1" {
		return "", fmt.Errorf("%w: malformed", ErrUploadToken)
	}
	want := m.uploadSig(parts[1], parts[2], templateID, hash)
	if !hmac.Equal([]byte(want), []byte(parts[3])) {
		return "", fmt.Errorf("%w: signature does not match", ErrUploadToken)
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || time.Now().Unix() > exp {
		return "", fmt.Errorf("%w: expired", ErrUploadToken)
	}
	team, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("%w: malformed", ErrUploadToken)
	}
	return string(team), nil
}

// SaveUpload stores an uploaded archive for the files hash of a template,
// authorised by an upload token. The archive appears atomically; it must be
// a tar archive (gzip-compressed or not) of at most MaxUploadBytes.
func (m *Manager) SaveUpload(token, templateID, hash string, body io.Reader) error {
	if !ValidDigest(hash) {
		return fmt.Errorf("%w: files hash %q is not 64 lowercase hex characters", ErrInvalid, hash)
	}
	team, err := m.verifyUploadToken(token, templateID, hash)
	if err != nil {
		return err
	}
	dir := filepath.Join(m.uploadsDir(), teamDir(team))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save upload: %w", err)
	}
	f, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return fmt.Errorf("save upload: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	br := bufio.NewReader(io.LimitReader(body, MaxUploadBytes+1))
	head, _ := br.Peek(512)
	if !looksLikeArchive(head) {
		f.Close()
		return fmt.Errorf("%w: the upload is not a tar archive (gzip-compressed or not)", ErrInvalid)
	}
	n, err := io.Copy(f, br)
	if err == nil && n > MaxUploadBytes {
		err = fmt.Errorf("%w: the upload exceeds %d bytes", ErrInvalid, int64(MaxUploadBytes))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save upload %s: %w", hash, err)
	}
	if err := os.Rename(tmp, m.uploadPath(team, hash)); err != nil {
		return fmt.Errorf("save upload %s: %w", hash, err)
	}
	m.log.Info("template files uploaded", "template", templateID, "hash", hash, "bytes", n)
	return nil
}

// looksLikeArchive accepts gzip data or a tar header (ustar magic at 257,
// or an empty archive of zero blocks).
func looksLikeArchive(head []byte) bool {
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		return true
	}
	if len(head) >= 262 && string(head[257:262]) == "ustar" {
		return true
	}
	return false
}

// isGzip reports whether the file starts with the gzip magic.
func isGzip(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [2]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return b[0] == 0x1f && b[1] == 0x8b, nil
}

// pruneUploads removes archives unused for uploadMaxAge and stale
// temporary files.
func (m *Manager) pruneUploads() {
	cutoff := time.Now().Add(-uploadMaxAge)
	_ = filepath.WalkDir(m.uploadsDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		stale := fi.ModTime().Before(cutoff)
		if strings.HasPrefix(d.Name(), ".upload-") {
			stale = fi.ModTime().Before(time.Now().Add(-2 * uploadTokenTTL))
		}
		if stale {
			_ = os.Remove(p)
		}
		return nil
	})
}
