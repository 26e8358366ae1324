package template

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Step types of a build (E2B's TemplateStep.type).
const (
	StepRun     = "RUN"
	StepCopy    = "COPY"
	StepEnv     = "ENV"
	StepWorkdir = "WORKDIR"
	StepUser    = "USER"
)

// Step is one step of a build, as the E2B SDK sends it: RUN [cmd, user?],
// COPY [src, dest, user?, mode?] with FilesHash, ENV [k1, v1, k2, v2...],
// WORKDIR [dir], USER [name]. Force skips the cache for the step.
type Step struct {
	Type      string   `json:"type"`
	Args      []string `json:"args"`
	Force     bool     `json:"force,omitempty"`
	FilesHash string   `json:"filesHash,omitempty"`
}

// Spec is what a build runs: a base (an image name mapped to a built-in
// template, or an existing template), steps, and the start and ready
// commands of sandboxes created from the result.
type Spec struct {
	FromImage    string `json:"fromImage,omitempty"`
	FromTemplate string `json:"fromTemplate,omitempty"`
	StartCmd     string `json:"startCmd,omitempty"`
	ReadyCmd     string `json:"readyCmd,omitempty"`
	// Force runs every step regardless of the cache.
	Force bool   `json:"force,omitempty"`
	Steps []Step `json:"steps,omitempty"`
}

// SupportedImages describes the image names a build may start from. There
// is no container registry: each maps to the built-in Debian base.
const SupportedImages = "e2bdev/base; debian:bookworm, debian:12 (also -slim); python:3, python:3.11 " +
	"(also -slim, -bookworm, -slim-bookworm; Python 3.11 as Debian bookworm ships it). " +
	"Any other image needs fromTemplate with a template built here"

// imageBase maps a supported image name (normalised: no registry host or
// library/ prefix, explicit tag) to the built-in template it stands for.
var imageBase = func() map[string]string {
	m := map[string]string{"e2bdev/base:latest": BaseAlias}
	for _, v := range []string{"bookworm", "12"} {
		m["debian:"+v] = BaseAlias
		m["debian:"+v+"-slim"] = BaseAlias
	}
	for _, v := range []string{"3", "3.11"} {
		for _, s := range []string{"", "-slim", "-bookworm", "-slim-bookworm"} {
			m["python:"+v+s] = BaseAlias
		}
	}
	return m
}()

// NormaliseImage strips a docker.io registry host and the library/
// namespace and adds the latest tag when none is given.
func NormaliseImage(name string) string {
	s := strings.ToLower(strings.TrimSpace(name))
	for _, p := range []string{"docker.io/", "index.docker.io/", "registry-1.docker.io/"} {
		s = strings.TrimPrefix(s, p)
	}
	s = strings.TrimPrefix(s, "library/")
	if i := strings.LastIndex(s, "/"); !strings.Contains(s[i+1:], ":") && !strings.Contains(s, "@") {
		s += ":latest"
	}
	return s
}

// ImageTemplate returns the built-in template an image name maps to, or an
// ErrInvalid error naming the supported images.
func ImageTemplate(image string) (string, error) {
	if base, ok := imageBase[NormaliseImage(image)]; ok {
		return base, nil
	}
	return "", fmt.Errorf("%w: base image %q is not supported: Paddock builds templates without Docker or a registry; supported images: %s",
		ErrInvalid, image, SupportedImages)
}

var (
	envNameRe  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userNameRe = regexp.MustCompile(`^([a-z_][a-z0-9_.-]*\$?|[0-9]+)$`)
	modeRe     = regexp.MustCompile(`^0?[0-7]{3,4}$`)
)

// Validate checks a spec before any work: the base, every step's type and
// arguments. Errors wrap ErrInvalid and name the step (1-based).
func (s *Spec) Validate() error {
	switch {
	case s.FromImage != "" && s.FromTemplate != "":
		return fmt.Errorf("%w: set fromImage or fromTemplate, not both", ErrInvalid)
	case s.FromImage != "":
		if _, err := ImageTemplate(s.FromImage); err != nil {
			return err
		}
	case s.FromTemplate != "":
		if _, err := ParseName(s.FromTemplate); err != nil {
			return fmt.Errorf("fromTemplate: %w", err)
		}
	default:
		return fmt.Errorf("%w: fromImage or fromTemplate is required", ErrInvalid)
	}
	for i, st := range s.Steps {
		if err := st.validate(); err != nil {
			return fmt.Errorf("%w: step %d (%s): %v", ErrInvalid, i+1, st.Type, err)
		}
	}
	return nil
}

func (st *Step) validate() error {
	a := st.Args
	switch st.Type {
	case StepRun:
		if len(a) < 1 || len(a) > 2 || strings.TrimSpace(a[0]) == "" {
			return fmt.Errorf("RUN takes a command and an optional user, got %q", a)
		}
		if len(a) == 2 && a[1] != "" && !userNameRe.MatchString(a[1]) {
			return fmt.Errorf("invalid user %q", a[1])
		}
	case StepCopy:
		if len(a) < 2 || len(a) > 4 || a[0] == "" || a[1] == "" {
			return fmt.Errorf("COPY takes source, destination, optional user and mode, got %q", a)
		}
		if strings.HasPrefix(a[0], "/") || path.Clean(a[0]) == ".." || strings.HasPrefix(path.Clean(a[0]), "../") {
			return fmt.Errorf("source %q must be relative and inside the build context", a[0])
		}
		if len(a) > 2 && a[2] != "" {
			u, g, _ := strings.Cut(a[2], ":")
			if !userNameRe.MatchString(u) || (g != "" && !userNameRe.MatchString(g)) {
				return fmt.Errorf("invalid owner %q", a[2])
			}
		}
		if len(a) > 3 && a[3] != "" && !modeRe.MatchString(a[3]) {
			return fmt.Errorf("invalid mode %q (want octal, such as 0644)", a[3])
		}
		if !ValidDigest(st.FilesHash) {
			return fmt.Errorf("filesHash %q is not 64 lowercase hex characters", st.FilesHash)
		}
	case StepEnv:
		if len(a) == 0 || len(a)%2 != 0 {
			return fmt.Errorf("ENV takes name/value pairs, got %d arguments", len(a))
		}
		for i := 0; i < len(a); i += 2 {
			if !envNameRe.MatchString(a[i]) {
				return fmt.Errorf("invalid environment variable name %q", a[i])
			}
		}
	case StepWorkdir:
		if len(a) != 1 || strings.TrimSpace(a[0]) == "" {
			return fmt.Errorf("WORKDIR takes one directory, got %q", a)
		}
	case StepUser:
		if len(a) != 1 || !userNameRe.MatchString(a[0]) {
			return fmt.Errorf("USER takes one user name, got %q", a)
		}
	default:
		return fmt.Errorf("unsupported step type %q (supported: RUN, COPY, ENV, WORKDIR, USER)", st.Type)
	}
	return nil
}

// describe is the step as a log line: "RUN apt-get install -y x".
func (st *Step) describe() string {
	switch st.Type {
	case StepEnv:
		var kv []string
		for i := 0; i+1 < len(st.Args); i += 2 {
			kv = append(kv, st.Args[i]+"="+strconv.Quote(st.Args[i+1]))
		}
		return "ENV " + strings.Join(kv, " ")
	case StepRun:
		s := "RUN " + st.Args[0]
		if len(st.Args) > 1 && st.Args[1] != "" {
			s += " (as " + st.Args[1] + ")"
		}
		return s
	case StepCopy:
		return "COPY " + st.Args[0] + " " + st.Args[1]
	}
	return st.Type + " " + strings.Join(st.Args, " ")
}

// state is what the build has accumulated before a step: the layers and
// the process defaults later steps and sandboxes inherit.
type state struct {
	Layers  []string          `json:"layers"`
	User    string            `json:"user"`
	Workdir string            `json:"workdir"`
	Env     map[string]string `json:"env"`
}

// resolveDir makes p absolute against the working directory, keeping a
// trailing slash.
func resolveDir(workdir, p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	out := path.Join(workdir, p)
	if strings.HasSuffix(p, "/") && !strings.HasSuffix(out, "/") {
		out += "/"
	}
	return out
}

// cacheKey identifies a step's result: the team (caches never cross
// teams), everything the build accumulated before it (layers by digest,
// user, workdir, environment) and the step itself (type, arguments, files
// hash). Equal keys run the same step on the same content.
func cacheKey(team string, before state, st Step) string {
	envKeys := make([]string, 0, len(before.Env))
	for k := range before.Env {
		envKeys = append(envKeys, k)
	}
	sort.Strings(envKeys)
	env := make([][2]string, 0, len(envKeys))
	for _, k := range envKeys {
		env = append(env, [2]string{k, before.Env[k]})
	}
	b, _ := json.Marshal(struct {
		V         int         `json:"v"`
		Team      string      `json:"team"`
		Layers    []string    `json:"layers"`
		User      string      `json:"user"`
		Workdir   string      `json:"workdir"`
		Env       [][2]string `json:"env"`
		Type      string      `json:"type"`
		Args      []string    `json:"args"`
		FilesHash string      `json:"filesHash,omitempty"`
	}{1, team, before.Layers, before.User, before.Workdir, env, st.Type, st.Args, st.FilesHash})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
