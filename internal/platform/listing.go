package platform

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/paddockhq/paddock/internal/sandbox"
)

// listingGeneration bounds one generation of a listingCache: the cache
// holds at most twice that many sandboxes' JSON (about 350 bytes each with
// the map entry, so under 6 MB). Listings of more sandboxes than that are
// still right, only encoded again more often.
const listingGeneration = 8192

// listingCache keeps the JSON encoding of listed sandboxes (an
// api.ListedSandbox each) by record pointer, so that a listing is assembled
// from bytes instead of encoded (encoding dominated GET /v2/sandboxes). It
// cannot serve stale bytes: the service never modifies a record it listed
// (a changed sandbox is listed as a new *sandbox.Record), and an entry keeps
// its record alive, so its pointer is not reused for another one.
//
// Entries live in two generations: lookups promote entries from old to cur,
// and when cur is full, old is dropped and cur becomes old. Records no longer
// listed (killed or changed sandboxes) thus leave within two generations of
// new entries, and churn does not make it grow.
type listingCache struct {
	mu  sync.Mutex
	cur map[*sandbox.Record][]byte
	old map[*sandbox.Record][]byte
	max int // entries of one generation
}

func newListingCache(max int) *listingCache {
	return &listingCache{cur: make(map[*sandbox.Record][]byte), max: max}
}

// parts sets out[i] to the JSON of recs[i], encoding those it does not
// hold yet. The bytes are shared: callers must not modify them.
func (c *listingCache) parts(out [][]byte, recs []*sandbox.Record) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		b, ok := c.cur[r]
		if !ok {
			if b, ok = c.old[r]; !ok {
				var err error
				if b, err = json.Marshal(listed(r)); err != nil {
					return nil, fmt.Errorf("encode sandbox %s: %w", r.ID, err)
				}
			}
			if len(c.cur) >= c.max {
				c.old, c.cur = c.cur, make(map[*sandbox.Record][]byte, len(c.cur))
			}
			c.cur[r] = b
		}
		out = append(out, b)
	}
	return out, nil
}

// len returns how many entries the cache holds (tests).
func (c *listingCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}

// listingBuf is the scratch space of one listing response.
type listingBuf struct {
	parts [][]byte
	body  []byte
}

var listingBufs = sync.Pool{New: func() any { return new(listingBuf) }}

// maxPooledListing and maxPooledParts bound the buffers put back in the
// pool: those of a huge one-off listing are left to the garbage collector.
const (
	maxPooledListing = 1 << 20
	maxPooledParts   = 4096
)

// writeListing writes recs as writeJSON would write the equivalent
// []api.ListedSandbox (a JSON array and a newline, the same bytes), from
// the cache.
func (s *Server) writeListing(w http.ResponseWriter, r *http.Request, recs []*sandbox.Record) {
	lb := listingBufs.Get().(*listingBuf)
	defer func() {
		clear(lb.parts[:cap(lb.parts)]) // do not keep cached bytes alive from the pool
		lb.parts, lb.body = lb.parts[:0], lb.body[:0]
		if cap(lb.body) <= maxPooledListing && cap(lb.parts) <= maxPooledParts {
			listingBufs.Put(lb)
		}
	}()
	parts, err := s.listings.parts(lb.parts[:0], recs)
	if err != nil {
		s.serviceError(w, r, err)
		return
	}
	lb.parts = parts
	size := 3 + len(parts) // brackets, commas, newline
	for _, p := range parts {
		size += len(p)
	}
	body := lb.body[:0]
	if cap(body) < size {
		body = make([]byte, 0, size)
	}
	body = append(body, '[')
	for i, p := range parts {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, p...)
	}
	body = append(body, ']', '\n')
	lb.body = body
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// With its length the body goes out as it is, not chunked through the
	// server's 4 KiB buffer.
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
