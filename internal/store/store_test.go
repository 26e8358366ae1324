package store

import (
	"context"
	"errors"
	"testing"
)

// conflicting is a broken driver whose Apply always conflicts; it cancels
// its context after a few attempts.
type conflicting struct {
	applies int
	cancel  context.CancelFunc
}

func (c *conflicting) Get(context.Context, string, string) ([]byte, error) {
	return []byte("v"), nil
}
func (c *conflicting) List(context.Context, string) ([]Record, error) { return nil, nil }
func (c *conflicting) Apply(context.Context, ...Op) error {
	c.applies++
	if c.applies == 5 {
		c.cancel()
	}
	return ErrConflict
}
func (c *conflicting) Revision(context.Context, string) (uint64, error) { return 0, nil }
func (c *conflicting) Close() error                                     { return nil }

func TestUpdateStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &conflicting{cancel: cancel}
	calls := 0
	err := Update(ctx, s, "c", "k", func(old []byte) ([]byte, error) {
		calls++
		return []byte("w"), nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if s.applies != 5 || calls != 5 {
		t.Fatalf("applies=%d calls=%d, want 5 each", s.applies, calls)
	}
}

func TestCheck(t *testing.T) {
	good := []Op{
		{Collection: "c", Key: "k"},
		{Collection: "c", Key: "k", Value: []byte{}, Cond: IfEqual},
	}
	if err := CheckOps(good); err != nil {
		t.Fatalf("good ops: %v", err)
	}
	for _, op := range []Op{
		{Key: "k"},
		{Collection: "c"},
		{Collection: "c", Key: "k", Cond: IfEqual + 1},
	} {
		if err := CheckOps([]Op{good[0], op}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: want ErrInvalid, got %v", op, err)
		}
	}
}

func TestHolds(t *testing.T) {
	cases := []struct {
		cond   Cond
		old    string
		cur    string
		exists bool
		want   bool
	}{
		{Always, "", "", false, true},
		{Always, "", "x", true, true},
		{IfAbsent, "", "", false, true},
		{IfAbsent, "", "", true, false},
		{IfPresent, "", "", true, true},
		{IfPresent, "", "", false, false},
		{IfEqual, "x", "x", true, true},
		{IfEqual, "x", "y", true, false},
		{IfEqual, "", "", true, true},
		{IfEqual, "", "", false, false},
	}
	for _, c := range cases {
		op := Op{Cond: c.cond, Old: []byte(c.old)}
		if got := op.Holds([]byte(c.cur), c.exists); got != c.want {
			t.Errorf("%+v: Holds = %v", c, got)
		}
	}
}
