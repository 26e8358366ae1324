package template

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"unicode"
)

// Dockerfile is a Dockerfile turned into a build: the base image, the steps
// (COPY steps without files hash: the caller hashes and uploads their
// sources) and the start command. Only what can be built without a
// container engine is accepted (see ParseDockerfile).
type Dockerfile struct {
	// FromImage is the FROM image (one of SupportedImages).
	FromImage string
	Steps     []Step
	// StartCmd comes from CMD and ENTRYPOINT.
	StartCmd string
	// Ignored lists instructions that were accepted without effect.
	Ignored []string
}

// DockerfileError is a parse error with its line.
type DockerfileError struct {
	Line int
	Msg  string
}

func (e *DockerfileError) Error() string { return fmt.Sprintf("Dockerfile line %d: %s", e.Line, e.Msg) }

// ParseDockerfile reads the Dockerfile subset Paddock builds: one FROM of a
// supported image (ARGs before it may set its name), RUN, COPY and ADD of
// local files (--chown, --chmod), ENV, ARG (defaults overridden by
// buildArgs; their values reach later RUN steps, not the template), WORKDIR,
// USER, CMD and ENTRYPOINT (the start command), comments and line
// continuations. EXPOSE, LABEL and MAINTAINER are ignored. Anything else
// (multi-stage builds, ADD of URLs or archives, HEALTHCHECK, SHELL,
// ONBUILD, VOLUME, heredocs...) is an error, before any work is done.
//
// Like E2B's Dockerfile conversion, the steps run as root in / (Docker's
// defaults) and the template ends as user "user" in /home/user unless the
// Dockerfile sets USER or WORKDIR.
func ParseDockerfile(r io.Reader, buildArgs map[string]string) (*Dockerfile, error) {
	lines, err := logicalLines(r)
	if err != nil {
		return nil, err
	}
	df := &Dockerfile{}
	args := map[string]string{}   // ARG values in scope
	var argOrder []string         // ARG names in declaration order (for RUN)
	env := map[string]string{}    // ENV values, for substitution
	usedArgs := map[string]bool{} // build args some ARG declared
	var entrypoint, cmd string
	haveFrom, userSet, workdirSet := false, false, false
	lookup := func(name string) (string, bool) {
		if v, ok := env[name]; ok {
			return v, true
		}
		v, ok := args[name]
		return v, ok
	}
	for _, ln := range lines {
		fail := func(format string, a ...any) error {
			return &DockerfileError{Line: ln.num, Msg: fmt.Sprintf(format, a...)}
		}
		kw, rest := splitInstruction(ln.text)
		if !haveFrom && kw != "FROM" && kw != "ARG" {
			return nil, fail("%s before FROM: the first instruction must be FROM (ARG may precede it)", kw)
		}
		if (kw == "RUN" || kw == "COPY" || kw == "ADD") && heredocRe(rest) {
			return nil, fail("heredocs (<<EOF) are not supported")
		}
		switch kw {
		case "FROM":
			if haveFrom {
				return nil, fail("multi-stage builds (a second FROM) are not supported")
			}
			fields := strings.Fields(rest)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				if strings.HasPrefix(fields[0], "--platform") {
					fields = fields[1:]
					continue
				}
				return nil, fail("FROM option %s is not supported", fields[0])
			}
			if len(fields) == 0 || len(fields) == 2 || len(fields) > 3 || (len(fields) == 3 && !strings.EqualFold(fields[1], "AS")) {
				return nil, fail("FROM takes an image and an optional 'AS name', got %q", rest)
			}
			image, err := substitute(fields[0], lookup)
			if err != nil {
				return nil, fail("%v", err)
			}
			if _, err := ImageTemplate(image); err != nil {
				return nil, fail("FROM %s: %v", image, err)
			}
			df.FromImage = image
			haveFrom = true
			// ARGs before FROM are only visible to FROM (Docker's rule).
			args, argOrder = map[string]string{}, nil
			df.Steps = append(df.Steps,
				Step{Type: StepUser, Args: []string{"root"}},
				Step{Type: StepWorkdir, Args: []string{"/"}})
		case "ARG":
			fields, err := shellWords(rest)
			if err != nil || len(fields) == 0 {
				return nil, fail("ARG takes name[=default]...")
			}
			for _, f := range fields {
				name, def, hasDef := strings.Cut(f, "=")
				if !envNameRe.MatchString(name) {
					return nil, fail("invalid ARG name %q", name)
				}
				v, given := buildArgs[name]
				if !given && hasDef {
					if v, err = substitute(def, lookup); err != nil {
						return nil, fail("%v", err)
					}
				}
				usedArgs[name] = true
				if _, seen := args[name]; !seen {
					argOrder = append(argOrder, name)
				}
				args[name] = v
			}
		case "ENV":
			pairs, err := parseEnv(rest)
			if err != nil {
				return nil, fail("%v", err)
			}
			var stepArgs []string
			for _, kv := range pairs {
				v, err := substitute(kv[1], lookup)
				if err != nil {
					return nil, fail("%v", err)
				}
				if !envNameRe.MatchString(kv[0]) {
					return nil, fail("invalid environment variable name %q", kv[0])
				}
				env[kv[0]] = v
				stepArgs = append(stepArgs, kv[0], v)
			}
			df.Steps = append(df.Steps, Step{Type: StepEnv, Args: stepArgs})
		case "RUN":
			flags, body := leadingFlags(rest)
			if len(flags) > 0 {
				return nil, fail("RUN options (%s) are not supported", strings.Join(flags, " "))
			}
			command, err := commandLine(body)
			if err != nil {
				return nil, fail("RUN: %v", err)
			}
			if strings.TrimSpace(command) == "" {
				return nil, fail("RUN needs a command")
			}
			// ARG values are in the environment of RUN, not in the template.
			var exports []string
			for _, name := range argOrder {
				if _, overridden := env[name]; overridden {
					continue
				}
				exports = append(exports, "export "+name+"="+shellQuote(args[name]))
			}
			if len(exports) > 0 {
				command = strings.Join(exports, "; ") + "; " + command
			}
			df.Steps = append(df.Steps, Step{Type: StepRun, Args: []string{command}})
		case "COPY", "ADD":
			steps, err := parseCopy(kw, rest, lookup)
			if err != nil {
				return nil, fail("%v", err)
			}
			df.Steps = append(df.Steps, steps...)
		case "WORKDIR":
			dir, err := substitute(strings.TrimSpace(unquote(rest)), lookup)
			if err != nil || dir == "" {
				return nil, fail("WORKDIR takes a directory")
			}
			df.Steps = append(df.Steps, Step{Type: StepWorkdir, Args: []string{dir}})
			workdirSet = true
		case "USER":
			u, err := substitute(strings.TrimSpace(rest), lookup)
			if err != nil || u == "" || strings.ContainsAny(u, " \t") {
				return nil, fail("USER takes one user name")
			}
			u, _, _ = strings.Cut(u, ":") // the group follows the user
			if !userNameRe.MatchString(u) {
				return nil, fail("invalid user %q", u)
			}
			df.Steps = append(df.Steps, Step{Type: StepUser, Args: []string{u}})
			userSet = true
		case "CMD", "ENTRYPOINT":
			c, err := commandLine(rest)
			if err != nil {
				return nil, fail("%s: %v", kw, err)
			}
			if kw == "CMD" {
				cmd = c
			} else {
				entrypoint = c
			}
		case "EXPOSE", "LABEL", "MAINTAINER":
			df.Ignored = append(df.Ignored, fmt.Sprintf("line %d: %s (no effect on a sandbox template)", ln.num, kw))
		default:
			return nil, fail("instruction %s is not supported (supported: FROM, RUN, COPY, ADD of local files, ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT; EXPOSE, LABEL and MAINTAINER are ignored)", kw)
		}
	}
	if !haveFrom {
		return nil, &DockerfileError{Line: 1, Msg: "no FROM instruction"}
	}
	for name := range buildArgs {
		if !usedArgs[name] {
			return nil, fmt.Errorf("--build-arg %s: the Dockerfile declares no ARG %s", name, name)
		}
	}
	df.StartCmd = strings.TrimSpace(strings.TrimSpace(entrypoint) + " " + strings.TrimSpace(cmd))
	if !userSet {
		df.Steps = append(df.Steps, Step{Type: StepUser, Args: []string{DefaultUser}})
	}
	if !workdirSet {
		df.Steps = append(df.Steps, Step{Type: StepWorkdir, Args: []string{DefaultWorkdir}})
	}
	return df, nil
}

// heredocRe reports whether an instruction's arguments start a heredoc.
func heredocRe(rest string) bool {
	for _, f := range strings.Fields(rest) {
		if strings.HasPrefix(f, "<<") && !strings.HasPrefix(f, "<<<") && len(f) > 2 {
			return true
		}
	}
	return false
}

type logicalLine struct {
	num  int // first physical line
	text string
}

// logicalLines joins continuation lines ("\" at the end) and drops
// comments and empty lines (a comment inside a continuation is skipped, as
// Docker does).
func logicalLines(r io.Reader) ([]logicalLine, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []logicalLine
	var cur strings.Builder
	start, n := 0, 0
	for sc.Scan() {
		n++
		line := strings.TrimRightFunc(sc.Text(), unicode.IsSpace)
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() > 0) {
			continue
		}
		if trimmed == "" {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		out = append(out, logicalLine{num: start, text: strings.TrimSpace(cur.String())})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	if cur.Len() > 0 {
		out = append(out, logicalLine{num: start, text: strings.TrimSpace(cur.String())})
	}
	return out, nil
}

func splitInstruction(s string) (string, string) {
	kw, rest := s, ""
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		kw, rest = s[:i], s[i+1:]
	}
	return strings.ToUpper(kw), strings.TrimSpace(rest)
}

// leadingFlags splits "--a=b --c rest" into its --flags and the rest.
func leadingFlags(s string) ([]string, string) {
	var flags []string
	s = strings.TrimSpace(s)
	for strings.HasPrefix(s, "--") {
		f, rest, _ := strings.Cut(s, " ")
		flags = append(flags, f)
		s = strings.TrimSpace(rest)
	}
	return flags, s
}

// commandLine turns a shell-form or exec-form (JSON array) command into a
// shell command line.
func commandLine(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var argv []string
		if err := json.Unmarshal([]byte(s), &argv); err == nil {
			q := make([]string, len(argv))
			for i, a := range argv {
				q[i] = shellQuote(a)
			}
			return strings.Join(q, " "), nil
		}
		// Not valid JSON: Docker runs it as a shell command.
	}
	return s, nil
}

// shellQuote quotes s for a POSIX shell when needed.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseCopy turns COPY/ADD arguments into COPY steps, one per source.
func parseCopy(kw, rest string, lookup func(string) (string, bool)) ([]Step, error) {
	flags, body := leadingFlags(rest)
	owner, mode := "", ""
	for _, f := range flags {
		name, val, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		switch name {
		case "chown":
			owner = val
		case "chmod":
			if !modeRe.MatchString(val) {
				return nil, fmt.Errorf("%s --chmod=%s: only octal modes are supported", kw, val)
			}
			mode = val
		case "from":
			return nil, fmt.Errorf("%s --from (multi-stage builds) is not supported", kw)
		case "link":
		default:
			return nil, fmt.Errorf("%s option --%s is not supported", kw, name)
		}
	}
	var parts []string
	if strings.HasPrefix(body, "[") {
		if err := json.Unmarshal([]byte(body), &parts); err != nil {
			return nil, fmt.Errorf("%s: invalid JSON form: %v", kw, err)
		}
	} else {
		var err error
		if parts, err = shellWords(body); err != nil {
			return nil, fmt.Errorf("%s: %v", kw, err)
		}
	}
	if len(parts) < 2 {
		return nil, fmt.Errorf("%s takes one or more sources and a destination", kw)
	}
	for i := range parts {
		v, err := substitute(parts[i], lookup)
		if err != nil {
			return nil, err
		}
		parts[i] = v
	}
	if owner != "" {
		v, err := substitute(owner, lookup)
		if err != nil {
			return nil, err
		}
		owner = v
	}
	dest := parts[len(parts)-1]
	srcs := parts[:len(parts)-1]
	if len(srcs) > 1 && !strings.HasSuffix(dest, "/") {
		dest += "/" // several sources: Docker requires a directory
	}
	var steps []Step
	for _, src := range srcs {
		low := strings.ToLower(src)
		if kw == "ADD" {
			if strings.Contains(low, "://") || strings.HasPrefix(low, "git@") {
				return nil, fmt.Errorf("ADD %s: only local files can be added (no URLs or git repositories); download them in a RUN step", src)
			}
			for _, ext := range []string{".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst"} {
				if strings.HasSuffix(low, ext) {
					return nil, fmt.Errorf("ADD %s: extracting archives is not supported; COPY the archive and unpack it with RUN tar", src)
				}
			}
		}
		clean := path.Clean(src)
		if path.IsAbs(src) || clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, fmt.Errorf("%s %s: the source must be inside the build context", kw, src)
		}
		args := []string{src, dest, owner, mode}
		steps = append(steps, Step{Type: StepCopy, Args: args})
	}
	return steps, nil
}

// parseEnv parses ENV's "k=v k2=v2" and legacy "k v" forms.
func parseEnv(rest string) ([][2]string, error) {
	words, err := shellWords(rest)
	if err != nil {
		return nil, fmt.Errorf("ENV: %v", err)
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("ENV takes name=value pairs")
	}
	if !strings.Contains(words[0], "=") {
		// Legacy form: the rest of the line is the value.
		name, value, _ := strings.Cut(strings.TrimSpace(rest), " ")
		return [][2]string{{name, unquote(strings.TrimSpace(value))}}, nil
	}
	var out [][2]string
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			return nil, fmt.Errorf("ENV: %q is not name=value", w)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// unquote removes one level of matching quotes.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// shellWords splits s into words honouring double and single quotes and
// backslash escapes (quotes are removed; "$" is kept for substitute).
func shellWords(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	runes := []rune(s)
	for i := 0; i < len(runes); i++ {
		c := runes[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(runes) && (runes[i+1] == '"' || runes[i+1] == '\\') {
				i++
				cur.WriteRune(runes[i])
			} else {
				cur.WriteRune(c)
			}
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(runes):
			i++
			cur.WriteRune(runes[i])
			inWord = true
		case unicode.IsSpace(c):
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// substitute expands $NAME, ${NAME}, ${NAME:-default} and ${NAME:+alt}
// from lookup (unset names expand to ""), as Dockerfile instructions do.
func substitute(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if s[i+1] == '{' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			expr := s[i+2 : i+end]
			name, op, word := expr, "", ""
			if j := strings.Index(expr, ":"); j >= 0 {
				name, op, word = expr[:j], expr[j:j+min(2, len(expr)-j)], expr[j+min(2, len(expr)-j):]
			}
			if !envNameRe.MatchString(name) {
				return "", fmt.Errorf("invalid variable ${%s}", expr)
			}
			v, set := lookup(name)
			switch op {
			case "":
			case ":-":
				if !set || v == "" {
					v = word
				}
			case ":+":
				if set && v != "" {
					v = word
				} else {
					v = ""
				}
			default:
				return "", fmt.Errorf("unsupported substitution ${%s}", expr)
			}
			b.WriteString(v)
			i += end
			continue
		}
		j := i + 1
		for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || j > i+1 && s[j] >= '0' && s[j] <= '9') {
			j++
		}
		if j == i+1 {
			b.WriteByte(c)
			continue
		}
		v, _ := lookup(s[i+1 : j])
		b.WriteString(v)
		i = j - 1
	}
	return b.String(), nil
}

// CopySources returns the distinct COPY sources of the steps, sorted.
func CopySources(steps []Step) []string {
	seen := map[string]bool{}
	var out []string
	for _, st := range steps {
		if st.Type == StepCopy && !seen[st.Args[0]] {
			seen[st.Args[0]] = true
			out = append(out, st.Args[0])
		}
	}
	sort.Strings(out)
	return out
}
