package store

import (
	"errors"
	"fmt"
)

// MaxNameLen is the longest collection name or record key, in bytes, that
// every driver accepts.
const MaxNameLen = 1024

// ErrInvalid: a collection name, key or op is malformed; nothing changed.
var ErrInvalid = errors.New("invalid store request")

// CheckCollection reports whether a collection name is usable by every
// driver: non-empty and at most MaxNameLen bytes.
func CheckCollection(collection string) error {
	switch {
	case collection == "":
		return fmt.Errorf("%w: empty collection name", ErrInvalid)
	case len(collection) > MaxNameLen:
		return fmt.Errorf("%w: collection name of %d bytes exceeds %d", ErrInvalid, len(collection), MaxNameLen)
	}
	return nil
}

// CheckKey reports whether a collection name and record key are usable by
// every driver: both non-empty and at most MaxNameLen bytes.
func CheckKey(collection, key string) error {
	if err := CheckCollection(collection); err != nil {
		return err
	}
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key in collection %q", ErrInvalid, collection)
	case len(key) > MaxNameLen:
		return fmt.Errorf("%w: key of %d bytes in collection %q exceeds %d", ErrInvalid, len(key), collection, MaxNameLen)
	}
	return nil
}

// Check reports whether an op is well formed: a usable collection and key
// and a known Cond.
func (op Op) Check() error {
	if err := CheckKey(op.Collection, op.Key); err != nil {
		return err
	}
	if op.Cond < Always || op.Cond > IfEqual {
		return fmt.Errorf("%w: unknown condition %d on %s/%s", ErrInvalid, op.Cond, op.Collection, op.Key)
	}
	return nil
}

// CheckOps checks every op of an Apply; drivers call it before touching
// anything so a malformed batch changes nothing.
func CheckOps(ops []Op) error {
	for i, op := range ops {
		if err := op.Check(); err != nil {
			return fmt.Errorf("op %d: %w", i+1, err)
		}
	}
	return nil
}

// Holds reports whether op's precondition is met by a record's current
// state (exists tells absent from present with an empty value).
func (op Op) Holds(current []byte, exists bool) bool {
	switch op.Cond {
	case Always:
		return true
	case IfAbsent:
		return !exists
	case IfPresent:
		return exists
	case IfEqual:
		return exists && string(current) == string(op.Old)
	}
	return false
}
