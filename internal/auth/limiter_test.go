package auth

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func newTestLimiter(clock *fakeClock, maxEntries int) *Limiter {
	return NewLimiter(LimiterConfig{MaxFailures: 10, Window: time.Minute, Block: 5 * time.Minute, MaxEntries: maxEntries, Now: clock.Now})
}

func TestLimiterBlocksAfterMaxFailures(t *testing.T) {
	clock := newFakeClock()
	l := newTestLimiter(clock, 0)
	const addr = "203.0.113.7:5555"
	for i := 1; i < 10; i++ {
		if d, blocked := l.Fail(addr); blocked || d != 0 {
			t.Fatalf("failure %d: blocked=%v retryAfter=%v", i, blocked, d)
		}
		if _, ok := l.Allow(addr); !ok {
			t.Fatalf("refused after %d failures", i)
		}
		clock.Advance(time.Second)
	}
	if d, blocked := l.Fail(addr); !blocked || d != 5*time.Minute {
		t.Fatalf("10th failure: blocked=%v retryAfter=%v, want true, 5m", blocked, d)
	}
	if d, ok := l.Allow(addr); ok || d != 5*time.Minute {
		t.Fatalf("allow right after the block: ok=%v retryAfter=%v", ok, d)
	}
	clock.Advance(2 * time.Minute)
	if d, ok := l.Allow(addr); ok || d != 3*time.Minute {
		t.Fatalf("allow 2m into the block: ok=%v retryAfter=%v, want false, 3m", ok, d)
	}
	// Failures during the block do not extend it.
	if d, blocked := l.Fail(addr); !blocked || d != 3*time.Minute {
		t.Fatalf("failure while blocked: blocked=%v retryAfter=%v", blocked, d)
	}
	clock.Advance(3*time.Minute - time.Nanosecond)
	if _, ok := l.Allow(addr); ok {
		t.Fatal("allowed before the block ended")
	}
	clock.Advance(time.Nanosecond)
	if _, ok := l.Allow(addr); !ok {
		t.Fatal("still refused when the block ended")
	}
	// After the block the count starts again from zero.
	for i := 1; i < 10; i++ {
		if _, blocked := l.Fail(addr); blocked {
			t.Fatalf("blocked again after %d failures", i)
		}
	}
	if _, blocked := l.Fail(addr); !blocked {
		t.Fatal("not blocked again after 10 more failures")
	}
}

func TestLimiterWindowResets(t *testing.T) {
	clock := newFakeClock()
	l := newTestLimiter(clock, 0)
	for round := range 5 {
		for i := 0; i < 9; i++ {
			if _, blocked := l.Fail("198.51.100.1"); blocked {
				t.Fatalf("round %d: blocked after %d failures in one window", round, i+1)
			}
		}
		clock.Advance(time.Minute) // a new window
	}
	if _, ok := l.Allow("198.51.100.1"); !ok {
		t.Fatal("refused")
	}
}

func TestLimiterAddresses(t *testing.T) {
	clock := newFakeClock()
	l := newTestLimiter(clock, 0)
	block := func(addr string) {
		t.Helper()
		for range 10 {
			l.Fail(addr)
		}
		if _, ok := l.Allow(addr); ok {
			t.Fatalf("%s not blocked", addr)
		}
	}
	block("192.0.2.1:1000")
	for _, same := range []string{"192.0.2.1", "192.0.2.1:2000", "[::ffff:192.0.2.1]:3000", "::ffff:192.0.2.1"} {
		if _, ok := l.Allow(same); ok {
			t.Errorf("%s is the same client as 192.0.2.1 and was allowed", same)
		}
	}
	for _, other := range []string{"192.0.2.2", "192.0.2.2:1000", "2001:db8::1"} {
		if _, ok := l.Allow(other); !ok {
			t.Errorf("%s was refused for another client's failures", other)
		}
	}
	block("[2001:db8:1:2::1]:443")
	if _, ok := l.Allow("[2001:db8:1:2:ffff:ffff:ffff:ffff]:80"); ok {
		t.Error("an address in the same IPv6 /64 was allowed")
	}
	if _, ok := l.Allow("[fe80::1%eth0]:80"); !ok {
		t.Error("an unrelated link-local address was refused")
	}
	if _, ok := l.Allow("2001:db8:1:3::1"); !ok {
		t.Error("an address in the next /64 was refused")
	}
	block("not an address")
	if _, ok := l.Allow("not an address"); ok {
		t.Error("an unparsable address is counted as itself")
	}
}

func TestLimiterBoundedMemory(t *testing.T) {
	clock := newFakeClock()
	l := newTestLimiter(clock, 100)
	for i := range 1000 {
		l.Fail(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		if n := l.Len(); n > 100 {
			t.Fatalf("%d entries after %d addresses, bound is 100", n, i+1)
		}
	}
	// The most recent addresses are the ones remembered.
	for range 9 {
		l.Fail("10.0.3.231") // the 1000th address, now with 10 failures
	}
	if _, ok := l.Allow("10.0.3.231"); ok {
		t.Fatal("recent address forgotten")
	}
	// Entries whose window has passed are dropped as the limiter is used.
	clock.Advance(time.Minute)
	for range 100 {
		l.Allow("10.9.9.9")
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("%d entries after their windows passed, want 1 (the blocked one)", n)
	}
	clock.Advance(5 * time.Minute)
	l.Allow("10.9.9.9")
	if n := l.Len(); n != 0 {
		t.Fatalf("%d entries after every window and block passed", n)
	}
	// Successful clients (Allow only) cost nothing.
	for i := range 1000 {
		l.Allow(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("Allow created %d entries", n)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	clock := newFakeClock()
	exact := newTestLimiter(clock, 0)
	bounded := newTestLimiter(clock, 50)
	var wg sync.WaitGroup
	var mu sync.Mutex
	blocked := 0
	for range 100 {
		wg.Go(func() {
			if _, b := exact.Fail("192.0.2.9"); b {
				mu.Lock()
				blocked++
				mu.Unlock()
			}
			exact.Allow("192.0.2.9")
		})
	}
	for i := range 20 {
		wg.Go(func() {
			for j := range 50 {
				bounded.Fail(fmt.Sprintf("198.18.%d.%d", i, j))
				bounded.Allow(fmt.Sprintf("198.18.%d.%d", i, j/2))
			}
		})
	}
	wg.Wait()
	// Exactly the first 9 failures were let through, whatever the order.
	if blocked != 91 {
		t.Fatalf("%d of 100 concurrent failures reported blocked, want 91", blocked)
	}
	if n := bounded.Len(); n > 50 {
		t.Fatalf("%d entries, bound is 50", n)
	}
}

func TestLimiterDefaults(t *testing.T) {
	l := NewLimiter(LimiterConfig{})
	for i := 1; i < 10; i++ {
		if _, blocked := l.Fail("192.0.2.1"); blocked {
			t.Fatalf("default policy blocked after %d failures", i)
		}
	}
	d, blocked := l.Fail("192.0.2.1")
	if !blocked || d != time.Minute {
		t.Fatalf("default policy: 10th failure blocked=%v for %v, want true for 1m", blocked, d)
	}
}
