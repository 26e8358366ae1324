package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockhq/paddock/internal/store"
	"github.com/paddockhq/paddock/internal/store/bolt"
)

var keyRE = regexp.MustCompile(`^e2b_[0-9a-f]{40}$`)

// newKeys returns Keys on a real bolt store in a temp dir, and the file.
func newKeys(t *testing.T, clock *fakeClock) (*Keys, store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "paddock.db")
	s, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return NewKeys(s, WithClock(clock.Now)), s, path
}

func TestCreate(t *testing.T) {
	clock := newFakeClock()
	keys, _, _ := newKeys(t, clock)
	ctx := context.Background()
	plain, key, err := keys.Create(ctx, "", "laptop", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !keyRE.MatchString(plain) {
		t.Fatalf("key %q does not match %s", plain, keyRE)
	}
	sum := sha256.Sum256([]byte(plain))
	if key.Hash != hex.EncodeToString(sum[:]) {
		t.Fatalf("hash %q is not the hex SHA-256 of the key", key.Hash)
	}
	if want := plain[:8] + "…" + plain[40:]; key.Mask != want {
		t.Fatalf("mask %q, want %q", key.Mask, want)
	}
	if !regexp.MustCompile(`^[a-z0-9]{12}$`).MatchString(key.ID) {
		t.Fatalf("ID %q", key.ID)
	}
	if key.Team != DefaultTeam || key.Name != "laptop" || !key.CreatedAt.Equal(clock.Now()) || key.ExpiresAt != nil || key.LastUsedAt != nil {
		t.Fatalf("record %+v", key)
	}
	plain2, key2, err := keys.Create(ctx, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if plain2 == plain || key2.ID == key.ID || key2.Hash == key.Hash {
		t.Fatal("two keys share a value, ID or hash")
	}
}

func TestStoreNeverHoldsPlaintext(t *testing.T) {
	keys, s, path := newKeys(t, newFakeClock())
	ctx := context.Background()
	var plains, hashes []string
	for i := range 5 {
		exp := time.Now().Add(time.Duration(i+1) * time.Hour)
		plain, k, err := keys.Create(ctx, "team-"+fmt.Sprint(i%2), fmt.Sprintf("key %d", i), &exp)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, k.Hash)
		if _, err := keys.Verify(ctx, plain); err != nil { // writes LastUsedAt
			t.Fatal(err)
		}
		plains = append(plains, plain)
	}
	var all []byte
	for _, c := range []string{KeysCollection, TeamsCollection} {
		recs, err := s.List(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			all = append(all, r.Key...)
			all = append(all, r.Value...)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The scan can see what is stored: the hashes are there.
	for _, h := range hashes {
		if !bytes.Contains(file, []byte(h)) || !bytes.Contains(all, []byte(h)) {
			t.Fatalf("hash %s not found in the store: the scan below would prove nothing", h)
		}
	}
	for _, p := range plains {
		secret := p[len(KeyPrefix):]
		// Any 12 consecutive hex characters of the secret (the mask shows
		// 4 at each end).
		for i := 0; i+12 <= len(secret); i++ {
			part := []byte(secret[i : i+12])
			if bytes.Contains(all, part) {
				t.Fatalf("store records contain part of key %s", p[:8])
			}
			if bytes.Contains(file, part) {
				t.Fatalf("store file contains part of key %s", p[:8])
			}
		}
		raw, _ := hex.DecodeString(secret)
		if bytes.Contains(file, raw) {
			t.Fatalf("store file contains the raw bytes of key %s", p[:8])
		}
	}
}

func TestVerify(t *testing.T) {
	clock := newFakeClock()
	keys, s, _ := newKeys(t, clock)
	ctx := context.Background()
	exp := clock.Now().Add(time.Hour)
	plain, created, err := keys.Create(ctx, "acme", "ci", &exp)
	if err != nil {
		t.Fatal(err)
	}

	got, err := keys.Verify(ctx, plain)
	if err != nil {
		t.Fatalf("verify a fresh key: %v", err)
	}
	if got.ID != created.ID || got.Team != "acme" {
		t.Fatalf("verify returned %+v", got)
	}

	for _, bad := range []string{
		"", "e2b_", "e2b", plain[:len(plain)-1], plain + "0", strings.ToUpper(plain),
		"e2b_" + strings.ToUpper(plain[4:]), "E2B_" + plain[4:], "sk_" + plain, " " + plain, plain + "\n",
		"e2b_" + strings.Repeat("g", 40), "e2b-" + plain[4:], "Bearer " + plain,
	} {
		if _, err := keys.Verify(ctx, bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("verify %q: want ErrMalformed, got %v", bad, err)
		}
	}

	unknown := "e2b_" + strings.Repeat("0", 40)
	if _, err := keys.Verify(ctx, unknown); !errors.Is(err, ErrInvalid) {
		t.Errorf("verify an unknown key: want ErrInvalid, got %v", err)
	}
	// One changed character is another key.
	flipped := plain[:10] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", plain[10])+1)%16]) + plain[11:]
	if _, err := keys.Verify(ctx, flipped); !errors.Is(err, ErrInvalid) {
		t.Errorf("verify a key one character off: want ErrInvalid, got %v", err)
	}

	// A record filed under the wrong hash is refused by the constant-time
	// comparison.
	forgedPlain := "e2b_" + strings.Repeat("ab", 20)
	forged := created
	forged.Hash = hashKey("e2b_" + strings.Repeat("cd", 20))
	rec, _ := json.Marshal(forged)
	if err := store.Put(ctx, s, KeysCollection, hashKey(forgedPlain), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(ctx, forgedPlain); !errors.Is(err, ErrInvalid) {
		t.Errorf("verify against a mismatched record: want ErrInvalid, got %v", err)
	}

	clock.Advance(time.Hour - time.Nanosecond)
	if _, err := keys.Verify(ctx, plain); err != nil {
		t.Errorf("verify just before expiry: %v", err)
	}
	clock.Advance(time.Nanosecond)
	if _, err := keys.Verify(ctx, plain); !errors.Is(err, ErrExpired) {
		t.Errorf("verify at expiry: want ErrExpired, got %v", err)
	}

	plain2, k2, err := keys.Create(ctx, "acme", "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Revoke(ctx, k2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(ctx, plain2); !errors.Is(err, ErrInvalid) {
		t.Errorf("verify a revoked key: want ErrInvalid, got %v", err)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := keys.Verify(canceled, plain2); !errors.Is(err, context.Canceled) || errors.Is(err, ErrInvalid) {
		t.Errorf("verify with a canceled context: want context.Canceled (not ErrInvalid), got %v", err)
	}
}

func TestLastUsed(t *testing.T) {
	clock := newFakeClock()
	keys, s, _ := newKeys(t, clock)
	ctx := context.Background()
	plain, key, err := keys.Create(ctx, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	stored := func() Key {
		t.Helper()
		raw, err := s.Get(ctx, KeysCollection, key.Hash)
		if err != nil {
			t.Fatal(err)
		}
		var k Key
		if err := json.Unmarshal(raw, &k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	first := clock.Now()
	if got, err := keys.Verify(ctx, plain); err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(first) {
		t.Fatalf("first verify: %+v, %v", got, err)
	}
	if k := stored(); k.LastUsedAt == nil || !k.LastUsedAt.Equal(first) {
		t.Fatalf("stored LastUsedAt after first use: %v", k.LastUsedAt)
	}
	clock.Advance(LastUsedResolution - time.Second)
	if _, err := keys.Verify(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if k := stored(); !k.LastUsedAt.Equal(first) {
		t.Fatalf("LastUsedAt rewritten within the resolution: %v", k.LastUsedAt)
	}
	clock.Advance(time.Second)
	if _, err := keys.Verify(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if k := stored(); !k.LastUsedAt.Equal(clock.Now()) {
		t.Fatalf("LastUsedAt after the resolution: %v, want %v", k.LastUsedAt, clock.Now())
	}
	// Everything else in the record is unchanged.
	k := stored()
	k.LastUsedAt = nil
	if fmt.Sprint(k) != fmt.Sprint(key) {
		t.Fatalf("record changed beyond LastUsedAt: %+v vs %+v", k, key)
	}
}

func TestListAndTeams(t *testing.T) {
	clock := newFakeClock()
	keys, _, _ := newKeys(t, clock)
	ctx := context.Background()
	if teams, err := keys.Teams(ctx); err != nil || len(teams) != 0 {
		t.Fatalf("teams before any key: %v, %v", teams, err)
	}
	var ids []string
	for i, team := range []string{"", "acme", "", "acme", "b_2"} {
		_, k, err := keys.Create(ctx, team, fmt.Sprint("key ", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
		clock.Advance(time.Second)
	}
	all, err := keys.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 {
		t.Fatalf("list: %d keys", len(all))
	}
	for i, k := range all {
		if k.ID != ids[i] {
			t.Fatalf("list order: key %d is %s, want %s (oldest first)", i, k.ID, ids[i])
		}
	}
	acme, err := keys.ListTeam(ctx, "acme")
	if err != nil || len(acme) != 2 || acme[0].ID != ids[1] || acme[1].ID != ids[3] {
		t.Fatalf("list team acme: %+v, %v", acme, err)
	}
	if none, err := keys.ListTeam(ctx, "nobody"); err != nil || len(none) != 0 {
		t.Fatalf("list an unknown team: %v, %v", none, err)
	}
	teams, err := keys.Teams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tm := range teams {
		names = append(names, tm.ID+"="+tm.Name)
	}
	if strings.Join(names, ",") != "acme=acme,b_2=b_2,default=default" {
		t.Fatalf("teams: %v", names)
	}
	// The default team was created with the first key, not the third.
	if !teams[2].CreatedAt.Equal(all[0].CreatedAt) {
		t.Fatalf("default team created at %v, first key at %v", teams[2].CreatedAt, all[0].CreatedAt)
	}
}

func TestRevoke(t *testing.T) {
	keys, s, _ := newKeys(t, newFakeClock())
	ctx := context.Background()
	make3 := func() (plains []string, ks []Key) {
		for range 3 {
			p, k, err := keys.Create(ctx, "", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			plains, ks = append(plains, p), append(ks, k)
		}
		return
	}
	plains, ks := make3()
	for i, ref := range []string{ks[0].ID, ks[1].Mask, plains[2]} {
		got, err := keys.Revoke(ctx, ref)
		if err != nil {
			t.Fatalf("revoke by %d: %v", i, err)
		}
		if got.ID != ks[i].ID {
			t.Fatalf("revoke by %d removed %s, want %s", i, got.ID, ks[i].ID)
		}
		if _, err := keys.Verify(ctx, plains[i]); !errors.Is(err, ErrInvalid) {
			t.Fatalf("verify after revoke %d: %v", i, err)
		}
		if _, err := keys.Revoke(ctx, ref); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second revoke by %d: want ErrNotFound, got %v", i, err)
		}
	}
	if left, err := keys.List(ctx); err != nil || len(left) != 0 {
		t.Fatalf("keys left: %v, %v", left, err)
	}

	unknown := "e2b_" + strings.Repeat("5", 40)
	for _, ref := range []string{"", "nosuchid", unknown, "e2b_5555…5555"} {
		_, err := keys.Revoke(ctx, ref)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("revoke %q: want ErrNotFound, got %v", ref, err)
		}
		if err != nil && strings.Contains(err.Error(), unknown) {
			t.Errorf("revoke error shows the full key: %v", err)
		}
	}

	// Two keys whose masks collide: the mask is ambiguous, IDs are not.
	_, ks = make3()
	twin := ks[1]
	twin.Mask = ks[0].Mask
	rec, _ := json.Marshal(twin)
	if err := store.Put(ctx, s, KeysCollection, twin.Hash, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Revoke(ctx, ks[0].Mask); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("revoke by a shared mask: want ErrAmbiguous, got %v", err)
	}
	if got, err := keys.Revoke(ctx, ks[1].ID); err != nil || got.ID != ks[1].ID {
		t.Fatalf("revoke by ID: %+v, %v", got, err)
	}
	if got, err := keys.Revoke(ctx, ks[0].Mask); err != nil || got.ID != ks[0].ID {
		t.Fatalf("revoke by a mask no longer shared: %+v, %v", got, err)
	}
}

func TestCreateErrors(t *testing.T) {
	clock := newFakeClock()
	keys, s, _ := newKeys(t, clock)
	ctx := context.Background()
	past := clock.Now().Add(-time.Second)
	now := clock.Now()
	cases := []struct {
		team, name string
		exp        *time.Time
	}{
		{"Acme", "", nil},
		{"-acme", "", nil},
		{"ac me", "", nil},
		{"acme/x", "", nil},
		{strings.Repeat("a", 64), "", nil},
		{"", "tab\there", nil},
		{"", "bad\xffutf8", nil},
		{"", strings.Repeat("n", 257), nil},
		{"", "", &past},
		{"", "", &now},
	}
	for _, c := range cases {
		if _, _, err := keys.Create(ctx, c.team, c.name, c.exp); err == nil {
			t.Errorf("create %+v: want an error", c)
		}
	}
	for _, col := range []string{KeysCollection, TeamsCollection} {
		if recs, err := s.List(ctx, col); err != nil || len(recs) != 0 {
			t.Fatalf("%s after failed creates: %d records, %v", col, len(recs), err)
		}
	}
	ok := []string{"a", "0", "a-b_c", strings.Repeat("z", 63)}
	for _, team := range ok {
		if _, _, err := keys.Create(ctx, team, "Ünïcode name – fine", nil); err != nil {
			t.Errorf("create for team %q: %v", team, err)
		}
	}
}

func TestCreateConcurrent(t *testing.T) {
	keys, _, _ := newKeys(t, newFakeClock())
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	plains := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			plains[i], _, errs[i] = keys.Create(ctx, "race", "", nil)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	for _, p := range plains {
		if k, err := keys.Verify(ctx, p); err != nil || k.Team != "race" {
			t.Fatalf("verify: %+v, %v", k, err)
		}
	}
	teams, err := keys.Teams(ctx)
	if err != nil || len(teams) != 1 || teams[0].ID != "race" {
		t.Fatalf("teams: %+v, %v", teams, err)
	}
}

// countingGets counts reads of key records, with its driver's revisions.
type countingGets struct {
	*bolt.Store
	mu   sync.Mutex
	gets int
}

func (c *countingGets) Get(ctx context.Context, collection, key string) ([]byte, error) {
	if collection == KeysCollection {
		c.mu.Lock()
		c.gets++
		c.mu.Unlock()
	}
	return c.Store.Get(ctx, collection, key)
}

func (c *countingGets) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets
}

func TestVerifyReadsTheKeyOnlyAfterAWrite(t *testing.T) {
	clock := newFakeClock()
	_, s, _ := newKeys(t, clock)
	st := &countingGets{Store: s.(*bolt.Store)}
	keys := NewKeys(st, WithClock(clock.Now))
	other := NewKeys(s, WithClock(clock.Now)) // another replica's view
	ctx := context.Background()
	plain, key, err := keys.Create(ctx, "acme", "ci", nil)
	if err != nil {
		t.Fatal(err)
	}
	before := st.count()
	for range 5 {
		got, err := keys.Verify(ctx, plain)
		if err != nil || got.ID != key.ID || got.Team != "acme" || got.LastUsedAt == nil {
			t.Fatalf("verify: %+v, %v", got, err)
		}
		// The caller owns what it got.
		*got.LastUsedAt = time.Time{}
	}
	// The first Verify reads the record and writes LastUsedAt (a write:
	// the next one reads again); the others use what they read.
	if n := st.count() - before; n != 2 {
		t.Fatalf("5 verifies read the key record %d times, want 2", n)
	}
	if got, err := keys.Verify(ctx, plain); err != nil || got.LastUsedAt.IsZero() {
		t.Fatalf("cached record modified through a returned Key: %+v, %v", got, err)
	}
	// A revocation through another Keys on the store is seen at once.
	if _, err := other.Revoke(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(ctx, plain); !errors.Is(err, ErrInvalid) {
		t.Fatalf("verify a key revoked elsewhere: want ErrInvalid, got %v", err)
	}
	// So is an expiry set elsewhere (the record rewritten).
	plain2, key2, err := keys.Create(ctx, "acme", "ci2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(ctx, plain2); err != nil {
		t.Fatal(err)
	}
	raw, err := s.Get(ctx, KeysCollection, key2.Hash)
	if err != nil {
		t.Fatal(err)
	}
	var k Key
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	past := clock.Now().Add(-time.Second)
	k.ExpiresAt = &past
	rec, _ := json.Marshal(k)
	if err := store.Put(ctx, s, KeysCollection, key2.Hash, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Verify(ctx, plain2); !errors.Is(err, ErrExpired) {
		t.Fatalf("verify a key expired elsewhere: want ErrExpired, got %v", err)
	}
}
