package sandbox

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestSecureIDs(t *testing.T) {
	rt := newFakeRuntime()
	s := newTestService(t, rt, filepath.Join(t.TempDir(), "db"), nil)
	ctx := context.Background()
	mk := func(req CreateRequest) string {
		t.Helper()
		req.Team, req.Template, req.Timeout = "t", "base", time.Minute
		rec, err := s.Create(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return rec.ID
	}
	secure := mk(CreateRequest{Secure: true})
	open := mk(CreateRequest{})
	pausedResumable := mk(CreateRequest{Secure: true, AutoPause: true, AutoResume: true})
	paused := mk(CreateRequest{Secure: true})
	killed := mk(CreateRequest{Secure: true})
	if _, err := s.Pause(ctx, "t", pausedResumable, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pause(ctx, "t", paused, PauseOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(ctx, "t", killed); err != nil {
		t.Fatal(err)
	}
	ids, err := s.SecureIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	want := []string{secure, pausedResumable}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("SecureIDs = %v, want %v (not %s: no token, %s: paused, %s: killed)", ids, want, open, paused, killed)
	}
}
