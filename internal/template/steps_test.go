package template

import (
	"errors"
	"strings"
	"testing"
)

func TestImageTemplate(t *testing.T) {
	for _, ok := range []string{
		"e2bdev/base", "e2bdev/base:latest", "docker.io/e2bdev/base", "debian:bookworm", "debian:12-slim",
		"docker.io/library/debian:bookworm", "python:3", "python:3.11", "PYTHON:3.11-slim-bookworm", "python:3-bookworm",
	} {
		if got, err := ImageTemplate(ok); err != nil || got != BaseAlias {
			t.Errorf("ImageTemplate(%q) = %q, %v; want base", ok, got, err)
		}
	}
	for _, bad := range []string{
		"debian", "debian:trixie", "ubuntu:22.04", "python:3.12", "node:lts", "e2bdev/code-interpreter",
		"debian@sha256:0123", "alpine:3.24", "quay.io/debian:bookworm",
	} {
		_, err := ImageTemplate(bad)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "supported images") {
			t.Errorf("ImageTemplate(%q) = %v, want ErrInvalid naming the supported images", bad, err)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	good := Spec{FromTemplate: "base", Steps: []Step{
		{Type: StepRun, Args: []string{"apt-get install -y x", "root"}},
		{Type: StepCopy, Args: []string{"src", "/app/", "user", "0644"}, FilesHash: hash},
		{Type: StepCopy, Args: []string{"./a", "b"}, FilesHash: hash},
		{Type: StepEnv, Args: []string{"K1", "v1", "K2", ""}},
		{Type: StepWorkdir, Args: []string{"/app"}},
		{Type: StepUser, Args: []string{"user"}},
	}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{}, "fromImage or fromTemplate is required"},
		{Spec{FromImage: "debian:12", FromTemplate: "base"}, "not both"},
		{Spec{FromImage: "ubuntu"}, "not supported"},
		{Spec{FromTemplate: "Bad Name!"}, "fromTemplate"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: "HEALTHCHECK"}}}, "step 1 (HEALTHCHECK): unsupported step type"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepRun}}}, "step 1 (RUN)"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepRun, Args: []string{"x", "bad user"}}}}, "invalid user"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepCopy, Args: []string{"a", "/b"}}}}, "filesHash"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepCopy, Args: []string{"/etc/passwd", "/b"}, FilesHash: hash}}}, "relative"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepCopy, Args: []string{"../x", "/b"}, FilesHash: hash}}}, "inside the build context"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepCopy, Args: []string{"a", "/b", "", "rwx"}, FilesHash: hash}}}, "mode"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepEnv, Args: []string{"K"}}}}, "pairs"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepEnv, Args: []string{"K-1", "v"}}}}, "variable name"},
		{Spec{FromTemplate: "base", Steps: []Step{{Type: StepWorkdir}}}, "WORKDIR"},
		{Spec{FromTemplate: "base", Steps: []Step{good.Steps[0], {Type: StepUser, Args: []string{"a b"}}}}, "step 2 (USER)"},
	} {
		err := c.spec.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid containing %q", c.spec, err, c.want)
		}
	}
}

func TestCacheKey(t *testing.T) {
	base := state{Layers: []string{layerA}, User: "user", Workdir: "/home/user", Env: map[string]string{"A": "1", "B": "2"}}
	step := Step{Type: StepRun, Args: []string{"make"}}
	k := cacheKey("team", base, step)
	if !ValidDigest(k) {
		t.Fatalf("cache key %q is not a digest", k)
	}
	// Map order never matters.
	same := base
	same.Env = map[string]string{"B": "2", "A": "1"}
	if cacheKey("team", same, step) != k {
		t.Errorf("equal states give different keys")
	}
	// Force is not part of the key: a forced step refreshes the same entry.
	if cacheKey("team", base, Step{Type: StepRun, Args: []string{"make"}, Force: true}) != k {
		t.Errorf("force changed the key")
	}
	variants := map[string]string{
		"team":      cacheKey("other", base, step),
		"layers":    cacheKey("team", state{Layers: []string{layerA, layerB}, User: "user", Workdir: "/home/user", Env: base.Env}, step),
		"user":      cacheKey("team", state{Layers: base.Layers, User: "root", Workdir: "/home/user", Env: base.Env}, step),
		"workdir":   cacheKey("team", state{Layers: base.Layers, User: "user", Workdir: "/", Env: base.Env}, step),
		"env":       cacheKey("team", state{Layers: base.Layers, User: "user", Workdir: "/home/user", Env: map[string]string{"A": "1"}}, step),
		"args":      cacheKey("team", base, Step{Type: StepRun, Args: []string{"make", "root"}}),
		"type":      cacheKey("team", base, Step{Type: StepWorkdir, Args: []string{"make"}}),
		"filesHash": cacheKey("team", base, Step{Type: StepRun, Args: []string{"make"}, FilesHash: layerB}),
	}
	seen := map[string]string{k: "base"}
	for what, v := range variants {
		if other, dup := seen[v]; dup {
			t.Errorf("changing %s gives the same key as %s", what, other)
		}
		seen[v] = what
	}
}

func TestResolveDirAndChownSpec(t *testing.T) {
	for _, c := range [][3]string{
		{"/home/user", "app", "/home/user/app"},
		{"/home/user", "app/", "/home/user/app/"},
		{"/home/user", "/abs", "/abs"},
		{"/", "./src/", "/src/"},
		{"/opt", "../x", "/x"},
	} {
		if got := resolveDir(c[0], c[1]); got != c[2] {
			t.Errorf("resolveDir(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
	for in, want := range map[string]string{"user": "user:", "1000": "1000:1000", "user:staff": "user:staff"} {
		if got := chownSpec(in); got != want {
			t.Errorf("chownSpec(%q) = %q, want %q", in, got, want)
		}
	}
}
