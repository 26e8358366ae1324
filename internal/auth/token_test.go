package auth

import (
	"regexp"
	"strings"
	"testing"
)

func TestSandboxID(t *testing.T) {
	re := regexp.MustCompile(`^i[a-z0-9]{20}$`)
	const n = 100_000
	seen := make(map[string]struct{}, n)
	counts := make(map[byte]int)
	for range n {
		id := NewSandboxID()
		if !re.MatchString(id) {
			t.Fatalf("sandbox ID %q does not match %s", id, re)
		}
		if !IsSandboxID(id) {
			t.Fatalf("IsSandboxID(%q) = false", id)
		}
		if _, dup := seen[id]; dup {
			t.Fatalf("duplicate sandbox ID %q", id)
		}
		seen[id] = struct{}{}
		for i := 1; i < len(id); i++ {
			counts[id[i]]++
		}
	}
	// Uniform over 36 characters: 2,000,000 draws, 55,556 expected each,
	// standard deviation about 233. ±5% is 12 deviations: a modulo bias
	// (a-d drawn 8/7 as often) fails it, chance does not.
	if len(counts) != 36 {
		t.Fatalf("%d distinct characters, want 36", len(counts))
	}
	want := float64(n*20) / 36
	for c, got := range counts {
		if float64(got) < want*0.95 || float64(got) > want*1.05 {
			t.Errorf("character %q drawn %d times, want about %.0f", c, got, want)
		}
	}
}

func TestIsSandboxID(t *testing.T) {
	for _, bad := range []string{"", "i", "iabc", "xabcdefghij0123456789", "iABCDEFGHIJ0123456789", "iabcdefghij012345678-", "iabcdefghij01234567890"} {
		if IsSandboxID(bad) {
			t.Errorf("IsSandboxID(%q) = true", bad)
		}
	}
	if !IsSandboxID("iabc123def456ghi789jk") {
		t.Error("the ID from E2B's docs is refused")
	}
}

func TestTokens(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{64}$`)
	seen := make(map[string]bool)
	for range 1000 {
		for _, tok := range []string{NewAccessToken(), NewTrafficToken()} {
			if !re.MatchString(tok) {
				t.Fatalf("token %q does not match %s", tok, re)
			}
			if seen[tok] {
				t.Fatalf("duplicate token %q", tok)
			}
			seen[tok] = true
		}
	}
	a := NewAccessToken()
	if !TokenEqual(a, strings.Clone(a)) {
		t.Error("TokenEqual of a token and its copy is false")
	}
	for _, other := range []string{"", a[:63], a + "0", NewAccessToken(), strings.ToUpper(a)} {
		if TokenEqual(other, a) {
			t.Errorf("TokenEqual(%q, %q) = true", other, a)
		}
	}
}
