package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
)

// SandboxIDLen is the length of a sandbox ID: "i" and 20 characters of
// [a-z0-9], as E2B issues them.
const SandboxIDLen = 21

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// NewAccessToken returns a new envd access token: 32 random bytes as 64
// hex characters, opaque to the SDK.
func NewAccessToken() string { return randomHex(32) }

// NewTrafficToken returns a new traffic access token (the proxy asks for it
// on a sandbox's ports when public traffic is off): 32 random bytes as 64
// hex characters.
func NewTrafficToken() string { return randomHex(32) }

// NewSandboxID returns "i" and 20 characters drawn uniformly from [a-z0-9]
// with crypto/rand (103 bits).
func NewSandboxID() string { return "i" + randomString(SandboxIDLen-1) }

// IsSandboxID reports whether s has the shape NewSandboxID produces.
func IsSandboxID(s string) bool {
	if len(s) != SandboxIDLen || s[0] != 'i' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// TokenEqual compares a presented token with the expected one in constant
// time (for tokens of equal length; the length itself is not secret).
func TokenEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand crashes the program instead)
	return hex.EncodeToString(b)
}

// randomString returns n characters drawn uniformly from idAlphabet:
// random bytes at or above the largest multiple of 36 are rejected, so
// that every character is equally likely.
func randomString(n int) string {
	const limit = 256 - 256%len(idAlphabet) // 252
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, idAlphabet[int(b)%len(idAlphabet)])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}
