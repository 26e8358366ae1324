// Package redis is Paddock's shared store driver, for several replicas on
// one Redis or Valkey server. Each collection is one hash named prefix +
// collection whose fields are the record keys; every Apply is one Lua script,
// so its preconditions and writes are atomic with respect to every client.
// The hash named by the prefix alone (no collection name is empty) holds the
// collections' revisions (Store.Revision): one field per collection, bumped
// by the script of every Apply with an op on it. Writes made to the hashes by
// other means than Apply do not bump it.
//
// Redis Cluster is not supported as such: an Apply may touch several
// collections, and a script's keys must share a slot. A prefix holding a
// hash tag (e.g. "{paddock}:") puts every collection in one slot.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/paddockhq/paddock/internal/store"
)

// DefaultPrefix starts the name of every hash the driver writes.
const DefaultPrefix = "paddock:"

// Store is the Redis/Valkey driver. It implements store.Store.
type Store struct {
	client *goredis.Client // reads, retried on network errors
	writer *goredis.Client // Apply, never retried (see Apply)
	prefix string
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// Option tunes Open.
type Option func(*options)

type options struct {
	prefix    string
	hasPrefix bool
}

// WithPrefix sets the prefix of the driver's hash names (default
// DefaultPrefix, or the URL's "prefix" query parameter). It overrides the
// URL.
func WithPrefix(prefix string) Option {
	return func(o *options) { o.prefix, o.hasPrefix = prefix, true }
}

// Open connects to the server at rawURL and checks that it answers.
// Accepted schemes: redis://, rediss:// (TLS), unix:// and their valkey://,
// valkeys:// spellings, e.g. redis://:password@host:6379/0. Besides
// go-redis's own query parameters (dial_timeout, pool_size, ...), "prefix"
// sets the hash name prefix.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error repeats the URL, password included
		}
		return nil, fmt.Errorf("open redis store: bad URL: %w", err)
	}
	redacted := u.Redacted()
	switch u.Scheme {
	case "valkey":
		u.Scheme = "redis"
	case "valkeys":
		u.Scheme = "rediss"
	}
	o := options{prefix: DefaultPrefix}
	q := u.Query()
	if q.Has("prefix") {
		o.prefix, o.hasPrefix = q.Get("prefix"), true
		q.Del("prefix")
		u.RawQuery = q.Encode()
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.prefix == "" {
		return nil, fmt.Errorf("open redis store %s: empty key prefix", redacted)
	}
	ropts, err := goredis.ParseURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("open redis store %s: %w", redacted, err)
	}
	ropts.ContextTimeoutEnabled = true
	ropts.DisableIdentity = true
	// Maintenance notifications are a Redis Enterprise/Cloud feature.
	ropts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	wopts := *ropts
	wopts.MaxRetries = -1
	s := &Store{client: goredis.NewClient(ropts), writer: goredis.NewClient(&wopts), prefix: o.prefix}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pingTimeout)
		defer cancel()
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open redis store %s: %w", redacted, err)
	}
	return s, nil
}

// Prefix returns the prefix of the driver's hash names.
func (s *Store) Prefix() string { return s.prefix }

// Get returns a record's value (HGET); store.ErrNotFound when absent.
func (s *Store) Get(ctx context.Context, collection, key string) ([]byte, error) {
	if err := store.CheckKey(collection, key); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	v, err := s.client.HGet(ctx, s.hash(collection), key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("get %s/%s: %w", collection, key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// List returns every record of a collection (HGETALL), sorted by key.
func (s *Store) List(ctx context.Context, collection string) ([]store.Record, error) {
	if err := store.CheckCollection(collection); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	m, err := s.client.HGetAll(ctx, s.hash(collection)).Result()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	recs := make([]store.Record, 0, len(m))
	for k, v := range m {
		recs = append(recs, store.Record{Key: k, Value: []byte(v)})
	}
	slices.SortFunc(recs, func(a, b store.Record) int { return strings.Compare(a.Key, b.Key) })
	return recs, nil
}

// applyScript checks every op's precondition against the state before the
// call, then performs every op in order. Redis runs a script without
// interleaving any other command, so no client sees a partial Apply.
//
// It then bumps the revision of every collection it touched, in the same
// script: HINCRBY of the collection's field in the revisions hash, set to a
// random start instead when the field was absent (so that a server that lost
// its data, revisions included, does not hand out again revisions a reader
// saw before the loss).
//
// KEYS: the m hashes the ops touch, then the revisions hash. ARGV[1]: the
// number of ops n, then six arguments per op: index into KEYS, field,
// condition (store.Cond as a digit), "1" to delete, new value, old value;
// then the m collection names of the hashes, in KEYS order; then the random
// start. It returns 0 when applied, else the 1-based index of the first op
// whose precondition failed.
var applyScript = goredis.NewScript(`
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local a = 1 + i * 6
  local cond = ARGV[a + 3]
  if cond ~= '0' then
    local cur = redis.call('HGET', KEYS[tonumber(ARGV[a + 1])], ARGV[a + 2])
    local ok
    if cond == '1' then
      ok = not cur
    elseif cond == '2' then
      ok = cur ~= false
    elseif cond == '3' then
      ok = cur ~= false and cur == ARGV[a + 6]
    else
      return redis.error_reply('unknown condition ' .. cond)
    end
    if not ok then
      return i + 1
    end
  end
end
for i = 0, n - 1 do
  local a = 1 + i * 6
  local h, f = KEYS[tonumber(ARGV[a + 1])], ARGV[a + 2]
  if ARGV[a + 4] == '1' then
    redis.call('HDEL', h, f)
  else
    redis.call('HSET', h, f, ARGV[a + 5])
  end
end
local m = #KEYS - 1
local revs = KEYS[m + 1]
local start = ARGV[2 + 6 * n + m]
for j = 1, m do
  local c = ARGV[1 + 6 * n + j]
  if redis.call('HINCRBY', revs, c, 1) == 1 then
    redis.call('HSET', revs, c, start)
  end
end
return 0
`)

// Apply runs every op atomically in one script (EVALSHA, EVAL on a server
// that does not have it cached yet). It is not retried on a network error:
// a script whose reply was lost may have run, and running it again would
// report a conflict for the caller's own write (or, for Always ops, apply it
// twice). Such an error leaves the outcome unknown, as with any remote store.
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
	var keys, collections []string
	index := make(map[string]int)
	args := make([]any, 0, 1+6*len(ops)+len(ops)+1)
	args = append(args, len(ops))
	for _, op := range ops {
		h := s.hash(op.Collection)
		i, ok := index[h]
		if !ok {
			keys = append(keys, h)
			collections = append(collections, op.Collection)
			i = len(keys)
			index[h] = i
		}
		del := "0"
		if op.Value == nil {
			del = "1"
		}
		args = append(args, i, op.Key, strconv.Itoa(int(op.Cond)), del, op.Value, op.Old)
	}
	for _, c := range collections {
		args = append(args, c)
	}
	args = append(args, revisionStart())
	keys = append(keys, s.revisions())
	failed, err := applyScript.Run(ctx, s.writer, keys, args...).Int64()
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if failed != 0 {
		if failed < 1 || int(failed) > len(ops) {
			return fmt.Errorf("apply: script returned %d for %d ops", failed, len(ops))
		}
		op := ops[failed-1]
		return fmt.Errorf("apply: op %d on %s/%s: %w", failed, op.Collection, op.Key, store.ErrConflict)
	}
	return nil
}

// Revision returns the collection's revision (one HGET of its field in the
// revisions hash); 0 for a collection no Apply touched.
func (s *Store) Revision(ctx context.Context, collection string) (uint64, error) {
	if err := store.CheckCollection(collection); err != nil {
		return 0, fmt.Errorf("revision %s: %w", collection, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("revision %s: %w", collection, err)
	}
	v, err := s.client.HGet(ctx, s.revisions(), collection).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("revision %s: %w", collection, err)
	}
	rev, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("revision %s: %q is not a revision", collection, v)
	}
	return rev, nil
}

// revisions names the hash of the collections' revisions: the prefix alone,
// which no collection's hash can be (collection names are not empty).
func (s *Store) revisions() string { return s.prefix }

// revisionStart is where a collection's revision starts: random in
// [2, 2^52], so that it stays exact in Lua's doubles.
func revisionStart() string { return strconv.FormatUint(2+rand.Uint64N(1<<52-1), 10) }

// Close closes the client's connections. Closing twice is harmless.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := errors.Join(s.client.Close(), s.writer.Close()); err != nil {
		return fmt.Errorf("close redis store: %w", err)
	}
	return nil
}

func (s *Store) hash(collection string) string { return s.prefix + collection }

// SetLogger routes go-redis's own diagnostics (dial failures, pool events),
// which otherwise go to stderr unstructured, to l at warning level. go-redis
// has one logger per process, so this is process-wide: the binary calls it
// once at start.
func SetLogger(l *slog.Logger) { goredis.SetLogger(slogAdapter{l}) }

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	a.l.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// pingTimeout bounds the check in Open when the caller's context has no
// deadline of its own.
const pingTimeout = 5 * time.Second
