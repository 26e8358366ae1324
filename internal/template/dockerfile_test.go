package template

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseDockerfile(t *testing.T) {
	src := `# syntax=docker/dockerfile:1
ARG PY=3.11
FROM python:${PY}-slim AS app
ARG GREETING=hello
ARG EMPTY
ENV APP=/opt/app \
    MODE="prod mode" \
    # a comment inside a continuation
    LEVEL=${MODE:-none}
ENV LEGACY some value
LABEL a=b
WORKDIR $APP
COPY --chown=user:user --chmod=0644 src/ ./src/
COPY a.txt b.txt /dest
ADD ["run.sh", "/usr/local/bin/run-me"]
RUN echo "$GREETING" && \
    echo done
RUN ["python3", "-c", "print('x y')"]
USER user:user
EXPOSE 80
ENTRYPOINT ["python3"]
CMD ["-m", "http.server"]
`
	df, err := ParseDockerfile(strings.NewReader(src), map[string]string{"GREETING": "hi there"})
	if err != nil {
		t.Fatal(err)
	}
	if df.FromImage != "python:3.11-slim" {
		t.Errorf("FromImage = %q", df.FromImage)
	}
	if df.StartCmd != "python3 -m http.server" {
		t.Errorf("StartCmd = %q", df.StartCmd)
	}
	want := []Step{
		{Type: StepUser, Args: []string{"root"}},
		{Type: StepWorkdir, Args: []string{"/"}},
		{Type: StepEnv, Args: []string{"APP", "/opt/app", "MODE", "prod mode", "LEVEL", "prod mode"}},
		{Type: StepEnv, Args: []string{"LEGACY", "some value"}},
		{Type: StepWorkdir, Args: []string{"/opt/app"}},
		{Type: StepCopy, Args: []string{"src/", "./src/", "user:user", "0644"}},
		{Type: StepCopy, Args: []string{"a.txt", "/dest/", "", ""}},
		{Type: StepCopy, Args: []string{"b.txt", "/dest/", "", ""}},
		{Type: StepCopy, Args: []string{"run.sh", "/usr/local/bin/run-me", "", ""}},
		{Type: StepRun, Args: []string{`export GREETING='hi there'; export EMPTY=''; echo "$GREETING" &&      echo done`}},
		{Type: StepRun, Args: []string{`export GREETING='hi there'; export EMPTY=''; python3 -c 'print('\''x y'\'')'`}},
		{Type: StepUser, Args: []string{"user"}},
	}
	if !reflect.DeepEqual(df.Steps, want) {
		t.Errorf("steps:\n%s\nwant:\n%s", dumpSteps(df.Steps), dumpSteps(want))
	}
	if len(df.Ignored) != 2 {
		t.Errorf("Ignored = %v, want LABEL and EXPOSE", df.Ignored)
	}
	if got := CopySources(df.Steps); !reflect.DeepEqual(got, []string{"a.txt", "b.txt", "run.sh", "src/"}) {
		t.Errorf("CopySources = %v", got)
	}
}

func dumpSteps(steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		b.WriteString("  " + s.Type + " " + strings.Join(quoteAll(s.Args), " ") + "\n")
	}
	return b.String()
}

func quoteAll(a []string) []string {
	out := make([]string, len(a))
	for i, s := range a {
		out[i] = "«" + s + "»"
	}
	return out
}

func TestParseDockerfileDefaults(t *testing.T) {
	df, err := ParseDockerfile(strings.NewReader("FROM debian:bookworm\nRUN true\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Step{
		{Type: StepUser, Args: []string{"root"}},
		{Type: StepWorkdir, Args: []string{"/"}},
		{Type: StepRun, Args: []string{"true"}},
		{Type: StepUser, Args: []string{"user"}},
		{Type: StepWorkdir, Args: []string{"/home/user"}},
	}
	if !reflect.DeepEqual(df.Steps, want) || df.StartCmd != "" {
		t.Errorf("steps %s start %q", dumpSteps(df.Steps), df.StartCmd)
	}
	spec := Spec{FromImage: df.FromImage, Steps: df.Steps}
	if err := spec.Validate(); err != nil {
		t.Errorf("a parsed Dockerfile does not validate: %v", err)
	}
}

func TestParseDockerfileErrors(t *testing.T) {
	for _, c := range []struct {
		src, want string
		line      int
		args      map[string]string
	}{
		{"FROM ubuntu:22.04\n", "not supported", 1, nil},
		{"FROM alpine\n", "supported images", 1, nil},
		{"RUN true\nFROM debian:12\n", "before FROM", 1, nil},
		{"FROM debian:12\nFROM debian:12\n", "multi-stage", 2, nil},
		{"FROM debian:12\nCOPY --from=build /a /b\n", "multi-stage", 2, nil},
		{"FROM debian:12\nHEALTHCHECK CMD true\n", "HEALTHCHECK is not supported", 2, nil},
		{"FROM debian:12\n\nSHELL [\"/bin/sh\"]\n", "SHELL is not supported", 3, nil},
		{"FROM debian:12\nONBUILD RUN x\n", "ONBUILD is not supported", 2, nil},
		{"FROM debian:12\nVOLUME /data\n", "VOLUME is not supported", 2, nil},
		{"FROM debian:12\nADD https://example.com/x /x\n", "only local files", 2, nil},
		{"FROM debian:12\nADD app.tar.gz /x\n", "extracting archives", 2, nil},
		{"FROM debian:12\nCOPY ../secret /x\n", "inside the build context", 2, nil},
		{"FROM debian:12\nRUN <<EOF\n", "heredocs", 2, nil},
		{"FROM debian:12\nRUN --mount=type=cache,target=/x true\n", "RUN options", 2, nil},
		{"FROM debian:12\nENV 1BAD=x\n", "invalid environment variable", 2, nil},
		{"FROM debian:12\nCOPY --chmod=u+x a /b\n", "octal", 2, nil},
		{"# only a comment\n", "no FROM", 1, nil},
		{"FROM debian:12\n", "declares no ARG", 0, map[string]string{"X": "1"}},
	} {
		_, err := ParseDockerfile(strings.NewReader(c.src), c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseDockerfile(%q) = %v, want an error containing %q", c.src, err, c.want)
			continue
		}
		var de *DockerfileError
		if c.line > 0 && (!errors.As(err, &de) || de.Line != c.line) {
			t.Errorf("ParseDockerfile(%q) = %v, want it at line %d", c.src, err, c.line)
		}
	}
}

func TestSubstitute(t *testing.T) {
	vars := map[string]string{"A": "1", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"$A":               "1",
		"${A}x":            "1x",
		"${B:-def}":        "def",
		"${EMPTY:-def}":    "def",
		"${A:+alt}":        "alt",
		"${B:+alt}":        "",
		`\$A`:              "$A",
		"$":                "$",
		"a$Bb":             "a",
		"cost $5":          "cost $5",
		"${A}-${A}/$A.txt": "1-1/1.txt",
	} {
		got, err := substitute(in, lookup)
		if err != nil || got != want {
			t.Errorf("substitute(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"${A", "${A:?x}", "${1}"} {
		if _, err := substitute(bad, lookup); err == nil {
			t.Errorf("substitute(%q) succeeded", bad)
		}
	}
}
