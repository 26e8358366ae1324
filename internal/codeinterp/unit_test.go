package codeinterp

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestMarkerScanner(t *testing.T) {
	prefix := []byte("\x02tok:")
	for _, tc := range []struct {
		name    string
		chunks  []string
		text    string
		markers []string
	}{
		{"plain", []string{"hello\n"}, "hello\n", nil},
		{"marker alone", []string{"\x02tok:1:end\x03"}, "", []string{"1:end"}},
		{"text around", []string{"a\x02tok:1:start\x03b\x02tok:1:end:0\x03c"}, "abc", []string{"1:start", "1:end:0"}},
		{"marker split everywhere", []string{"out\x02", "to", "k:7:e", "nd\x03", "after"}, "outafter", []string{"7:end"}},
		{"prefix-like text", []string{"\x02to", "x\n"}, "\x02tox\n", nil},
		{"other token", []string{"\x02bad:1:end\x03"}, "\x02bad:1:end\x03", nil},
		{"runaway marker is text", []string{"\x02tok:" + strings.Repeat("x", maxMarker+1), "z"}, "\x02tok:" + strings.Repeat("x", maxMarker+1) + "z", nil},
		{"rune split across reads", []string{"caf\xc3", "\xa9 ok"}, "café ok", nil},
		{"unterminated at EOF", []string{"x\x02tok:1:e"}, "x\x02tok:1:e", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := markerScanner{prefix: prefix}
			var text strings.Builder
			var pieces []string
			var markers []string
			onText := func(b []byte) {
				if len(b) > 0 {
					pieces = append(pieces, string(b))
				}
				text.Write(b)
			}
			for _, c := range tc.chunks {
				sc.feed([]byte(c), onText, func(m string) { markers = append(markers, m) })
			}
			sc.flush(onText)
			if text.String() != tc.text {
				t.Errorf("text = %q, want %q", text.String(), tc.text)
			}
			if !reflect.DeepEqual(markers, tc.markers) {
				t.Errorf("markers = %q, want %q", markers, tc.markers)
			}
			for _, p := range pieces {
				if tc.name == "rune split across reads" && !strings.Contains(p, "é") && strings.ContainsAny(p, "\xc3\xa9") {
					t.Errorf("a piece holds half a character: %q", p)
				}
			}
		})
	}
}

func TestSignerRoundTrip(t *testing.T) {
	s := signer{key: []byte("secret")}
	msgID, frames, err := s.encode("session-1", "execute_request", map[string]any{"code": "1"})
	if err != nil {
		t.Fatal(err)
	}
	// What a kernel sends back: routing id, then the signed frames, with our
	// request as parent.
	header := []byte(`{"msg_id":"m2","session":"k","username":"k","date":"2026-01-01T00:00:00.000000Z","msg_type":"status","version":"5.3"}`)
	parent := []byte(`{"msg_id":"` + msgID + `"}`)
	meta, content := []byte(`{}`), []byte(`{"execution_state":"busy"}`)
	reply := [][]byte{[]byte("routing"), []byte(jupyterDelimiter), s.sign(header, parent, meta, content), header, parent, meta, content}
	m, err := s.decode(reply)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if m.ParentID != msgID || m.Header.MsgType != "status" || string(m.Content) != string(content) {
		t.Fatalf("decoded %+v", m)
	}
	// Our own request verifies with the same key.
	if _, err := s.decode(frames); err != nil {
		t.Fatalf("decode own request: %v", err)
	}
	var h jheader
	if err := json.Unmarshal(frames[2], &h); err != nil || h.Version != "5.3" || h.MsgType != "execute_request" || h.Session != "session-1" {
		t.Fatalf("request header %s (%v)", frames[2], err)
	}

	tampered := append([][]byte(nil), reply...)
	tampered[6] = []byte(`{"execution_state":"idle"}`)
	if _, err := s.decode(tampered); !errors.Is(err, errBadSignature) {
		t.Fatalf("tampered content: err = %v, want bad signature", err)
	}
	if _, err := (signer{key: []byte("other")}).decode(reply); !errors.Is(err, errBadSignature) {
		t.Fatalf("other key: err = %v, want bad signature", err)
	}
	if _, err := s.decode([][]byte{[]byte(jupyterDelimiter), []byte("sig")}); err == nil {
		t.Fatal("a short message decoded")
	}
}

func TestResultEvent(t *testing.T) {
	raw := func(v any) json.RawMessage {
		b, _ := json.Marshal(v)
		return b
	}
	ev := resultEvent(map[string]json.RawMessage{
		"text/plain":                  raw("'quoted'"),
		"text/html":                   raw("<b>x</b>"),
		"text/markdown":               raw([]string{"# a", "\nb"}),
		"image/svg+xml":               raw("<svg/>"),
		"image/png":                   raw("iVBOR"),
		"image/jpeg":                  raw("/9j/"),
		"application/pdf":             raw("JVBER"),
		"text/latex":                  raw(`$x$`),
		"application/json":            raw(map[string]int{"a": 1}),
		"application/javascript":      raw("alert(1)"),
		"e2b/data":                    raw(map[string][]int{"col": {1, 2}}),
		"e2b/chart":                   raw(map[string]string{"type": "line"}),
		"application/vnd.custom+json": raw(map[string]bool{"x": true}),
	}, true)
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"type":           "result",
		"is_main_result": true,
		"text":           "quoted",
		"html":           "<b>x</b>",
		"markdown":       "# a\nb",
		"svg":            "<svg/>",
		"png":            "iVBOR",
		"jpeg":           "/9j/",
		"pdf":            "JVBER",
		"latex":          "$x$",
		"json":           map[string]any{"a": float64(1)},
		"javascript":     "alert(1)",
		"data":           map[string]any{"col": []any{float64(1), float64(2)}},
		"chart":          map[string]any{"type": "line"},
		"extra":          map[string]any{"application/vnd.custom+json": map[string]any{"x": true}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("result =\n%v\nwant\n%v", got, want)
	}

	// A display result says it is not the main one, and has only what it has.
	b, _ = json.Marshal(resultEvent(map[string]json.RawMessage{"text/plain": raw(`"dq"`)}, false))
	if string(b) != `{"type":"result","text":"dq","is_main_result":false}` {
		t.Fatalf("display result = %s", b)
	}
	// An empty text stays (E2B keeps it), other events leave out what they lack.
	b, _ = json.Marshal(textResult(""))
	if string(b) != `{"type":"result","text":"","is_main_result":true}` {
		t.Fatalf("empty text result = %s", b)
	}
	b, _ = json.Marshal(errorEvent("", "1", ""))
	if string(b) != `{"type":"error","name":"","value":"1","traceback":""}` {
		t.Fatalf("error event = %s", b)
	}
	b, _ = json.Marshal(countEvent(3))
	if string(b) != `{"type":"number_of_executions","execution_count":3}` {
		t.Fatalf("count event = %s", b)
	}
	b, _ = json.Marshal(streamEvent(typeStdout, "", "2026-01-01T00:00:00Z"))
	if string(b) != `{"type":"stdout","text":"","timestamp":"2026-01-01T00:00:00Z"}` {
		t.Fatalf("stdout event = %s", b)
	}
	b, _ = json.Marshal(event{Type: typeEnd})
	if string(b) != `{"type":"end_of_execution"}` {
		t.Fatalf("end event = %s", b)
	}
}

func TestNormalizeLanguage(t *testing.T) {
	for in, want := range map[string]string{
		"": "python", "Python": "python", " python ": "python",
		"js": "javascript", "JavaScript": "javascript",
		"ts": "typescript", "TypeScript ": "typescript",
		"bash": "bash",
	} {
		got, err := normalizeLanguage(in)
		if err != nil || got != want {
			t.Errorf("normalizeLanguage(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"r", "java", "cobol"} {
		if _, err := normalizeLanguage(in); err == nil {
			t.Errorf("normalizeLanguage(%q) accepted", in)
		}
	}
}

func TestEnvCode(t *testing.T) {
	b := &bashKernel{}
	if got := b.setEnvCode(map[string]string{"B": "it's", "A": "x y", "bad-name": "no"}); got != "export A='x y'\nexport B='it'\\''s'\n" {
		t.Fatalf("bash set = %q", got)
	}
	if got := b.unsetEnvCode([]string{"A", "bad name"}); got != "unset -v -- A" {
		t.Fatalf("bash unset = %q", got)
	}
	j := &jupyterKernel{}
	if got := j.setEnvCode(map[string]string{"K": "a'b\"c\n"}); got != `__import__('os').environ.update({"K":"a'b\"c\n"})` {
		t.Fatalf("python set = %q", got)
	}
	n := &nodeKernel{}
	if got := n.unsetEnvCode([]string{"K"}); got != `for (const k of ["K"]) delete process.env[k]` {
		t.Fatalf("node unset = %q", got)
	}
}
