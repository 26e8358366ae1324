package codeinterp

import (
	"encoding/json"
	"strings"
	"time"
)

// Event types of the /execute stream.
const (
	typeStdout     = "stdout"
	typeStderr     = "stderr"
	typeResult     = "result"
	typeError      = "error"
	typeCount      = "number_of_executions"
	typeEnd        = "end_of_execution"
	typeKeepalive  = "keepalive"
	timestampStyle = "2006-01-02T15:04:05.000000Z07:00"
)

// event is one line of the /execute stream. Only the fields of its type are
// set; the rest are left out of the JSON.
type event struct {
	Type string `json:"type"`

	// stdout, stderr
	Text      *string `json:"text,omitempty"`
	Timestamp string  `json:"timestamp,omitempty"`

	// number_of_executions
	ExecutionCount *int `json:"execution_count,omitempty"`

	// error
	Name      *string `json:"name,omitempty"`
	Value     *string `json:"value,omitempty"`
	Traceback *string `json:"traceback,omitempty"`

	// result (text above is shared)
	HTML         string                     `json:"html,omitempty"`
	Markdown     string                     `json:"markdown,omitempty"`
	SVG          string                     `json:"svg,omitempty"`
	PNG          string                     `json:"png,omitempty"`
	JPEG         string                     `json:"jpeg,omitempty"`
	PDF          string                     `json:"pdf,omitempty"`
	LaTeX        string                     `json:"latex,omitempty"`
	JSON         json.RawMessage            `json:"json,omitempty"`
	JavaScript   string                     `json:"javascript,omitempty"`
	Data         json.RawMessage            `json:"data,omitempty"`
	Chart        json.RawMessage            `json:"chart,omitempty"`
	Extra        map[string]json.RawMessage `json:"extra,omitempty"`
	IsMainResult *bool                      `json:"is_main_result,omitempty"`
}

func streamEvent(typ, text, timestamp string) event {
	if timestamp == "" {
		timestamp = now()
	}
	return event{Type: typ, Text: &text, Timestamp: timestamp}
}

func countEvent(n int) event { return event{Type: typeCount, ExecutionCount: &n} }

func errorEvent(name, value, traceback string) event {
	return event{Type: typeError, Name: &name, Value: &value, Traceback: &traceback}
}

// now is the timestamp given to output that has none of its own (every
// kernel but the Jupyter one).
func now() string { return time.Now().UTC().Format(timestampStyle) }

// resultEvent maps a MIME bundle (Jupyter's display data) to a result event.
// Values of string MIME types that are not JSON strings are skipped rather
// than failing the whole result.
func resultEvent(bundle map[string]json.RawMessage, main bool) event {
	ev := event{Type: typeResult, IsMainResult: &main}
	str := func(raw json.RawMessage) (string, bool) {
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			return s, true
		}
		// Jupyter allows multi-line strings as arrays of lines.
		var lines []string
		if err := json.Unmarshal(raw, &lines); err == nil {
			return strings.Join(lines, ""), true
		}
		return "", false
	}
	for mime, raw := range bundle {
		var dst *string
		switch mime {
		case "text/plain":
			if s, ok := str(raw); ok {
				s = stripQuotes(s)
				ev.Text = &s
			}
			continue
		case "application/json":
			ev.JSON = raw
			continue
		case "e2b/data":
			ev.Data = raw
			continue
		case "e2b/chart":
			ev.Chart = raw
			continue
		case "text/html":
			dst = &ev.HTML
		case "text/markdown":
			dst = &ev.Markdown
		case "image/svg+xml":
			dst = &ev.SVG
		case "image/png":
			dst = &ev.PNG
		case "image/jpeg":
			dst = &ev.JPEG
		case "application/pdf":
			dst = &ev.PDF
		case "text/latex":
			dst = &ev.LaTeX
		case "application/javascript":
			dst = &ev.JavaScript
		default:
			if ev.Extra == nil {
				ev.Extra = map[string]json.RawMessage{}
			}
			ev.Extra[mime] = raw
			continue
		}
		if s, ok := str(raw); ok {
			*dst = s
		}
	}
	return ev
}

// textResult is the main result of a kernel that only has a text form.
func textResult(text string) event {
	raw, _ := json.Marshal(text)
	return resultEvent(map[string]json.RawMessage{"text/plain": raw}, true)
}

// stripQuotes removes one pair of matching outer quotes, as E2B's server does
// with the text/plain form of a result ('abc' -> abc).
func stripQuotes(s string) string {
	if len(s) >= 2 && (s[0] == '\'' && s[len(s)-1] == '\'' || s[0] == '"' && s[len(s)-1] == '"') {
		return s[1 : len(s)-1]
	}
	return s
}
