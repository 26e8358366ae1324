package auth

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"
)

// LimiterConfig sets a Limiter's policy. Zero fields take the defaults.
type LimiterConfig struct {
	// MaxFailures is how many failed attempts an address may make within
	// Window before it is blocked (default 10).
	MaxFailures int
	// Window is the fixed counting window (default 1 minute).
	Window time.Duration
	// Block is how long an address that reached MaxFailures is refused
	// (default 1 minute).
	Block time.Duration
	// MaxEntries bounds how many addresses are remembered (default
	// 10000); past it, the least recently seen are forgotten.
	MaxEntries int
	// Now replaces time.Now (for tests).
	Now func() time.Time
}

// Limiter slows down key guessing: it counts failed authentications per
// client address in fixed windows and refuses an address for a while once
// it fails too often. Successful requests cost it nothing. IPv6 clients are
// counted per /64, as one host usually owns a whole /64. It is safe for
// concurrent use and its memory is bounded by MaxEntries.
type Limiter struct {
	cfg LimiterConfig

	mu      sync.Mutex
	entries map[string]*list.Element // of *limitEntry
	lru     list.List                // front: most recently seen
}

type limitEntry struct {
	addr         string
	windowStart  time.Time
	failures     int
	blockedUntil time.Time
}

// NewLimiter returns a Limiter with cfg's policy.
func NewLimiter(cfg LimiterConfig) *Limiter {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 10
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Block <= 0 {
		cfg.Block = time.Minute
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Limiter{cfg: cfg, entries: make(map[string]*list.Element)}
}

// Allow reports whether addr (an IP or host:port, e.g. a request's
// RemoteAddr) may attempt to authenticate now; when not, retryAfter is how
// long until it may.
func (l *Limiter) Allow(addr string) (retryAfter time.Duration, ok bool) {
	key := clientKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.prune(now)
	el, found := l.entries[key]
	if !found {
		return 0, true
	}
	e := el.Value.(*limitEntry)
	if now.Before(e.blockedUntil) {
		return e.blockedUntil.Sub(now), false
	}
	return 0, true
}

// Fail records a failed authentication by addr. When that failure reaches
// the limit, addr is blocked: blocked is true and retryAfter is the block's
// length.
func (l *Limiter) Fail(addr string) (retryAfter time.Duration, blocked bool) {
	key := clientKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	l.prune(now)
	var e *limitEntry
	if el, found := l.entries[key]; found {
		e = el.Value.(*limitEntry)
		l.lru.MoveToFront(el)
	} else {
		for len(l.entries) >= l.cfg.MaxEntries {
			l.remove(l.lru.Back())
		}
		e = &limitEntry{addr: key, windowStart: now}
		l.entries[key] = l.lru.PushFront(e)
	}
	if now.Before(e.blockedUntil) {
		// Failures while blocked (from a caller that did not ask Allow)
		// do not extend the block.
		return e.blockedUntil.Sub(now), true
	}
	if !now.Before(e.windowStart.Add(l.cfg.Window)) {
		e.windowStart, e.failures = now, 0
	}
	e.failures++
	if e.failures >= l.cfg.MaxFailures {
		e.blockedUntil = now.Add(l.cfg.Block)
		e.windowStart, e.failures = e.blockedUntil, 0
		return l.cfg.Block, true
	}
	return 0, false
}

// Len reports how many addresses the limiter remembers.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// prune forgets, from the least recently seen end, entries that no longer
// matter (window over, not blocked). A little work per call keeps memory
// close to the live set without a background goroutine.
func (l *Limiter) prune(now time.Time) {
	for range 4 {
		el := l.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*limitEntry)
		if now.Before(e.windowStart.Add(l.cfg.Window)) || now.Before(e.blockedUntil) {
			return
		}
		l.remove(el)
	}
}

func (l *Limiter) remove(el *list.Element) {
	delete(l.entries, el.Value.(*limitEntry).addr)
	l.lru.Remove(el)
}

// clientKey reduces an address to what is counted: the IP without port,
// IPv4-mapped IPv6 as IPv4, IPv6 as its /64. Anything unparsable is counted
// as is, cut to 64 bytes.
func clientKey(addr string) string {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if len(host) > 64 {
			host = host[:64]
		}
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}
