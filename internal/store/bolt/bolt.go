// Package bolt is Paddock's embedded store driver: one bbolt file under the
// data directory, one bucket per collection, every Apply in one read-write
// transaction. The file is locked (flock) while open, so a second server on
// the same data directory fails fast instead of corrupting it.
package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/paddockhq/paddock/internal/store"
)

// DefaultLockTimeout is how long Open waits for another holder of the file
// to let go before giving up.
const DefaultLockTimeout = time.Second

// ErrInUse is returned (wrapped) by Open when another process, or another
// Store in this process, holds the file.
var ErrInUse = errors.New("in use by another process")

// Store is the embedded driver. It implements store.Store.
type Store struct {
	db   *bbolt.DB
	path string

	// revs mirrors the committed revision (bucket sequence) of every
	// collection Revision was asked about or Apply wrote, so that Revision
	// needs no transaction (a read transaction's start is serialised in
	// bbolt, and listings ask on every request). This Store is the file's
	// only writer (it holds the lock), so the mirror misses no write.
	revs   sync.Map // collection → *atomic.Uint64
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Option tunes Open.
type Option func(*options)

type options struct {
	lockTimeout time.Duration
}

// WithLockTimeout sets how long Open waits for the file lock (default
// DefaultLockTimeout). It must be positive: bbolt treats zero as "forever".
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) { o.lockTimeout = d }
}

// Open opens (creating if needed, with its parent directory) the store file
// at path. It fails with ErrInUse if the file is already open elsewhere.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{lockTimeout: DefaultLockTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.lockTimeout <= 0 {
		return nil, fmt.Errorf("open store %s: lock timeout must be positive, got %v", path, o.lockTimeout)
	}
	if path == "" {
		return nil, errors.New("open store: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      o.lockTimeout,
		FreelistType: bbolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store %s is %w (is paddock serve running?)", path, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.path }

// Get returns a copy of a record's value; store.ErrNotFound when absent.
func (s *Store) Get(ctx context.Context, collection, key string) ([]byte, error) {
	if err := store.CheckKey(collection, key); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	var val []byte
	err := s.db.View(func(tx *bbolt.Tx) error {
		v, ok := lookup(tx.Bucket([]byte(collection)), key)
		if !ok {
			return store.ErrNotFound
		}
		val = bytes.Clone(v)
		if val == nil {
			val = []byte{}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	return val, nil
}

// List returns copies of every record of a collection, sorted by key
// (bbolt keeps keys in byte order). A collection never written is empty.
func (s *Store) List(ctx context.Context, collection string) ([]store.Record, error) {
	if err := store.CheckCollection(collection); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	var recs []store.Record
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(collection))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if v == nil { // a nested bucket; the driver never makes any
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			val := make([]byte, len(v))
			copy(val, v)
			recs = append(recs, store.Record{Key: string(k), Value: val})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	return recs, nil
}

// Revision returns the collection's revision: its bucket's sequence, which
// every Apply with an op on the collection bumps in its own transaction
// (bbolt's sequence of a bucket is otherwise unused by the driver), read
// from the file once and then from memory. A collection never written has
// revision 0.
func (s *Store) Revision(ctx context.Context, collection string) (uint64, error) {
	if err := store.CheckCollection(collection); err != nil {
		return 0, fmt.Errorf("revision %s: %w", collection, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("revision %s: %w", collection, err)
	}
	if s.closed.Load() {
		return 0, fmt.Errorf("revision %s: %w", collection, bolterrors.ErrDatabaseNotOpen)
	}
	if v, ok := s.revs.Load(collection); ok {
		return v.(*atomic.Uint64).Load(), nil
	}
	var rev uint64
	err := s.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket([]byte(collection)); b != nil {
			rev = b.Sequence()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("revision %s: %w", collection, err)
	}
	// An Apply may have committed (and mirrored) a later one meanwhile.
	return s.mirror(collection, rev), nil
}

// mirror records that collection's committed revision is at least rev and
// returns the mirrored one. Revisions only grow, so the largest wins
// whatever the order in which a Revision's read and Applies report them.
func (s *Store) mirror(collection string, rev uint64) uint64 {
	v, ok := s.revs.Load(collection)
	if !ok {
		v, _ = s.revs.LoadOrStore(collection, new(atomic.Uint64))
	}
	m := v.(*atomic.Uint64)
	for {
		cur := m.Load()
		if cur >= rev {
			return cur
		}
		if m.CompareAndSwap(cur, rev) {
			return rev
		}
	}
}

// Apply checks every precondition against the state before the call, then
// performs every op in order, all in one read-write transaction.
func (s *Store) Apply(ctx context.Context, ops ...store.Op) error {
	if err := store.CheckOps(ops); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	type bumped struct {
		collection string
		rev        uint64
	}
	var revs []bumped
	err := s.db.Update(func(tx *bbolt.Tx) error {
		revs = revs[:0] // bbolt does not retry, but stay right if it did
		// The write lock may have taken a while: do not write for a caller
		// that has gone.
		if err := ctx.Err(); err != nil {
			return err
		}
		for i, op := range ops {
			cur, ok := lookup(tx.Bucket([]byte(op.Collection)), op.Key)
			if !op.Holds(cur, ok) {
				return fmt.Errorf("op %d on %s/%s: %w", i+1, op.Collection, op.Key, store.ErrConflict)
			}
		}
		var touched []*bbolt.Bucket // whose revision to bump, once each
		var names []string
		for _, op := range ops {
			var b *bbolt.Bucket
			if op.Value == nil {
				if b = tx.Bucket([]byte(op.Collection)); b == nil {
					continue // nothing to delete, nothing changes
				}
				if err := b.Delete([]byte(op.Key)); err != nil {
					return fmt.Errorf("delete %s/%s: %w", op.Collection, op.Key, err)
				}
			} else {
				var err error
				if b, err = tx.CreateBucketIfNotExists([]byte(op.Collection)); err != nil {
					return fmt.Errorf("collection %s: %w", op.Collection, err)
				}
				// bbolt keeps a reference to the value until commit; copy so
				// the caller may reuse its buffer.
				if err := b.Put([]byte(op.Key), bytes.Clone(op.Value)); err != nil {
					return fmt.Errorf("put %s/%s: %w", op.Collection, op.Key, err)
				}
			}
			if !slices.Contains(touched, b) {
				touched = append(touched, b)
				names = append(names, op.Collection)
			}
		}
		for i, b := range touched {
			rev, err := b.NextSequence()
			if err != nil {
				return fmt.Errorf("revision: %w", err)
			}
			revs = append(revs, bumped{names[i], rev})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	// Committed: mirror the new revisions before returning, so that a
	// Revision after this Apply returns sees them.
	for _, r := range revs {
		s.mirror(r.collection, r.rev)
	}
	return nil
}

// Close releases the file and its lock. Closing twice is harmless.
func (s *Store) Close() error {
	s.closed.Store(true)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// lookup finds key in b (which may be nil); ok tells an empty value from an
// absent record.
func lookup(b *bbolt.Bucket, key string) (v []byte, ok bool) {
	if b == nil {
		return nil, false
	}
	k, v := b.Cursor().Seek([]byte(key))
	if k == nil || string(k) != key || v == nil && b.Bucket(k) != nil {
		return nil, false
	}
	return v, true
}
