// Package store owns Paddock's persistent state: the Store interface (named
// collections of JSON records with atomic multi-record writes), an embedded
// driver (store/bolt, one file under the data dir) and a Redis/Valkey driver
// (store/redis) for several replicas. Both pass store/conformance.
package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Errors returned (wrapped) by drivers.
var (
	// ErrNotFound: no record under that key.
	ErrNotFound = errors.New("record not found")
	// ErrConflict: a precondition of an Apply did not hold; nothing changed.
	ErrConflict = errors.New("record changed concurrently or precondition failed")
)

// Cond is a precondition on the current value of a record.
type Cond int

// Preconditions of an Op.
const (
	// Always applies the op whatever the record's state.
	Always Cond = iota
	// IfAbsent applies only if the record does not exist.
	IfAbsent
	// IfPresent applies only if the record exists.
	IfPresent
	// IfEqual applies only if the record exists with exactly Op.Old as value.
	IfEqual
)

// Op is one write of an Apply: Value nil deletes the record.
type Op struct {
	Collection string
	Key        string
	Value      []byte
	Cond       Cond
	Old        []byte // compared when Cond == IfEqual
}

// Record is one key and value of a collection.
type Record struct {
	Key   string
	Value []byte
}

// Store is Paddock's state. Collections are created on first write. All
// methods are safe for concurrent use (and, for shared drivers, across
// processes).
type Store interface {
	// Get returns a record's value; ErrNotFound when absent.
	Get(ctx context.Context, collection, key string) ([]byte, error)
	// List returns every record of a collection, sorted by key.
	List(ctx context.Context, collection string) ([]Record, error)
	// Apply performs every op atomically: all preconditions are checked
	// first and, if one fails, nothing is written and ErrConflict returned.
	Apply(ctx context.Context, ops ...Op) error
	// Revision returns the collection's revision, so that readers may keep
	// what they derived from a listing instead of listing again: a number
	// that changes whenever a successful Apply writes or deletes a record
	// of the collection (through any handle of the same store, from any
	// process for a shared driver), that may change on an Apply with an op
	// on the collection that changed nothing (deleting an absent record),
	// and that stays the same while no successful Apply has an op on it.
	// Only equality means something: it is not a count of writes. A List
	// made after reading a revision is at least as recent as that revision.
	Revision(ctx context.Context, collection string) (uint64, error)
	// Close releases the store.
	Close() error
}

// Put writes one record unconditionally.
func Put(ctx context.Context, s Store, collection, key string, value []byte) error {
	return s.Apply(ctx, Op{Collection: collection, Key: key, Value: value})
}

// Delete removes one record; deleting an absent record is not an error.
func Delete(ctx context.Context, s Store, collection, key string) error {
	return s.Apply(ctx, Op{Collection: collection, Key: key})
}

// Update reads a record, lets fn compute its new value and writes it back
// only if nobody changed it meanwhile, retrying on conflicts after a short
// random pause (so that many writers of one hot record all get through).
// fn receives nil when the record is absent and returns nil to delete it; it
// may run several times. An error from fn aborts the update and is returned
// as is.
func Update(ctx context.Context, s Store, collection, key string, fn func(old []byte) ([]byte, error)) error {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
		}
		old, err := s.Get(ctx, collection, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		next, err := fn(old)
		if err != nil {
			return err
		}
		op := Op{Collection: collection, Key: key, Value: next}
		if old == nil {
			op.Cond = IfAbsent
		} else {
			op.Cond, op.Old = IfEqual, old
		}
		err = s.Apply(ctx, op)
		if !errors.Is(err, ErrConflict) || attempt >= maxUpdateAttempts {
			return err
		}
	}
}

// maxUpdateAttempts bounds Update's retries; with backoff it is reached only
// if a driver is broken (its Get disagrees with its IfEqual).
const maxUpdateAttempts = 1000

// backoff sleeps a random time below min(50µs·2^attempt, 5ms), or returns
// ctx's error when it ends first.
func backoff(ctx context.Context, attempt int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ceiling := 5 * time.Millisecond
	if attempt < 7 {
		ceiling = 50 * time.Microsecond << attempt
	}
	t := time.NewTimer(rand.N(ceiling) + time.Microsecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
