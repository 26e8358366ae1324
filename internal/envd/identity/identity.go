// Package identity owns who acts inside the sandbox and with what defaults:
// the users of the sandbox (resolved from its /etc/passwd), the acting user of
// a request (the "e2b user header", Authorization: Basic base64("<user>:")),
// the daemon's defaults set by /init (default user, working directory, global
// environment variables, access token) and path resolution against a user's
// home directory.
package identity

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// User is a resolved account of the sandbox.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary group IDs, including GID
	Home   string
}

// ErrUnknownUser is returned when a named user does not exist in the sandbox.
var ErrUnknownUser = errors.New("invalid username")

// Lookup resolves a user by name from the sandbox's account database.
func Lookup(name string) (*User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%w: '%s'", ErrUnknownUser, name)
		}
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q has bad uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q has bad gid %q", name, u.Gid)
	}
	res := &User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if res.Home == "" {
		res.Home = "/"
	}
	ids, _ := u.GroupIds() // best effort: a user with no group file still runs
	seen := map[uint32]bool{}
	for _, s := range append([]string{u.Gid}, ids...) {
		g, err := strconv.ParseUint(s, 10, 32)
		if err == nil && !seen[uint32(g)] {
			seen[uint32(g)] = true
			res.Groups = append(res.Groups, uint32(g))
		}
	}
	return res, nil
}

// UsernameFromHeader extracts the user name of the "e2b user header"
// (Authorization: Basic base64("<user>:")). ok is false when no such header
// is present; err is set when it is present but malformed.
func UsernameFromHeader(h http.Header) (name string, ok bool, err error) {
	v := h.Get("Authorization")
	if v == "" {
		return "", false, nil
	}
	scheme, payload, found := strings.Cut(v, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", true, fmt.Errorf("%w: authorization header is not Basic", ErrUnknownUser)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	if err != nil {
		return "", true, fmt.Errorf("%w: authorization header is not base64", ErrUnknownUser)
	}
	name, _, _ = strings.Cut(string(raw), ":")
	if name == "" {
		return "", true, fmt.Errorf("%w: empty user name", ErrUnknownUser)
	}
	return name, true, nil
}

// State is the daemon's mutable identity state, set by /init and read by
// every request. It is safe for concurrent use.
type State struct {
	mu             sync.RWMutex
	accessToken    string
	defaultUser    string
	defaultWorkdir string
	envVars        map[string]string
	lastInit       int64 // unix nanos of the newest accepted /init timestamp
}

// NewState returns the state of a daemon that has not been initialised:
// no access token, root as default user, no working directory.
func NewState() *State {
	return &State{defaultUser: "root", envVars: map[string]string{}}
}

// AccessToken returns the current access token ("" when none is set).
func (s *State) AccessToken() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.accessToken
}

// TokenMatches reports, in constant time, whether tok equals the access token.
// With no access token set, every request matches.
func (s *State) TokenMatches(tok string) bool {
	cur := s.AccessToken()
	if cur == "" {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(cur), []byte(tok)) == 1
}

// DefaultUser returns the name of the user that acts when a request names none.
func (s *State) DefaultUser() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.defaultUser
}

// DefaultWorkdir returns the default working directory ("" means the user's home).
func (s *State) DefaultWorkdir() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.defaultWorkdir
}

// Env returns a copy of the global environment variables every process gets.
func (s *State) Env() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]string, len(s.envVars))
	for k, v := range s.envVars {
		out[k] = v
	}
	return out
}

// Init is what POST /init may change.
type Init struct {
	EnvVars        map[string]string
	AccessToken    *string // nil: unchanged; "": cleared
	DefaultUser    string  // "": unchanged
	DefaultWorkdir string  // "": unchanged
	Timestamp      int64   // unix nanos; 0 when the caller sent none
}

// Apply applies an /init request. A request older than the newest accepted
// one is ignored (applied == false) so a delayed retry cannot roll state back.
func (s *State) Apply(in Init) (applied bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in.Timestamp != 0 && in.Timestamp < s.lastInit {
		return false
	}
	if in.Timestamp != 0 {
		s.lastInit = in.Timestamp
	}
	if in.EnvVars != nil {
		s.envVars = make(map[string]string, len(in.EnvVars))
		for k, v := range in.EnvVars {
			s.envVars[k] = v
		}
	}
	if in.AccessToken != nil {
		s.accessToken = *in.AccessToken
	}
	if in.DefaultUser != "" {
		s.defaultUser = in.DefaultUser
	}
	if in.DefaultWorkdir != "" {
		s.defaultWorkdir = in.DefaultWorkdir
	}
	return true
}

// ActingUser resolves the user a request acts as: the user named in the
// Authorization: Basic header, else the default user. Errors wrap
// ErrUnknownUser when the name does not resolve or the header is malformed.
func (s *State) ActingUser(h http.Header) (*User, error) {
	name, ok, err := UsernameFromHeader(h)
	if err != nil {
		return nil, err
	}
	if !ok {
		name = s.DefaultUser()
	}
	return Lookup(name)
}

// ResolvePath turns a path from a request into an absolute, clean path:
// "~" and "~/x" expand to the user's home, a relative path is taken against
// the user's home, and an empty path means the default working directory,
// else the home directory.
func (s *State) ResolvePath(u *User, p string) string {
	switch {
	case p == "":
		if wd := s.DefaultWorkdir(); wd != "" {
			return filepath.Clean(wd)
		}
		return filepath.Clean(u.Home)
	case p == "~":
		return filepath.Clean(u.Home)
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(u.Home, p[2:])
	case filepath.IsAbs(p):
		return filepath.Clean(p)
	default:
		return filepath.Join(u.Home, p)
	}
}
