package codeinterp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHealth(t *testing.T) {
	ts := newTestServer(t)
	status, body := ts.do(http.MethodGet, "/health", nil)
	if status != http.StatusOK || strings.TrimSpace(body) != `"OK"` {
		t.Fatalf("GET /health = %d %q, want 200 \"OK\"", status, body)
	}
}

func TestPythonPrint(t *testing.T) {
	ts := newTestServer(t)
	ex := ts.runCode("print(1)")
	wantNoError(t, ex)
	wantStdout(t, ex, "1\n")
	if ex.Count != 1 {
		t.Fatalf("executionCount = %d, want 1", ex.Count)
	}
	if _, ok := ex.text(); ok {
		t.Fatalf("print(1) has a main result: %v", ex.Results)
	}
	// The envd token of the request was used to read the global env.
	if seen := ts.envd.seen(); len(seen) != 1 || seen[0] != ts.token {
		t.Fatalf("envd /envs calls with tokens %q, want one with %q", seen, ts.token)
	}
}

func TestPythonStateAndExecutionCount(t *testing.T) {
	ts := newTestServer(t)
	first := ts.runCode("x = 41")
	wantNoError(t, first)
	if len(first.Results) != 0 {
		t.Fatalf("an assignment has results: %v", first.Results)
	}
	second := ts.runCode("x + 1")
	wantNoError(t, second)
	wantText(t, second, "42")
	if first.Count != 1 || second.Count != 2 {
		t.Fatalf("execution counts %d, %d; want 1, 2", first.Count, second.Count)
	}
	// A string result loses its quotes, as with E2B.
	wantText(t, ts.runCode("'hello'"), "hello")
}

func TestPythonError(t *testing.T) {
	ts := newTestServer(t)
	ex := ts.runCode("1/0")
	wantError(t, ex, "ZeroDivisionError")
	if ex.Error.Value != "division by zero" {
		t.Fatalf("error value = %q", ex.Error.Value)
	}
	if !strings.Contains(ex.Error.Traceback, "ZeroDivisionError") || !strings.Contains(ex.Error.Traceback, "1/0") {
		t.Fatalf("traceback %q does not show the error and the line", ex.Error.Traceback)
	}
	if strings.Contains(ex.Error.Traceback, "\x1b[") {
		t.Fatalf("traceback has ANSI colours: %q", ex.Error.Traceback)
	}
	// The context is still usable, and a NameError is reported too.
	wantError(t, ts.runCode("undefined_name"), "NameError")
}

func TestPythonMatplotlibPNG(t *testing.T) {
	ts := newTestServer(t)
	ex := ts.runCode("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()")
	wantNoError(t, ex)
	var png string
	for _, r := range ex.Results {
		if s, ok := r["png"].(string); ok {
			png = s
			if r["is_main_result"] != false {
				t.Errorf("a figure is a display result, got is_main_result %v", r["is_main_result"])
			}
		}
	}
	if png == "" {
		t.Fatalf("no png result: %v", ex.Types)
	}
	raw, err := base64.StdEncoding.DecodeString(png)
	if err != nil {
		t.Fatalf("png is not base64: %v", err)
	}
	if !bytes.HasPrefix(raw, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("png result does not start with the PNG signature: %q", raw[:min(len(raw), 16)])
	}
}

func TestPythonPandasHTML(t *testing.T) {
	ts := newTestServer(t)
	ex := ts.runCode("import pandas as pd\npd.DataFrame({'name': ['a', 'b'], 'value': [1, 2]})")
	wantNoError(t, ex)
	if len(ex.Results) != 1 || ex.Results[0]["is_main_result"] != true {
		t.Fatalf("results = %v, want one main result", ex.Results)
	}
	html, _ := ex.Results[0]["html"].(string)
	text, _ := ex.Results[0]["text"].(string)
	if !strings.Contains(html, "<table") || !strings.Contains(html, "value") {
		t.Fatalf("html = %q, want a table", html)
	}
	if !strings.Contains(text, "name") || !strings.Contains(text, "value") {
		t.Fatalf("text = %q, want the frame as text", text)
	}
}

// TestStdoutStreams proves that output reaches the client while the code
// runs: the code only goes on once the test has seen its first line.
func TestStdoutStreams(t *testing.T) {
	ts := newTestServer(t)
	gate := filepath.Join(t.TempDir(), "gate")
	code := "print('first', flush=True)\n" + waitFileCode(gate) + "\nprint('last')"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := ts.open(ctx, map[string]any{"code": code})
	defer s.close()
	var stamps []time.Time
	var texts []string
	for {
		obj := s.next()
		if obj == nil {
			t.Fatalf("stream ended early, after %q", texts)
		}
		if obj["type"] == "stdout" {
			ts, err := time.Parse(time.RFC3339Nano, obj["timestamp"].(string))
			if err != nil {
				t.Fatalf("timestamp %v: %v", obj["timestamp"], err)
			}
			stamps = append(stamps, ts)
			texts = append(texts, obj["text"].(string))
			if obj["text"] == "first\n" {
				if err := os.WriteFile(gate, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		if obj["type"] == "end_of_execution" {
			break
		}
	}
	if got := strings.Join(texts, ""); got != "first\nseen\nlast\n" {
		t.Fatalf("stdout = %q, want first, seen, last", got)
	}
	for i := 1; i < len(stamps); i++ {
		if stamps[i].Before(stamps[i-1]) {
			t.Fatalf("timestamps go back: %v", stamps)
		}
	}
}

func TestKeepalive(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.KeepaliveInterval = 50 * time.Millisecond })
	gate := filepath.Join(t.TempDir(), "gate")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := ts.open(ctx, map[string]any{"code": waitFileCode(gate)})
	keepalives := 0
	for {
		obj := s.next()
		if obj == nil {
			break
		}
		if obj["type"] == "keepalive" {
			keepalives++
			if keepalives == 1 {
				if err := os.WriteFile(gate, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	s.close()
	if keepalives == 0 {
		t.Fatal("no keepalive line while the code was silent")
	}
}

func TestContextCwdAndIsolation(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	c := ts.createContext("python", dir)
	if c.Language != "python" || c.Cwd != dir || c.ID == "" {
		t.Fatalf("context = %+v", c)
	}
	ex := ts.runCode("import os\nos.getcwd()", "context_id", c.ID)
	wantText(t, ex, dir)
	wantNoError(t, ts.runCode("only_here = 7", "context_id", c.ID))
	wantText(t, ts.runCode("only_here", "context_id", c.ID), "7")
	// The default context does not see it, and has the default cwd.
	wantError(t, ts.runCode("only_here"), "NameError")
	wantText(t, ts.runCode("import os\nos.getcwd()"), ts.cwd)

	// Both are listed, each once.
	status, body := ts.do(http.MethodGet, "/contexts", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /contexts = %d %s", status, body)
	}
	var list []contextJSON
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	ids := map[string]int{}
	for _, l := range list {
		ids[l.ID]++
	}
	if len(list) != 2 || ids[c.ID] != 1 {
		t.Fatalf("contexts = %+v, want the default and %s", list, c.ID)
	}
}

func TestTwoContextsRunInParallel(t *testing.T) {
	ts := newTestServer(t)
	a := ts.createContext("python", "")
	b := ts.createContext("python", "")
	gate := filepath.Join(t.TempDir(), "gate")
	done := make(chan *execution, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res := ts.post(ctx, "/execute", map[string]any{"code": waitFileCode(gate), "context_id": a.ID})
		s := &stream{t: t, res: res, br: newReader(res)}
		done <- s.collect()
	}()
	// b opens the gate a waits for: this only works when b runs while a does.
	wantNoError(t, ts.runCode("open("+pyString(gate)+", 'w').close()", "context_id", b.ID))
	ex := <-done
	wantStdout(t, ex, "seen\n")
}

func TestRestartClearsState(t *testing.T) {
	ts := newTestServer(t)
	c := ts.createContext("python", "")
	wantNoError(t, ts.runCode("kept = 1", "context_id", c.ID))
	status, body := ts.do(http.MethodPost, "/contexts/"+c.ID+"/restart", nil)
	if status != http.StatusOK {
		t.Fatalf("restart = %d %s", status, body)
	}
	ex := ts.runCode("kept", "context_id", c.ID)
	wantError(t, ex, "NameError")
	if ex.Count != 1 {
		t.Fatalf("execution count after restart = %d, want 1", ex.Count)
	}
	if status, body := ts.do(http.MethodPost, "/contexts/nope/restart", nil); status != http.StatusNotFound || !strings.Contains(body, "Context nope not found") {
		t.Fatalf("restart unknown = %d %q", status, body)
	}
}

func TestRestartDuringExecution(t *testing.T) {
	ts := newTestServer(t)
	c := ts.createContext("python", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := ts.open(ctx, map[string]any{"code": "import time\ntime.sleep(120)", "context_id": c.ID})
	if obj := s.next(); obj == nil || obj["type"] != "number_of_executions" {
		t.Fatalf("first line = %v", obj)
	}
	restarted := make(chan int, 1)
	go func() {
		status, _ := ts.do(http.MethodPost, "/contexts/"+c.ID+"/restart", nil)
		restarted <- status
	}()
	ex := s.collect()
	wantError(t, ex, "ContextRestarting")
	if status := <-restarted; status != http.StatusOK {
		t.Fatalf("restart = %d", status)
	}
	wantText(t, ts.runCode("1 + 1", "context_id", c.ID), "2")
}

func TestKernelCrashRestarts(t *testing.T) {
	ts := newTestServer(t)
	wantNoError(t, ts.runCode("before = 1"))
	wantError(t, ts.runCode("import os\nos._exit(3)"), "ContextRestarting")
	// The next execution gets a new kernel.
	wantError(t, ts.runCode("before"), "NameError")
	wantText(t, ts.runCode("2 * 21"), "42")
}

func TestRemoveContext(t *testing.T) {
	ts := newTestServer(t)
	c := ts.createContext("python", "")
	wantNoError(t, ts.runCode("1", "context_id", c.ID))
	if status, body := ts.do(http.MethodDelete, "/contexts/"+c.ID, nil); status != http.StatusOK {
		t.Fatalf("delete = %d %s", status, body)
	}
	res := ts.post(context.Background(), "/execute", map[string]any{"code": "1", "context_id": c.ID})
	b := readAll(res)
	if res.StatusCode != http.StatusNotFound || b != "Context "+c.ID+" not found" {
		t.Fatalf("execute in a removed context = %d %q", res.StatusCode, b)
	}
	if status, _ := ts.do(http.MethodDelete, "/contexts/"+c.ID, nil); status != http.StatusNotFound {
		t.Fatalf("second delete = %d, want 404", status)
	}
	_, body := ts.do(http.MethodGet, "/contexts", nil)
	if strings.Contains(body, c.ID) {
		t.Fatalf("removed context still listed: %s", body)
	}
}

func TestRemovedDefaultContextIsRecreated(t *testing.T) {
	ts := newTestServer(t)
	wantNoError(t, ts.runCode("gone = 1"))
	_, body := ts.do(http.MethodGet, "/contexts", nil)
	var list []contextJSON
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 {
		t.Fatalf("contexts = %s (%v)", body, err)
	}
	if status, _ := ts.do(http.MethodDelete, "/contexts/"+list[0].ID, nil); status != http.StatusOK {
		t.Fatalf("delete default = %d", status)
	}
	wantError(t, ts.runCode("gone"), "NameError")
}

func TestRequestErrors(t *testing.T) {
	ts := newTestServer(t)
	res := ts.post(context.Background(), "/execute", map[string]any{"code": "1", "context_id": "x", "language": "python"})
	if b := readAll(res); res.StatusCode != http.StatusBadRequest || b != "Only one of context_id or language can be provided" {
		t.Fatalf("both context_id and language = %d %q", res.StatusCode, b)
	}
	res = ts.post(context.Background(), "/execute", map[string]any{"code": "1", "context_id": "missing"})
	if b := readAll(res); res.StatusCode != http.StatusNotFound || b != "Context missing not found" {
		t.Fatalf("unknown context = %d %q", res.StatusCode, b)
	}
	res = ts.post(context.Background(), "/execute", map[string]any{"code": "1", "language": "cobol"})
	if b := readAll(res); res.StatusCode != http.StatusBadRequest || !strings.Contains(b, "cobol") {
		t.Fatalf("unknown language = %d %q", res.StatusCode, b)
	}
	res = ts.post(context.Background(), "/execute", map[string]any{"language": "python"})
	if b := readAll(res); res.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("no code = %d %q", res.StatusCode, b)
	}
	if status, body := ts.do(http.MethodPost, "/contexts", map[string]any{"cwd": "/does/not/exist"}); status != http.StatusBadRequest || !strings.Contains(body, "/does/not/exist") {
		t.Fatalf("context with a missing cwd = %d %q", status, body)
	}
	if status, body := ts.do(http.MethodPost, "/contexts", map[string]any{"language": "r"}); status != http.StatusBadRequest {
		t.Fatalf("context in an unsupported language = %d %q", status, body)
	}
	// Nothing above left a context behind.
	if _, body := ts.do(http.MethodGet, "/contexts", nil); strings.TrimSpace(body) != "[]" {
		t.Fatalf("contexts = %s, want none", body)
	}
}

func TestEnvVars(t *testing.T) {
	ts := newTestServer(t)
	show := "import os\nprint(os.environ.get('GLOBAL_VAR'), os.environ.get('ONLY_NOW'))"
	ex := ts.runCode(show, "env_vars", map[string]string{"ONLY_NOW": "it's \"quoted\"", "GLOBAL_VAR": "overridden"})
	wantNoError(t, ex)
	wantStdout(t, ex, "overridden it's \"quoted\"\n")
	// After the execution: the global value is back, the other one is gone.
	ex = ts.runCode(show)
	wantStdout(t, ex, "global None\n")
	if ex.Count != 2 {
		t.Fatalf("env var setup counted as executions: count %d, want 2", ex.Count)
	}
	// The global env was read once for the kernel.
	if seen := ts.envd.seen(); len(seen) != 1 {
		t.Fatalf("envd /envs called %d times, want once", len(seen))
	}
}

func TestEnvVarsOtherLanguages(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct{ lang, code, want string }{
		{"javascript", "console.log(process.env.GLOBAL_VAR, process.env.ONLY_NOW)", "%s %s\n"},
		{"bash", "echo \"$GLOBAL_VAR $ONLY_NOW\"", "%s %s\n"},
	} {
		ex := ts.runCode(tc.code, "language", tc.lang, "env_vars", map[string]string{"ONLY_NOW": "now 'x'"})
		wantNoError(t, ex)
		wantStdout(t, ex, strings.NewReplacer("%s %s", "global now 'x'").Replace(tc.want))
		ex = ts.runCode(tc.code, "language", tc.lang)
		undefined := "undefined"
		if tc.lang == "bash" {
			undefined = ""
		}
		wantStdout(t, ex, "global "+undefined+"\n")
	}
}

// TestDisconnectInterrupts is what a client timeout does: the client closes
// the connection mid-execution; the kernel must be interrupted and the
// context, state included, must stay usable.
func TestDisconnectInterrupts(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct {
		name, lang, set, spin, get, want string
		running                          string // a process to wait for before going away
	}{
		{"python", "python", "kept = 5", "while True: pass", "kept", "5", ""},
		{"python-sleep", "python", "kept2 = 6", "import time\ntime.sleep(600)", "kept2", "6", ""},
		{"javascript", "javascript", "var kept = 5", "while (true) {}", "kept", "5", ""},
		{"javascript-await", "javascript", "var kept2 = 6", "await new Promise(() => {})", "kept2", "6", ""},
		{"bash", "bash", "kept=5", "while true; do :; done", "echo $kept", "5", ""},
		{"bash-command", "bash", "kept3=7", "sleep 6021", "echo $kept3", "7", "sleep 6021"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantNoError(t, ts.runCode(tc.set, "language", tc.lang))
			ctx, cancel := context.WithCancel(context.Background())
			s := ts.open(ctx, map[string]any{"code": tc.spin, "language": tc.lang})
			if obj := s.next(); obj == nil || obj["type"] != "number_of_executions" {
				t.Fatalf("first line = %v", obj)
			}
			if tc.running != "" {
				deadline := time.Now().Add(30 * time.Second)
				for !processRunning(tc.running) {
					if time.Now().After(deadline) {
						t.Fatalf("%q did not start", tc.running)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			cancel()
			s.close()
			ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel2()
			ex := ts.open(ctx2, map[string]any{"code": tc.get, "language": tc.lang}).collect()
			wantNoError(t, ex)
			if tc.lang == "bash" {
				wantStdout(t, ex, tc.want+"\n")
			} else {
				wantText(t, ex, tc.want)
			}
			if tc.running != "" && processRunning(tc.running) {
				t.Fatalf("%q still runs after the interrupt", tc.running)
			}
		})
	}
}

func TestJavaScript(t *testing.T) {
	ts := newTestServer(t)
	c := ts.createContext("js", "")
	if c.Language != "javascript" {
		t.Fatalf("language js became %q, want javascript", c.Language)
	}
	run := func(code string) *execution { return ts.runCode(code, "context_id", c.ID) }
	first := run("const x = 1")
	wantNoError(t, first)
	if len(first.Results) != 0 {
		t.Fatalf("a declaration has results: %v", first.Results)
	}
	second := run("x + 1")
	wantText(t, second, "2")
	if first.Count != 1 || second.Count != 2 {
		t.Fatalf("execution counts %d, %d", first.Count, second.Count)
	}
	ex := run("console.log('out'); console.error('err'); 'str'")
	wantStdout(t, ex, "out\n")
	if strings.Join(ex.Stderr, "") != "err\n" {
		t.Fatalf("stderr = %q", ex.Stderr)
	}
	wantText(t, ex, "str")
	if ex := run("function twice(n) { return 2 * n }\nclass P { constructor(v) { this.v = v } }"); len(ex.Results) != 0 || ex.Error != nil {
		t.Fatalf("declarations: results %v, error %v", ex.Results, ex.Error)
	}
	wantText(t, run("twice(new P(21).v)"), "42")
	wantText(t, run("const later = await Promise.resolve(40); later + 2"), "42")
	wantText(t, run("later"), "40")
	wantText(t, run("({a: 1, b: [1, 2]})"), "{ a: 1, b: [ 1, 2 ] }")
	wantText(t, run("require('node:path').join('a', 'b')"), "a/b")
	ex = run("null.boom")
	wantError(t, ex, "TypeError")
	if !strings.Contains(ex.Error.Traceback, "TypeError") || strings.Contains(ex.Error.Traceback, "runner.js") {
		t.Fatalf("traceback = %q", ex.Error.Traceback)
	}
	wantError(t, run("foo("), "SyntaxError")
	wantError(t, run("await Promise.reject(new RangeError('no'))"), "RangeError")
	wantText(t, run("process.cwd()"), ts.cwd)
}

func TestTypeScript(t *testing.T) {
	ts := newTestServer(t)
	ex := ts.runCode("const n: number = 41\ninterface I { a: string }\nn + 1", "language", "ts")
	wantNoError(t, ex)
	wantText(t, ex, "42")
	wantText(t, ts.runCode("n", "language", "typescript"), "41")
}

func TestBash(t *testing.T) {
	ts := newTestServer(t)
	c := ts.createContext("bash", "")
	run := func(code string) *execution { return ts.runCode(code, "context_id", c.ID) }
	ex := run("greeting=hello\necho \"$greeting world\"\necho oops >&2")
	wantNoError(t, ex)
	wantStdout(t, ex, "hello world\n")
	if strings.Join(ex.Stderr, "") != "oops\n" {
		t.Fatalf("stderr = %q", ex.Stderr)
	}
	ex = run("echo $greeting; pwd")
	wantStdout(t, ex, "hello\n"+ts.cwd+"\n")
	if ex.Count != 2 {
		t.Fatalf("count = %d", ex.Count)
	}
	ex = run("cd /; false")
	if ex.Error == nil || ex.Error.Name != "" || ex.Error.Value != "1" {
		t.Fatalf("error = %+v, want name \"\" value \"1\"", ex.Error)
	}
	wantStdout(t, run("pwd; cat <<'EOF'\nit's $here\nEOF"), "/\nit's $here\n")
	// Reading stdin does not eat the commands that follow.
	wantNoError(t, run("read -r line || echo no input"))
	wantStdout(t, run("echo still here"), "still here\n")
}

// TestProcessesAreKilled checks that processes started by code die with
// their context.
func TestProcessesAreKilled(t *testing.T) {
	ts := newTestServer(t)
	bashCtx := ts.createContext("bash", "")
	pyCtx := ts.createContext("python", "")
	wantNoError(t, ts.runCode("sleep 7123 &", "context_id", bashCtx.ID))
	wantNoError(t, ts.runCode("import subprocess\np = subprocess.Popen(['sleep', '7124'])", "context_id", pyCtx.ID))
	if !processRunning("sleep 7123") || !processRunning("sleep 7124") {
		t.Fatal("the background processes did not start")
	}
	for _, id := range []string{bashCtx.ID, pyCtx.ID} {
		if status, _ := ts.do(http.MethodDelete, "/contexts/"+id, nil); status != http.StatusOK {
			t.Fatalf("delete = %d", status)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for processRunning("sleep 7123") || processRunning("sleep 7124") {
		if time.Now().After(deadline) {
			t.Fatal("processes started by the code outlived their context")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReady(t *testing.T) {
	// Without default contexts to start, ready at once.
	ts := newTestServer(t)
	if status, body := ts.do(http.MethodGet, "/ready", nil); status != http.StatusOK || strings.TrimSpace(body) != `"OK"` {
		t.Fatalf("GET /ready without start languages = %d %q, want 200 \"OK\"", status, body)
	}

	// With python started in the background: 200 only once its kernel is up,
	// which the default context then shows (it is listed, and runs code).
	ts = newTestServer(t, func(c *Config) { c.StartLanguages = []string{"python"} })
	ts.srv.Start()
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, body := ts.do(http.MethodGet, "/ready", nil)
		if status == http.StatusOK {
			break
		}
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
			t.Fatalf("GET /ready while starting = %d %q, want 503 starting", status, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /ready still %d %q after 60 s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.srv.mu.Lock()
	c := ts.srv.defaults[langPython]
	var k kernel
	if c != nil {
		c.mu.Lock()
		k = c.k
		c.mu.Unlock()
	}
	ts.srv.mu.Unlock()
	if k == nil {
		t.Fatal("GET /ready answered 200 before the default python context had a kernel")
	}
	ex := ts.runCode("1")
	wantNoError(t, ex)
	if ex.Count != 1 {
		t.Fatalf("first execution after ready has count %d, want 1 (the readiness check must not execute code)", ex.Count)
	}
}

func TestReadyReportsStartFailure(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.StartLanguages = []string{"python"}
		c.Python = filepath.Join(t.TempDir(), "no-python")
	})
	ts.srv.Start()
	ts.srv.starts.Wait()
	status, body := ts.do(http.MethodGet, "/ready", nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "the default python context failed to start") || !strings.Contains(body, "no-python") {
		t.Fatalf("GET /ready after a failed start = %d %q, want 503 naming the failure", status, body)
	}
	// /health still answers: the server is up, only its kernel is not.
	if status, _ := ts.do(http.MethodGet, "/health", nil); status != http.StatusOK {
		t.Fatalf("GET /health = %d, want 200", status)
	}
}
