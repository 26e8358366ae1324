package template

import (
	"context"
	"sort"
	"sync"

	"github.com/paddockhq/paddock/internal/store"
)

// memStore is an in-memory store.Store for unit tests: every Apply checks
// all preconditions first, then writes, under one lock.
type memStore struct {
	mu   sync.Mutex
	data map[string]map[string][]byte
	// applies counts successful Apply calls.
	applies int
	// revs are the collections' revisions: bumped by every successful Apply
	// with an op on them.
	revs map[string]uint64
	// beforeApply, if set, runs (unlocked) at the start of every Apply; tests
	// use it to interleave concurrent writers.
	beforeApply func()
}

var _ store.Store = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{data: map[string]map[string][]byte{}} }

func (s *memStore) Get(_ context.Context, c, k string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[c][k]
	if !ok {
		return nil, store.ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

func (s *memStore) List(_ context.Context, c string) ([]store.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Record
	for k, v := range s.data[c] {
		out = append(out, store.Record{Key: k, Value: append([]byte(nil), v...)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *memStore) Apply(_ context.Context, ops ...store.Op) error {
	if f := s.beforeApply; f != nil {
		f()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		cur, exists := s.data[op.Collection][op.Key]
		ok := false
		switch op.Cond {
		case store.Always:
			ok = true
		case store.IfAbsent:
			ok = !exists
		case store.IfPresent:
			ok = exists
		case store.IfEqual:
			ok = exists && string(cur) == string(op.Old)
		}
		if !ok {
			return store.ErrConflict
		}
	}
	for _, op := range ops {
		if s.revs == nil {
			s.revs = map[string]uint64{}
		}
		s.revs[op.Collection]++
		if op.Value == nil {
			delete(s.data[op.Collection], op.Key)
			continue
		}
		if s.data[op.Collection] == nil {
			s.data[op.Collection] = map[string][]byte{}
		}
		s.data[op.Collection][op.Key] = append([]byte(nil), op.Value...)
	}
	s.applies++
	return nil
}

func (s *memStore) Revision(_ context.Context, c string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs[c], nil
}

func (s *memStore) Close() error { return nil }

// keys returns the keys of a collection, sorted.
func (s *memStore) keys(c string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.data[c] {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
