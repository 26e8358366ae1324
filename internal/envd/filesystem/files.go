package filesystem

import (
	"compress/gzip"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddockhq/paddock/internal/envd/identity"
)

// Signed-URL operations.
const (
	opRead  = "read"
	opWrite = "write"
)

// FilesHandler serves GET and POST /files. It checks the access token or a
// URL signature itself, since signed URLs carry no token.
func (s *Service) FilesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.download(w, r)
		case http.MethodPost:
			s.upload(w, r)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on /files")
		}
	})
}

// writeError writes envd's REST error shape {"code":<status>,"message":...}.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Del("Content-Disposition")
	w.Header().Del("Content-Encoding")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{status, msg})
}

// signature computes a /files URL signature exactly as the E2B SDK does
// (src/sandbox/signature.ts) and envd checks it:
// "v1_" + base64 without padding of sha256(path:operation:username:token[:expiration]).
func signature(path, operation, username, token string, expiration *int64) string {
	raw := path + ":" + operation + ":" + username + ":" + token
	if expiration != nil {
		raw += ":" + strconv.FormatInt(*expiration, 10)
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// authorize lets a /files request through when no access token is set, when
// X-Access-Token matches, or (without that header) when the URL carries a
// valid, unexpired signature for op over the path and username exactly as
// they appear in the query. It returns 0 when allowed.
func (s *Service) authorize(r *http.Request, q url.Values, op string) (int, string) {
	token := s.state.AccessToken()
	if token == "" {
		return 0, ""
	}
	if h := r.Header.Get("X-Access-Token"); h != "" {
		if subtle.ConstantTimeCompare([]byte(h), []byte(token)) != 1 {
			return http.StatusUnauthorized, "access token present in header but does not match"
		}
		return 0, ""
	}
	if !q.Has("signature") {
		return http.StatusUnauthorized, "missing signature query parameter; provide a valid access token or a signed URL"
	}
	var exp *int64
	if q.Has("signature_expiration") {
		v, err := strconv.ParseInt(q.Get("signature_expiration"), 10, 64)
		if err != nil {
			return http.StatusBadRequest, fmt.Sprintf("invalid signature_expiration %q: want unix seconds", q.Get("signature_expiration"))
		}
		exp = &v
	}
	want := signature(q.Get("path"), op, q.Get("username"), token, exp)
	if subtle.ConstantTimeCompare([]byte(want), []byte(q.Get("signature"))) != 1 {
		return http.StatusUnauthorized, "invalid signature"
	}
	if exp != nil && *exp < time.Now().Unix() {
		return http.StatusUnauthorized, "signature is already expired"
	}
	return 0, ""
}

// filesUser resolves the user a /files request acts as: the username query
// parameter, else the daemon's default user.
func (s *Service) filesUser(q url.Values) (*identity.User, int, string) {
	name := q.Get("username")
	if name == "" {
		name = s.state.DefaultUser()
	}
	u, err := identity.Lookup(name)
	if err != nil {
		if errors.Is(err, identity.ErrUnknownUser) {
			return nil, http.StatusUnauthorized, err.Error()
		}
		return nil, http.StatusInternalServerError, err.Error()
	}
	return u, 0, ""
}

// Filesystem magic numbers of pseudo filesystems whose files report size 0
// but have content.
const (
	procSuperMagic = 0x9fa0
	sysfsMagic     = 0x62656572
)

func (s *Service) download(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if status, msg := s.authorize(r, q, opRead); status != 0 {
		writeError(w, status, msg)
		return
	}
	u, status, msg := s.filesUser(q)
	if status != 0 {
		writeError(w, status, msg)
		return
	}
	p, err := s.resolve(u, q.Get("path"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Stat before open: opening a FIFO would block.
	fi, err := os.Stat(p)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
			writeError(w, http.StatusNotFound, fmt.Sprintf("path '%s' does not exist", p))
		case errors.Is(err, fs.ErrPermission):
			writeError(w, http.StatusForbidden, fmt.Sprintf("path '%s': permission denied", p))
		default:
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("stat '%s': %v", p, err))
		}
		return
	}
	if fi.IsDir() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is a directory", p))
		return
	}
	if !fi.Mode().IsRegular() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is not a regular file", p))
		return
	}
	f, err := os.Open(p)
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("open '%s': %v", p, err))
		return
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is not a regular file", p))
		return
	}

	// gzip when the client asked for it (the SDK's gzip option sends
	// exactly "gzip") or prefers it to identity. A generic list such as
	// fetch's automatic "gzip, deflate, br" gets identity: compressing
	// costs more CPU than the loopback or LAN it would save (the SDK's
	// files.read of 1 MiB took 49 ms gzipped, 7 ms plain).
	gzipQ, identityQ, gzipListed, othersListed := parseAcceptEncoding(r.Header.Values("Accept-Encoding"))
	useGzip := false
	switch {
	case gzipListed && gzipQ > 0 && (gzipQ > identityQ || gzipQ == identityQ && !othersListed):
		useGzip = true
	case identityQ > 0:
	case gzipQ > 0:
		useGzip = true
	default:
		writeError(w, http.StatusNotAcceptable, "no acceptable content encoding: supported are identity and gzip")
		return
	}
	// Ranges, conditional requests and HEAD keep http.ServeContent's exact
	// semantics, and an empty file keeps its Content-Length: 0 (the SDK looks
	// for it): Accept-Encoding is advisory, identity serves them.
	conditional := r.Header.Get("Range") != "" || r.Header.Get("If-Modified-Since") != "" ||
		r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Range") != "" || r.Header.Get("If-Unmodified-Since") != ""
	if useGzip && identityQ > 0 && (conditional || fi.Size() == 0 || r.Method == http.MethodHead) {
		useGzip = false
	}

	base := filepath.Base(p)
	h := w.Header()
	h.Set("Vary", "Accept-Encoding")
	h.Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": base}))

	if useGzip {
		ct := mime.TypeByExtension(filepath.Ext(base))
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		h.Set("Content-Encoding", "gzip")
		h.Set("Last-Modified", fi.ModTime().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // a valid level never fails
		if _, err := io.Copy(zw, f); err != nil {
			s.log.Warn("download: gzip stream cut short", "path", p, "err", err)
			return // the client sees a truncated gzip stream
		}
		if err := zw.Close(); err != nil {
			s.log.Warn("download: gzip stream cut short", "path", p, "err", err)
		}
		return
	}

	if fi.Size() == 0 && pseudoFS(f) {
		// /proc and /sys files have content but report size 0: stream them.
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			if _, err := io.Copy(w, f); err != nil {
				s.log.Warn("download: stream cut short", "path", p, "err", err)
			}
		}
		return
	}
	http.ServeContent(w, r, base, fi.ModTime(), f)
}

func pseudoFS(f *os.File) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Type == procSuperMagic || st.Type == sysfsMagic
}

// parseAcceptEncoding returns the quality of gzip and identity under the
// given Accept-Encoding values (RFC 9110 12.5.3): identity is acceptable
// unless refused by "identity;q=0" or "*;q=0"; gzip only when listed or
// covered by "*". gzipListed tells whether gzip was named explicitly,
// othersListed whether any other coding (not identity) was, with q > 0.
func parseAcceptEncoding(values []string) (gzipQ, identityQ float64, gzipListed, othersListed bool) {
	explicit := map[string]float64{}
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(item), ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding == "" {
				continue
			}
			q := 1.0
			for _, param := range strings.Split(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(param), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil && f >= 0 && f <= 1 {
						q = f
					}
				}
			}
			explicit[coding] = q
		}
	}
	star, hasStar := explicit["*"]
	identityQ = 1
	if v, ok := explicit["identity"]; ok {
		identityQ = v
	} else if hasStar && star == 0 {
		identityQ = 0
	}
	if v, ok := explicit["gzip"]; ok {
		gzipQ, gzipListed = v, true
	} else if v, ok := explicit["x-gzip"]; ok {
		gzipQ, gzipListed = v, true
	} else if hasStar {
		gzipQ = star
	}
	for coding, q := range explicit {
		switch coding {
		case "gzip", "x-gzip", "identity":
		default:
			if q > 0 {
				othersListed = true
			}
		}
	}
	return gzipQ, identityQ, gzipListed, othersListed
}

// uploadEntry is one element of the upload response.
type uploadEntry struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func (s *Service) upload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if status, msg := s.authorize(r, q, opWrite); status != 0 {
		writeError(w, status, msg)
		return
	}
	u, status, msg := s.filesUser(q)
	if status != 0 {
		writeError(w, status, msg)
		return
	}

	var body io.Reader = r.Body
	switch ce := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); ce {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "request body is not valid gzip: "+err.Error())
			return
		}
		defer zr.Close()
		body = zr
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unsupported Content-Encoding %q: supported are gzip and identity", ce))
		return
	}

	md := metadataFromHeaders(r.Header)
	if err := validateMetadata(md); err != nil {
		writeError(w, http.StatusBadRequest, "invalid metadata: "+err.Error())
		return
	}

	var (
		entries []uploadEntry
		errMsg  string
	)
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err == nil && mt == "application/octet-stream":
		entries, status, errMsg = s.uploadRaw(q, u, body, md)
	case err == nil && strings.HasPrefix(mt, "multipart/"):
		entries, status, errMsg = s.uploadMultipart(q, u, body, params["boundary"], md)
	default:
		status, errMsg = http.StatusBadRequest, fmt.Sprintf("unsupported Content-Type %q: use multipart/form-data or application/octet-stream", r.Header.Get("Content-Type"))
	}
	if status != 0 {
		writeError(w, status, errMsg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(entries)
}

// metadataFromHeaders collects X-Metadata-<key>: <value> headers, keys
// lowercased (first value wins); nil when there are none.
func metadataFromHeaders(h http.Header) map[string]string {
	var md map[string]string
	for name, values := range h {
		if len(values) == 0 || len(name) <= len("X-Metadata-") || !strings.EqualFold(name[:len("X-Metadata-")], "X-Metadata-") {
			continue
		}
		if md == nil {
			md = map[string]string{}
		}
		md[strings.ToLower(name[len("X-Metadata-"):])] = values[0]
	}
	return md
}

func (s *Service) uploadRaw(q url.Values, u *identity.User, body io.Reader, md map[string]string) ([]uploadEntry, int, string) {
	if q.Get("path") == "" {
		return nil, http.StatusBadRequest, "path query parameter is required for application/octet-stream uploads"
	}
	target, err := s.resolve(u, q.Get("path"))
	if err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	e, status, err := s.writeFile(u, target, body, md)
	if err != nil {
		return nil, status, err.Error()
	}
	return []uploadEntry{e}, 0, ""
}

// uploadMultipart writes every part named "file" to its own target: the
// path query parameter when given, else the part's filename taken verbatim
// (a full path; directories are not stripped).
func (s *Service) uploadMultipart(q url.Values, u *identity.User, body io.Reader, boundary string, md map[string]string) ([]uploadEntry, int, string) {
	if boundary == "" {
		return nil, http.StatusBadRequest, "multipart Content-Type has no boundary"
	}
	var entries []uploadEntry
	fail := func(status int, msg string) ([]uploadEntry, int, string) {
		if len(entries) > 0 {
			written := make([]string, len(entries))
			for i, e := range entries {
				written[i] = e.Path
			}
			msg += "; already written: " + strings.Join(written, ", ")
		}
		return nil, status, msg
	}
	seen := map[string]bool{}
	mr := multipart.NewReader(body, boundary)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(http.StatusBadRequest, "malformed multipart body: "+err.Error())
		}
		if part.FormName() != "file" {
			_ = part.Close()
			continue
		}
		raw := q.Get("path")
		if raw == "" {
			raw = partFileName(part)
		}
		if raw == "" {
			_ = part.Close()
			return fail(http.StatusBadRequest, "multipart part \"file\" has no filename and the request has no path parameter")
		}
		target, err := s.resolve(u, raw)
		if err != nil {
			_ = part.Close()
			return fail(http.StatusBadRequest, err.Error())
		}
		if seen[target] {
			_ = part.Close()
			return fail(http.StatusBadRequest, fmt.Sprintf("cannot upload several files to the same path '%s' in one request", target))
		}
		seen[target] = true
		e, status, err := s.writeFile(u, target, part, md)
		_ = part.Close()
		if err != nil {
			return fail(status, err.Error())
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		return nil, http.StatusBadRequest, "multipart body has no part named \"file\""
	}
	return entries, 0, ""
}

// partFileName returns the raw filename parameter of a part's
// Content-Disposition. multipart.Part.FileName strips directories, but the
// E2B SDK sends the full target path there.
func partFileName(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// bodyReader remembers a read error, to tell a bad request body from a
// failing disk.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// writeFile streams src into target as u: missing parent directories are
// created and owned by u, an existing file is truncated and overwritten, the
// file is chowned to u and its e2b metadata replaced by md. On failure a file
// or directory this call created is removed again. It returns the response
// entry, or an HTTP status and error.
func (s *Service) writeFile(u *identity.User, target string, src io.Reader, md map[string]string) (uploadEntry, int, error) {
	uid, gid := int(u.UID), int(u.GID)
	created, err := ensureDirs(filepath.Dir(target), uid, gid)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOTDIR):
			return uploadEntry{}, http.StatusBadRequest, fmt.Errorf("cannot create the parent directories of '%s': %w", target, err)
		case isNoSpace(err):
			return uploadEntry{}, http.StatusInsufficientStorage, fmt.Errorf("not enough disk space to create the parent directories of '%s'", target)
		default:
			return uploadEntry{}, http.StatusInternalServerError, fmt.Errorf("create the parent directories of '%s': %w", target, err)
		}
	}
	if fi, err := os.Stat(target); err == nil && fi.IsDir() {
		removeDirs(created)
		return uploadEntry{}, http.StatusBadRequest, fmt.Errorf("path '%s' is a directory", target)
	}
	_, lerr := os.Lstat(target)
	existed := lerr == nil

	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		removeDirs(created)
		switch {
		case errors.Is(err, syscall.EISDIR):
			return uploadEntry{}, http.StatusBadRequest, fmt.Errorf("path '%s' is a directory", target)
		case isNoSpace(err):
			return uploadEntry{}, http.StatusInsufficientStorage, fmt.Errorf("not enough disk space (or inodes) to create '%s'", target)
		default:
			return uploadEntry{}, http.StatusInternalServerError, fmt.Errorf("open '%s': %w", target, err)
		}
	}
	cleanup := func() {
		if !existed {
			_ = os.Remove(target)
		}
		removeDirs(created)
	}
	fail := func(status int, err error) (uploadEntry, int, error) {
		_ = f.Close()
		cleanup()
		return uploadEntry{}, status, err
	}

	if err := f.Chown(uid, gid); err != nil {
		return fail(http.StatusInternalServerError, fmt.Errorf("chown '%s': %w", target, err))
	}
	br := &bodyReader{r: src}
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, br, buf)
	if err != nil {
		switch {
		case br.err != nil:
			return fail(http.StatusBadRequest, fmt.Errorf("read the request body for '%s': %w", target, br.err))
		case isNoSpace(err):
			return fail(http.StatusInsufficientStorage, fmt.Errorf("not enough disk space to write '%s' (%d bytes written)", target, n))
		default:
			return fail(http.StatusInternalServerError, fmt.Errorf("write '%s': %w", target, err))
		}
	}
	if err := replaceMetadata(f, md); err != nil {
		switch {
		case xattrUnsupported(err):
			if len(md) > 0 {
				s.log.Warn("upload: filesystem has no extended attributes; metadata not stored", "path", target)
			}
		case isNoSpace(err) || errors.Is(err, syscall.E2BIG):
			return fail(http.StatusInsufficientStorage, fmt.Errorf("not enough space for the metadata of '%s'", target))
		default:
			return fail(http.StatusInternalServerError, fmt.Errorf("store the metadata of '%s': %w", target, err))
		}
	}
	if err := f.Close(); err != nil {
		cleanup()
		if isNoSpace(err) {
			return uploadEntry{}, http.StatusInsufficientStorage, fmt.Errorf("not enough disk space to write '%s'", target)
		}
		return uploadEntry{}, http.StatusInternalServerError, fmt.Errorf("close '%s': %w", target, err)
	}
	e := uploadEntry{Path: target, Name: filepath.Base(target), Type: "file"}
	if stored, err := readMetadata(target); err == nil && len(stored) > 0 {
		e.Metadata = stored
	}
	s.log.Debug("file written", "path", target, "user", u.Name, "bytes", n)
	return e, 0, nil
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
