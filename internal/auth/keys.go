// Package auth owns who may use Paddock: API keys ("e2b_" + 40 hex, kept
// only as SHA-256 in the store) and the teams they belong to, the
// failed-authentication limiter, and the random secrets and IDs the control
// plane hands out (envd access tokens, traffic tokens, sandbox IDs).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/paddockhq/paddock/internal/store"
)

// Store collections owned by this package.
const (
	// KeysCollection holds one Key per API key, keyed by Key.Hash.
	KeysCollection = "apikeys"
	// TeamsCollection holds one Team per team, keyed by Team.ID.
	TeamsCollection = "teams"
)

// KeyPrefix starts every API key.
const KeyPrefix = "e2b_"

// keyHexLen is the number of hex characters after KeyPrefix (20 bytes).
const keyHexLen = 40

// DefaultTeam is the team of keys created without one.
const DefaultTeam = "default"

// LastUsedResolution is how stale Key.LastUsedAt may get: Verify writes it
// back at most this often per key.
const LastUsedResolution = time.Minute

// Errors of Verify and Revoke. Verify's errors say nothing about the key
// presented beyond which of these it is.
var (
	// ErrMalformed: the text is not shaped like an API key.
	ErrMalformed = errors.New("malformed api key")
	// ErrInvalid: no such key (never issued, or revoked).
	ErrInvalid = errors.New("invalid api key")
	// ErrExpired: the key exists but has expired.
	ErrExpired = errors.New("api key expired")
	// ErrNotFound: no key matches what Revoke was given.
	ErrNotFound = errors.New("api key not found")
	// ErrAmbiguous: several keys match what Revoke was given.
	ErrAmbiguous = errors.New("api key reference is ambiguous")
)

// Key is an API key as stored: everything but the key itself.
type Key struct {
	// ID is a short random identifier, stable for the key's life.
	ID string `json:"id"`
	// Name is free text given at creation.
	Name string `json:"name"`
	// Team is the ID of the team the key acts for.
	Team string `json:"team"`
	// Hash is the hex SHA-256 of the key; the store record's key.
	Hash string `json:"hash"`
	// Mask shows the key's first and last four hex characters, e.g.
	// "e2b_1a2b…9f0e", for listings.
	Mask string `json:"mask"`
	// CreatedAt is when the key was made.
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt, when set, is when the key stops working.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// LastUsedAt is when the key last passed Verify, to within
	// LastUsedResolution.
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
}

// Team is a group of keys sharing sandboxes and templates.
type Team struct {
	// ID is a slug ([a-z0-9][a-z0-9_-]*, at most 63); the store key.
	ID string `json:"id"`
	// Name is for display; the ID when the team came with a key.
	Name string `json:"name"`
	// CreatedAt is when the team's first key was made.
	CreatedAt time.Time `json:"createdAt"`
}

// Keys issues, lists, verifies and revokes API keys kept in a store.
// It is safe for concurrent use.
type Keys struct {
	store store.Store
	now   func() time.Time
	log   *slog.Logger
	seen  verifiedKeys
}

// verifiedKeys keeps the records Verify read, for as long as the keys
// collection's revision (Store.Revision) stays the same: any write to a
// key record (a revocation, a new key, a LastUsedAt update), by any replica
// sharing the store, moves the revision and empties it. Verify then skips
// reading and decoding the record on every request. Only records of issued
// keys enter it, so it never holds more entries than there are keys.
type verifiedKeys struct {
	mu  sync.Mutex
	rev uint64
	m   map[string]verifiedKey // by hash; nil until a first entry
}

type verifiedKey struct {
	key Key
	raw []byte
}

// KeysOption tunes NewKeys.
type KeysOption func(*Keys)

// WithClock replaces time.Now (for tests).
func WithClock(now func() time.Time) KeysOption { return func(k *Keys) { k.now = now } }

// WithLogger sets where Keys reports problems it does not return (a failed
// LastUsedAt write). Default slog.Default().
func WithLogger(l *slog.Logger) KeysOption { return func(k *Keys) { k.log = l } }

// NewKeys returns Keys on s.
func NewKeys(s store.Store, opts ...KeysOption) *Keys {
	k := &Keys{store: s, now: time.Now, log: slog.Default()}
	for _, opt := range opts {
		opt(k)
	}
	return k
}

// Create issues a new key for team (DefaultTeam when empty), creating the
// team on its first key. It returns the key itself, which is never stored
// and cannot be shown again, and its stored record.
func (k *Keys) Create(ctx context.Context, team, name string, expiresAt *time.Time) (string, Key, error) {
	if team == "" {
		team = DefaultTeam
	}
	if err := checkTeamID(team); err != nil {
		return "", Key{}, fmt.Errorf("create api key: %w", err)
	}
	if err := checkName(name); err != nil {
		return "", Key{}, fmt.Errorf("create api key: %w", err)
	}
	now := k.now().UTC()
	if expiresAt != nil {
		if !expiresAt.After(now) {
			return "", Key{}, fmt.Errorf("create api key: expiry %s is not in the future", expiresAt.UTC().Format(time.RFC3339))
		}
		e := expiresAt.UTC()
		expiresAt = &e
	}
	secret := make([]byte, keyHexLen/2)
	_, _ = rand.Read(secret) // never fails (crypto/rand crashes the program instead)
	plaintext := KeyPrefix + hex.EncodeToString(secret)
	key := Key{
		ID:        randomString(12),
		Name:      name,
		Team:      team,
		Hash:      hashKey(plaintext),
		Mask:      mask(plaintext),
		CreatedAt: now,
		ExpiresAt: expiresAt,
	}
	rec, err := json.Marshal(key)
	if err != nil {
		return "", Key{}, fmt.Errorf("create api key: %w", err)
	}
	// The team is created with its first key, in the same Apply; a
	// conflict means another key created it meanwhile, so look again.
	for attempt := 0; ; attempt++ {
		ops := []store.Op{{Collection: KeysCollection, Key: key.Hash, Value: rec, Cond: store.IfAbsent}}
		_, err := k.store.Get(ctx, TeamsCollection, team)
		switch {
		case errors.Is(err, store.ErrNotFound):
			t, err := json.Marshal(Team{ID: team, Name: team, CreatedAt: now})
			if err != nil {
				return "", Key{}, fmt.Errorf("create api key: %w", err)
			}
			ops = append(ops, store.Op{Collection: TeamsCollection, Key: team, Value: t, Cond: store.IfAbsent})
		case err != nil:
			return "", Key{}, fmt.Errorf("create api key: team %s: %w", team, err)
		}
		err = k.store.Apply(ctx, ops...)
		if err == nil {
			return plaintext, key, nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= 3 {
			return "", Key{}, fmt.Errorf("create api key: %w", err)
		}
	}
}

// List returns every key, oldest first.
func (k *Keys) List(ctx context.Context) ([]Key, error) {
	recs, err := k.store.List(ctx, KeysCollection)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	keys := make([]Key, 0, len(recs))
	for _, r := range recs {
		var key Key
		if err := json.Unmarshal(r.Value, &key); err != nil {
			return nil, fmt.Errorf("list api keys: record %s: %w", r.Key, err)
		}
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b Key) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys, nil
}

// ListTeam returns the keys of one team, oldest first.
func (k *Keys) ListTeam(ctx context.Context, team string) ([]Key, error) {
	keys, err := k.List(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(keys, func(key Key) bool { return key.Team != team }), nil
}

// Teams returns every team, by ID.
func (k *Keys) Teams(ctx context.Context) ([]Team, error) {
	recs, err := k.store.List(ctx, TeamsCollection)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	teams := make([]Team, 0, len(recs))
	for _, r := range recs {
		var t Team
		if err := json.Unmarshal(r.Value, &t); err != nil {
			return nil, fmt.Errorf("list teams: record %s: %w", r.Key, err)
		}
		teams = append(teams, t)
	}
	return teams, nil
}

// Revoke deletes the key that ref names: its ID, its Mask, or the key
// itself. It returns the deleted record; ErrNotFound when nothing matches,
// ErrAmbiguous when several keys do (possible for masks).
func (k *Keys) Revoke(ctx context.Context, ref string) (Key, error) {
	if ref == "" {
		return Key{}, fmt.Errorf("revoke api key: empty reference: %w", ErrNotFound)
	}
	var match []Key
	if checkFormat(ref) == nil {
		key, _, err := k.get(ctx, hashKey(ref))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return Key{}, fmt.Errorf("revoke api key: %w", err)
		}
		if err == nil {
			match = append(match, key)
		}
	} else {
		keys, err := k.List(ctx)
		if err != nil {
			return Key{}, fmt.Errorf("revoke api key: %w", err)
		}
		for _, key := range keys {
			if key.ID == ref || key.Mask == ref {
				match = append(match, key)
			}
		}
	}
	switch len(match) {
	case 0:
		return Key{}, fmt.Errorf("revoke api key %q: %w", redact(ref), ErrNotFound)
	case 1:
	default:
		ids := make([]string, len(match))
		for i, m := range match {
			ids[i] = m.ID
		}
		return Key{}, fmt.Errorf("revoke api key %q: matches keys %s, give an ID: %w", redact(ref), strings.Join(ids, ", "), ErrAmbiguous)
	}
	key := match[0]
	err := k.store.Apply(ctx, store.Op{Collection: KeysCollection, Key: key.Hash, Cond: store.IfPresent})
	if errors.Is(err, store.ErrConflict) { // revoked meanwhile
		return Key{}, fmt.Errorf("revoke api key %s: %w", key.ID, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("revoke api key %s: %w", key.ID, err)
	}
	return key, nil
}

// Verify checks a presented key: its format (ErrMalformed), that it was
// issued and not revoked (ErrInvalid) and has not expired (ErrExpired). On
// success it returns the key's record, LastUsedAt refreshed.
func (k *Keys) Verify(ctx context.Context, plaintext string) (Key, error) {
	if err := checkFormat(plaintext); err != nil {
		return Key{}, err
	}
	h := hashKey(plaintext)
	key, raw, err := k.lookup(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return Key{}, ErrInvalid
	}
	if err != nil {
		return Key{}, fmt.Errorf("verify api key: %w", err)
	}
	// The lookup was by hash already; comparing again in constant time
	// guards against a record filed under the wrong key.
	if subtle.ConstantTimeCompare([]byte(key.Hash), []byte(h)) != 1 {
		return Key{}, ErrInvalid
	}
	now := k.now().UTC()
	if key.ExpiresAt != nil && !now.Before(*key.ExpiresAt) {
		return Key{}, ErrExpired
	}
	if key.LastUsedAt == nil || now.Sub(*key.LastUsedAt) >= LastUsedResolution {
		k.touch(ctx, key, raw, now)
		key.LastUsedAt = &now
	}
	return key, nil
}

// touch records a use of key, best effort: a failure costs only freshness
// of LastUsedAt, never the request. The write is conditional on the record
// read, so it cannot bring back a key revoked meanwhile.
func (k *Keys) touch(ctx context.Context, key Key, raw []byte, now time.Time) {
	key.LastUsedAt = &now
	rec, err := json.Marshal(key)
	if err == nil {
		err = k.store.Apply(ctx, store.Op{Collection: KeysCollection, Key: key.Hash, Value: rec, Cond: store.IfEqual, Old: raw})
	}
	if err != nil && !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
		k.log.WarnContext(ctx, "record api key use", "key_id", key.ID, "err", err)
	}
}

// lookup is get through the verifiedKeys cache.
func (k *Keys) lookup(ctx context.Context, hash string) (Key, []byte, error) {
	// Read before the record: a record read after it is at least as recent,
	// so keeping it under rev can never serve one older than rev.
	rev, err := k.store.Revision(ctx, KeysCollection)
	if err != nil {
		return Key{}, nil, err
	}
	k.seen.mu.Lock()
	v, hit := k.seen.m[hash]
	hit = hit && k.seen.rev == rev
	k.seen.mu.Unlock()
	if hit {
		return v.key.unshared(), v.raw, nil
	}
	key, raw, err := k.get(ctx, hash)
	if err != nil {
		return Key{}, nil, err
	}
	k.seen.mu.Lock()
	if k.seen.m == nil || k.seen.rev != rev {
		k.seen.m, k.seen.rev = make(map[string]verifiedKey), rev
	}
	k.seen.m[hash] = verifiedKey{key: key.unshared(), raw: raw}
	k.seen.mu.Unlock()
	return key, raw, nil
}

// unshared returns a copy of key whose time pointers point to copies, so
// that the cache and callers never share them.
func (key Key) unshared() Key {
	if key.ExpiresAt != nil {
		t := *key.ExpiresAt
		key.ExpiresAt = &t
	}
	if key.LastUsedAt != nil {
		t := *key.LastUsedAt
		key.LastUsedAt = &t
	}
	return key
}

func (k *Keys) get(ctx context.Context, hash string) (Key, []byte, error) {
	raw, err := k.store.Get(ctx, KeysCollection, hash)
	if err != nil {
		return Key{}, nil, err
	}
	var key Key
	if err := json.Unmarshal(raw, &key); err != nil {
		return Key{}, nil, fmt.Errorf("api key record: %w", err)
	}
	return key, raw, nil
}

// checkFormat accepts exactly "e2b_" and 40 lowercase hex characters.
func checkFormat(s string) error {
	if len(s) != len(KeyPrefix)+keyHexLen || !strings.HasPrefix(s, KeyPrefix) {
		return ErrMalformed
	}
	for i := len(KeyPrefix); i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ErrMalformed
		}
	}
	return nil
}

func hashKey(plaintext string) string {
	sum := sha256.Sum256([]byte(plaintext))
	return hex.EncodeToString(sum[:])
}

func mask(plaintext string) string {
	hexPart := plaintext[len(KeyPrefix):]
	return KeyPrefix + hexPart[:4] + "…" + hexPart[len(hexPart)-4:]
}

// redact keeps a full key out of error messages and logs.
func redact(ref string) string {
	if checkFormat(ref) == nil {
		return mask(ref)
	}
	return ref
}

// checkTeamID accepts a slug: [a-z0-9], then up to 62 of [a-z0-9_-].
func checkTeamID(id string) error {
	if id == "" || len(id) > 63 {
		return fmt.Errorf("team ID %q: want 1 to 63 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_')
		if !ok {
			return fmt.Errorf("team ID %q: want lowercase letters, digits, '-' and '_', starting with a letter or digit", id)
		}
	}
	return nil
}

func checkName(name string) error {
	if len(name) > 256 {
		return fmt.Errorf("key name of %d bytes: at most 256", len(name))
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("key name %q: not UTF-8", name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("key name %q: control or non-printable character", name)
		}
	}
	return nil
}
