package template

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func tarOf(t *testing.T, files map[string]string, gz bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	var tw *tar.Writer
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

func TestUploadTokensAndStore(t *testing.T) {
	m := newTestManager(t)
	hash := strings.Repeat("d", 64)
	tok := m.UploadToken("team-a", "tpl1", hash)

	for _, c := range []struct {
		name, token, tpl, hash string
	}{
		{"other template", tok, "tpl2", hash},
		{"other hash", tok, "tpl1", strings.Repeat("e", 64)},
		{"tampered", tok[:len(tok)-2] + "xx", "tpl1", hash},
		{"malformed", "nope", "tpl1", hash},
		{"other team", strings.Replace(tok, ".dGVhbS1h.", ".dGVhbS1i.", 1), "tpl1", hash},
	} {
		err := m.SaveUpload(c.token, c.tpl, c.hash, bytes.NewReader(tarOf(t, map[string]string{"a": "1"}, true)))
		if !errors.Is(err, ErrUploadToken) {
			t.Errorf("%s: SaveUpload = %v, want ErrUploadToken", c.name, err)
		}
	}
	// An expired token.
	exp := "1"
	old := "v1." + exp + ".dGVhbS1h." + m.uploadSig(exp, "dGVhbS1h", "tpl1", hash)
	if err := m.SaveUpload(old, "tpl1", hash, bytes.NewReader(tarOf(t, map[string]string{"a": "1"}, true))); !errors.Is(err, ErrUploadToken) {
		t.Errorf("expired token: %v", err)
	}
	if err := m.SaveUpload(tok, "tpl1", hash, strings.NewReader("not a tar archive at all")); !errors.Is(err, ErrInvalid) {
		t.Errorf("non-archive upload: %v, want ErrInvalid", err)
	}
	if m.hasUpload("team-a", hash) {
		t.Fatal("failed uploads left a file")
	}
	for _, gz := range []bool{true, false} {
		if err := m.SaveUpload(tok, "tpl1", hash, bytes.NewReader(tarOf(t, map[string]string{"a": "1"}, gz))); err != nil {
			t.Fatalf("SaveUpload (gzip %v): %v", gz, err)
		}
		if got, _ := isGzip(m.uploadPath("team-a", hash)); got != gz {
			t.Errorf("stored archive gzip = %v, want %v", got, gz)
		}
	}
	if !m.hasUpload("team-a", hash) || m.hasUpload("team-b", hash) {
		t.Errorf("uploads must be per team: team-a %v, team-b %v", m.hasUpload("team-a", hash), m.hasUpload("team-b", hash))
	}
	ents, _ := os.ReadDir(filepath.Dir(m.uploadPath("team-a", hash)))
	if len(ents) != 1 {
		t.Errorf("upload dir holds %d entries, want 1 (no temporary files)", len(ents))
	}
	// Old archives are pruned.
	past := time.Now().Add(-uploadMaxAge - time.Hour)
	os.Chtimes(m.uploadPath("team-a", hash), past, past)
	m.pruneUploads()
	if _, err := os.Stat(m.uploadPath("team-a", hash)); err == nil {
		t.Errorf("pruneUploads kept an archive unused for longer than %v", uploadMaxAge)
	}
}

func TestLogPaging(t *testing.T) {
	var all []LogEntry
	for i := 0; i < 250; i++ {
		lvl := LevelInfo
		if i%10 == 0 {
			lvl = LevelError
		}
		all = append(all, LogEntry{Level: lvl, Message: string(rune('a' + i%26))})
	}
	if p := pageEntries(all, 0, 100, ""); len(p) != 100 || p[0] != all[0] {
		t.Errorf("first page: %d entries", len(p))
	}
	if p := pageEntries(all, 200, 100, ""); len(p) != 50 || p[0] != all[200] {
		t.Errorf("last page: %d entries", len(p))
	}
	if p := pageEntries(all, 250, 100, ""); p == nil || len(p) != 0 {
		t.Errorf("past the end: %v (want an empty, non-nil page)", p)
	}
	if p := pageEntries(nil, 0, 100, ""); p == nil || len(p) != 0 {
		t.Errorf("no log: %v", p)
	}
	errs := pageEntries(all, 0, 100, LevelError)
	if len(errs) != 25 || errs[1] != all[10] {
		t.Errorf("error level: %d entries", len(errs))
	}
	if p := pageEntries(all, 20, 100, LevelWarn); len(p) != 5 || p[0] != all[200] {
		t.Errorf("warn level from offset 20: %d entries", len(p))
	}

	// The log survives in its file once closed.
	l := &buildLogs{dir: t.TempDir()}
	if err := l.open("b1"); err != nil {
		t.Fatal(err)
	}
	for _, e := range all[:120] {
		l.add("b1", e)
	}
	live := l.page("b1", 100, 100, "")
	l.close("b1")
	l.add("b1", LogEntry{Message: "after close"}) // ignored
	fromFile := l.page("b1", 100, 100, "")
	if len(live) != 20 || !reflect.DeepEqual(live, fromFile) {
		t.Errorf("live page %d entries, from file %d; want the same 20", len(live), len(fromFile))
	}
	// Reopening (a started build) keeps what was logged.
	if err := l.open("b1"); err != nil {
		t.Fatal(err)
	}
	l.add("b1", LogEntry{Message: "more"})
	if p := l.page("b1", 120, 100, ""); len(p) != 1 || p[0].Message != "more" {
		t.Errorf("after reopen: %v", p)
	}
	l.close("b1")
}
