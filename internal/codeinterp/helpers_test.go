package codeinterp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireTools fails the test when an interpreter the server needs is
// missing (scripts/setup.sh installs them).
func requireTools(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import ipykernel, matplotlib_inline, matplotlib, pandas").CombinedOutput(); err != nil {
		t.Fatalf("python3 with ipykernel, matplotlib-inline, matplotlib and pandas is required (Debian python3-ipykernel python3-matplotlib-inline python3-matplotlib python3-pandas): %v: %s", err, out)
	}
	for _, tool := range []string{"node", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
}

// fakeEnvd answers GET /envs like envd, and records the tokens it got.
type fakeEnvd struct {
	*httptest.Server
	envs   map[string]string
	token  string
	mu     sync.Mutex
	tokens []string
}

func newFakeEnvd(t testing.TB, token string, envs map[string]string) *fakeEnvd {
	f := &fakeEnvd{envs: envs, token: token}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/envs" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		got := r.Header.Get("X-Access-Token")
		f.mu.Lock()
		f.tokens = append(f.tokens, got)
		f.mu.Unlock()
		if got != f.token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(f.envs)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeEnvd) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

type testServer struct {
	t     testing.TB
	srv   *Server
	http  *httptest.Server
	url   string
	cwd   string
	envd  *fakeEnvd
	token string
}

// newTestServer starts a code interpreter behind an httptest server, with a
// fake envd. At cleanup it closes everything and checks that no kernel
// process is left.
func newTestServer(t testing.TB, mutate ...func(*Config)) *testServer {
	t.Helper()
	requireTools(t)
	ts := &testServer{t: t, cwd: t.TempDir(), token: "tok-" + strconv.Itoa(os.Getpid())}
	ts.envd = newFakeEnvd(t, ts.token, map[string]string{"GLOBAL_VAR": "global", "E2B_SANDBOX": "true"})
	cfg := Config{
		Cwd:     ts.cwd,
		EnvdURL: ts.envd.URL,
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts.srv = srv
	ts.http = httptest.NewServer(srv)
	ts.url = ts.http.URL
	runtimeDir := srv.runtimeDir
	t.Cleanup(func() {
		ts.http.CloseClientConnections()
		ts.http.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if _, err := os.Stat(runtimeDir); !os.IsNotExist(err) {
			t.Errorf("runtime directory %s left behind (%v)", runtimeDir, err)
		}
		checkNoKernels(t, runtimeDir)
	})
	return ts
}

// testWriter sends the server's log to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// checkNoKernels fails when a child of this process, or a process started
// from the server's runtime directory, is still alive.
func checkNoKernels(t testing.TB, runtimeDir string) {
	t.Helper()
	self := strconv.Itoa(os.Getpid())
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		left = left[:0]
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid := e.Name()
			if _, err := strconv.Atoi(pid); err != nil || pid == self {
				continue
			}
			stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...
			rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
			fields := strings.Fields(rest)
			if len(fields) < 2 || fields[0] == "Z" {
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
			cmd := strings.ReplaceAll(string(cmdline), "\x00", " ")
			if fields[1] == self || strings.Contains(cmd, runtimeDir) {
				left = append(left, pid+": "+cmd)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("kernel processes left behind:\n%s", strings.Join(left, "\n"))
	}
}

// execution is what the official JS client builds from the stream.
type execution struct {
	Results []map[string]any
	Stdout  []string
	Stderr  []string
	Error   *execError
	Count   int
	Types   []string // every line's type, in order
	Events  []map[string]any
}

type execError struct {
	Name, Value, Traceback string
}

// text is the main result's text, like Execution.text.
func (e *execution) text() (string, bool) {
	for _, r := range e.Results {
		if r["is_main_result"] == true {
			s, ok := r["text"].(string)
			return s, ok
		}
	}
	return "", false
}

// stream is an /execute response read line by line, the way the SDK's
// readLines does it; every line must be a JSON object with a type.
type stream struct {
	t    testing.TB
	res  *http.Response
	br   *bufio.Reader
	done bool
}

func (ts *testServer) post(ctx context.Context, path string, body any, header ...string) *http.Response {
	ts.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		ts.t.Fatalf("encode body: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.url+path, bytes.NewReader(b))
	if err != nil {
		ts.t.Fatalf("request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("POST %s: %v", path, err)
	}
	return res
}

func (ts *testServer) open(ctx context.Context, body map[string]any) *stream {
	ts.t.Helper()
	res := ts.post(ctx, "/execute", body, "X-Access-Token", ts.token)
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		ts.t.Fatalf("POST /execute %v: %s: %s", body, res.Status, b)
	}
	return &stream{t: ts.t, res: res, br: bufio.NewReader(res.Body)}
}

// next returns the next line's object, or nil at the end of the body.
func (s *stream) next() map[string]any {
	s.t.Helper()
	if s.done {
		return nil
	}
	line, err := s.br.ReadString('\n')
	if err == io.EOF {
		s.done = true
		if line != "" {
			s.t.Fatalf("last line %q is not terminated by a newline", line)
		}
		return nil
	}
	if err != nil {
		s.t.Fatalf("read stream: %v", err)
	}
	line = strings.TrimSuffix(line, "\n")
	if line == "" {
		s.t.Fatalf("blank line in the stream (JSON.parse would throw)")
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		s.t.Fatalf("line %q is not a JSON object: %v", line, err)
	}
	if _, ok := obj["type"].(string); !ok {
		s.t.Fatalf("line %q has no type", line)
	}
	return obj
}

func (s *stream) close() { s.res.Body.Close() }

// collect reads the stream to its end into an execution, checking that
// end_of_execution is the last line.
func (s *stream) collect() *execution {
	s.t.Helper()
	defer s.close()
	ex := &execution{}
	for {
		obj := s.next()
		if obj == nil {
			break
		}
		typ := obj["type"].(string)
		ex.Types = append(ex.Types, typ)
		ex.Events = append(ex.Events, obj)
		switch typ {
		case "stdout":
			ex.Stdout = append(ex.Stdout, obj["text"].(string))
			if _, ok := obj["timestamp"].(string); !ok {
				s.t.Errorf("stdout line without timestamp: %v", obj)
			}
		case "stderr":
			ex.Stderr = append(ex.Stderr, obj["text"].(string))
			if _, ok := obj["timestamp"].(string); !ok {
				s.t.Errorf("stderr line without timestamp: %v", obj)
			}
		case "result":
			ex.Results = append(ex.Results, obj)
		case "error":
			name, ok1 := obj["name"].(string)
			value, ok2 := obj["value"].(string)
			tb, ok3 := obj["traceback"].(string)
			if !ok1 || !ok2 || !ok3 {
				s.t.Errorf("error line without name, value and traceback strings: %v", obj)
			}
			ex.Error = &execError{name, value, tb}
		case "number_of_executions":
			ex.Count = int(obj["execution_count"].(float64))
		}
	}
	if n := len(ex.Types); n == 0 || ex.Types[n-1] != "end_of_execution" {
		s.t.Fatalf("stream does not end with end_of_execution: %v", ex.Types)
	}
	for _, typ := range ex.Types[:len(ex.Types)-1] {
		if typ == "end_of_execution" {
			s.t.Fatalf("end_of_execution before the end: %v", ex.Types)
		}
	}
	return ex
}

// run executes code in body (code plus context_id/language/env_vars).
func (ts *testServer) run(body map[string]any) *execution {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return ts.open(ctx, body).collect()
}

func (ts *testServer) runCode(code string, kv ...any) *execution {
	ts.t.Helper()
	body := map[string]any{"code": code}
	for i := 0; i+1 < len(kv); i += 2 {
		body[kv[i].(string)] = kv[i+1]
	}
	return ts.run(body)
}

// createContext creates a context and returns its id.
func (ts *testServer) createContext(language, cwd string) contextJSON {
	ts.t.Helper()
	body := map[string]any{}
	if language != "" {
		body["language"] = language
	}
	if cwd != "" {
		body["cwd"] = cwd
	}
	res := ts.post(context.Background(), "/contexts", body)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		ts.t.Fatalf("POST /contexts %v: %s: %s", body, res.Status, b)
	}
	var c contextJSON
	if err := json.Unmarshal(b, &c); err != nil {
		ts.t.Fatalf("decode context %s: %v", b, err)
	}
	return c
}

// do sends a request without body checks and returns status and body.
func (ts *testServer) do(method, path string, body any) (int, string) {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, ts.url+path, rd)
	if err != nil {
		ts.t.Fatalf("request: %v", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func wantStdout(t testing.TB, ex *execution, want string) {
	t.Helper()
	if got := strings.Join(ex.Stdout, ""); got != want {
		t.Fatalf("stdout = %q, want %q (events %v)", got, want, ex.Events)
	}
}

func wantText(t testing.TB, ex *execution, want string) {
	t.Helper()
	got, ok := ex.text()
	if !ok || got != want {
		t.Fatalf("main result text = %q (present %v), want %q (events %v)", got, ok, want, ex.Events)
	}
}

func wantNoError(t testing.TB, ex *execution) {
	t.Helper()
	if ex.Error != nil {
		t.Fatalf("unexpected error %+v (events %v)", *ex.Error, ex.Events)
	}
}

func wantError(t testing.TB, ex *execution, name string) {
	t.Helper()
	if ex.Error == nil || ex.Error.Name != name {
		t.Fatalf("error = %+v, want name %q (events %v)", ex.Error, name, ex.Events)
	}
}

// waitFileCode is Python code that blocks until path exists (at most 60 s)
// and prints what happened.
func waitFileCode(path string) string {
	return fmt.Sprintf("import os, time\nfor _ in range(6000):\n    if os.path.exists(%q): break\n    time.sleep(0.01)\nprint('seen' if os.path.exists(%q) else 'timeout')", path, path)
}

func newReader(res *http.Response) *bufio.Reader { return bufio.NewReader(res.Body) }

// pyString is s as a Python string literal.
func pyString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func readAll(res *http.Response) string {
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// processRunning reports whether a live process has cmdline cmd.
func processRunning(cmd string) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")) == cmd {
			stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] != "Z" {
				return true
			}
		}
	}
	return false
}
