package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/paddockhq/paddock/internal/store"
	"github.com/paddockhq/paddock/internal/store/conformance"
	"github.com/paddockhq/paddock/internal/store/redis/redistest"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	var n atomic.Int64
	conformance.Run(t, func(t *testing.T) store.Store {
		// A fresh prefix per subtest gives each an empty store on one server.
		s, err := Open(context.Background(), srv.URL, WithPrefix(fmt.Sprintf("conf%d:", n.Add(1))))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestSharedBetweenClients(t *testing.T) {
	srv := redistest.Start(t)
	a := open(t, srv.URL)
	b := open(t, srv.URL)
	conformance.RunShared(t, a, b)
}

func TestLayout(t *testing.T) {
	// The on-server layout is part of the contract (operators inspect it,
	// and two versions of Paddock must read each other's data): one hash per
	// collection named prefix+collection, record keys as fields; the
	// collections' revisions in the hash named by the prefix alone.
	srv := redistest.Start(t)
	ctx := context.Background()
	s := open(t, srv.URL+"?prefix=lay:")
	if s.Prefix() != "lay:" {
		t.Fatalf("prefix from URL: %q", s.Prefix())
	}
	if err := s.Apply(ctx,
		store.Op{Collection: "sandboxes", Key: "i1", Value: []byte("one")},
		store.Op{Collection: "templates", Key: "base", Value: []byte{0, 1}},
	); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, srv.URL)
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(slices.Sorted(slices.Values(keys)), ",") != "lay:,lay:sandboxes,lay:templates" {
		t.Fatalf("keys on the server: %q", keys)
	}
	if v, err := raw.HGet(ctx, "lay:templates", "base").Result(); err != nil || v != "\x00\x01" {
		t.Fatalf("raw HGET: %q, %v", v, err)
	}
	revs, err := raw.HGetAll(ctx, "lay:").Result()
	if err != nil || len(revs) != 2 || revs["sandboxes"] == "" || revs["templates"] == "" {
		t.Fatalf("revisions hash: %q, %v", revs, err)
	}
	if rev, err := s.Revision(ctx, "sandboxes"); err != nil || strconv.FormatUint(rev, 10) != revs["sandboxes"] {
		t.Fatalf("revision %d, %v; the hash holds %q", rev, err, revs["sandboxes"])
	}
	// A write made by another client in that layout is read back.
	if err := raw.HSet(ctx, "lay:sandboxes", "i0", "zero").Err(); err != nil {
		t.Fatal(err)
	}
	recs, err := s.List(ctx, "sandboxes")
	if err != nil || len(recs) != 2 || recs[0].Key != "i0" || string(recs[0].Value) != "zero" {
		t.Fatalf("list after raw write: %+v, %v", recs, err)
	}
	// Deleting the last record leaves no empty hash behind.
	if err := s.Apply(ctx, store.Op{Collection: "templates", Key: "base"}); err != nil {
		t.Fatal(err)
	}
	if n, err := raw.Exists(ctx, "lay:templates").Result(); err != nil || n != 0 {
		t.Fatalf("hash of an emptied collection: exists=%d, %v", n, err)
	}
}

func TestRevisionAfterDataLoss(t *testing.T) {
	// A server that lost its data (restarted without persistence, flushed)
	// starts revisions again at random: a reader that kept a revision from
	// before cannot see it again after a few writes.
	srv := redistest.Start(t)
	ctx := context.Background()
	s := open(t, srv.URL)
	raw := rawClient(t, srv.URL)
	seen := map[uint64]bool{}
	for range 5 {
		for range 3 {
			if err := store.Put(ctx, s, "c", "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			rev, err := s.Revision(ctx, "c")
			if err != nil {
				t.Fatal(err)
			}
			if seen[rev] {
				t.Fatalf("revision %d seen again after the data was lost", rev)
			}
			seen[rev] = true
		}
		if err := raw.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if rev, err := s.Revision(ctx, "c"); err != nil || rev != 0 {
			t.Fatalf("revision of a lost collection: %d, %v", rev, err)
		}
	}
	// A revision field that is not a number is an error, not a zero.
	if err := raw.HSet(ctx, DefaultPrefix, "c", "junk").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revision(ctx, "c"); err == nil {
		t.Fatal("revision from a corrupt field: want an error")
	}
}

func TestPrefixIsolation(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := open(t, srv.URL, WithPrefix("one:"))
	b := open(t, srv.URL+"?prefix=ignored:", WithPrefix("two:")) // the option wins
	if b.Prefix() != "two:" {
		t.Fatalf("prefix: %q", b.Prefix())
	}
	if err := store.Put(ctx, a, "c", "k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "c", "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another prefix's record is visible: %v", err)
	}
	if err := b.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("b"), Cond: store.IfAbsent}); err != nil {
		t.Fatalf("IfAbsent under another prefix: %v", err)
	}
	if v, err := a.Get(ctx, "c", "k"); err != nil || string(v) != "a" {
		t.Fatalf("a's record: %q, %v", v, err)
	}
	def := open(t, srv.URL)
	if def.Prefix() != DefaultPrefix {
		t.Fatalf("default prefix: %q", def.Prefix())
	}
}

func TestScriptReloadedAfterFlush(t *testing.T) {
	// After SCRIPT FLUSH (or a server restart) EVALSHA fails with NOSCRIPT
	// and the driver must fall back to EVAL.
	srv := redistest.Start(t)
	ctx := context.Background()
	s := open(t, srv.URL)
	if err := store.Put(ctx, s, "c", "k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := rawClient(t, srv.URL).ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, store.Op{Collection: "c", Key: "k", Value: []byte("2"), Cond: store.IfEqual, Old: []byte("1")}); err != nil {
		t.Fatalf("apply after SCRIPT FLUSH: %v", err)
	}
	if v, err := s.Get(ctx, "c", "k"); err != nil || string(v) != "2" {
		t.Fatalf("after SCRIPT FLUSH: %q, %v", v, err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{
		"http://localhost:6379",
		"redis://localhost:6379/notadb",
		"redis://localhost:6379/0?no_such_option=1",
		"redis://localhost:6379/0?prefix=",
		"redis://user:s3cret@[::1:6379/0", // unparsable, with a password
	} {
		_, err := Open(ctx, u)
		if err == nil {
			t.Errorf("open %q: want an error", u)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("open %q: error leaks the password: %v", u, err)
		}
	}
	// Nothing listens there: Open fails fast, naming the URL without its
	// password; go-redis's complaints go to the slog logger.
	var logged syncBuffer
	SetLogger(slog.New(slog.NewTextHandler(&logged, nil)))
	defer SetLogger(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := Open(ctx, "redis://:s3cret@127.0.0.1:1/0?dial_timeout=1s")
	if err == nil {
		t.Fatal("open of a closed port: want an error")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("open of a closed port: %v", err)
	}
	if out := logged.String(); !strings.Contains(out, "level=WARN msg=\"redis client\"") || !strings.Contains(out, "127.0.0.1:1") {
		t.Fatalf("go-redis log not routed to slog: %q", out)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestValkeyScheme(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, strings.Replace(srv.URL, "redis://", "valkey://", 1))
	if err := store.Put(context.Background(), s, "c", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

func TestServerGone(t *testing.T) {
	// A store whose server went away returns errors, not hangs or panics.
	srv := redistest.Start(t)
	s := open(t, srv.URL)
	ctx := context.Background()
	if err := store.Put(ctx, s, "c", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// SHUTDOWN closes the connection instead of answering: its error says
	// nothing.
	_ = rawClient(t, srv.URL).Shutdown(ctx).Err()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := s.Get(ctx, "c", "k"); err == nil {
		t.Error("get from a stopped server: want an error")
	}
	if err := store.Put(ctx, s, "c", "k", []byte("w")); err == nil {
		t.Error("apply on a stopped server: want an error")
	}
}

func open(t *testing.T, url string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func rawClient(t *testing.T, url string) *goredis.Client {
	t.Helper()
	o, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
