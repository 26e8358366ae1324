package process

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// These tests speak the Connect protocol by hand, byte for byte, as the JS
// SDK (connect-es, JSON codec) does, and check the exact wire shapes it needs.

type frame struct {
	flags byte
	data  []byte
}

func envelope(flags byte, payload string) []byte {
	b := make([]byte, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:5], uint32(len(payload)))
	copy(b[5:], payload)
	return b
}

// readFrames splits a Connect streaming body into envelopes; it fails on a
// truncated envelope or on data after the end-stream frame.
func readFrames(t *testing.T, r io.Reader) []frame {
	t.Helper()
	var out []frame
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return out
			}
			t.Fatalf("read envelope header: %v", err)
		}
		if len(out) > 0 && out[len(out)-1].flags&0x02 != 0 {
			t.Fatal("envelope after the end-stream frame")
		}
		data := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatalf("read envelope body: %v", err)
		}
		out = append(out, frame{hdr[0], data})
	}
}

func postStream(t *testing.T, url, procedure, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+procedure, bytes.NewReader(envelope(0, body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Connect-Protocol-Version", "1")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: HTTP %d %s, want 200", procedure, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/connect+json" {
		t.Fatalf("%s: Content-Type %q, want application/connect+json", procedure, ct)
	}
	return resp
}

// jsonEq compares a JSON document with a literal, exactly (keys, types).
func jsonEq(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: bad JSON %q: %v", what, got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad expectation %q: %v", what, want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func TestWireStartStream(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		script, end string
	}{
		{"printf hello; exit 3", `{"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3","error":"exit status 3"}}}`},
		// A clean exit omits exitCode (proto3 JSON default), as the SDK expects.
		{"printf hello", `{"event":{"end":{"exited":true,"status":"exit status 0"}}}`},
	} {
		body := fmt.Sprintf(`{"process":{"cmd":"/bin/sh","args":["-c",%q]},"stdin":false}`, tc.script)
		resp := postStream(t, f.plain.URL, "/process.Process/Start", body, map[string]string{"Connect-Timeout-Ms": "60000"})
		frames := readFrames(t, resp.Body)
		if len(frames) != 4 {
			t.Fatalf("%d frames, want start, data, end, end-stream: %q", len(frames), frames)
		}
		for i, fr := range frames[:3] {
			if fr.flags != 0 {
				t.Fatalf("frame %d flags %#x, want 0", i, fr.flags)
			}
		}
		var start struct {
			Event struct {
				Start struct {
					Pid uint32 `json:"pid"`
				} `json:"start"`
			} `json:"event"`
		}
		if err := json.Unmarshal(frames[0].data, &start); err != nil || start.Event.Start.Pid == 0 {
			t.Fatalf("start frame %s (%v)", frames[0].data, err)
		}
		jsonEq(t, "start frame", frames[0].data, fmt.Sprintf(`{"event":{"start":{"pid":%d}}}`, start.Event.Start.Pid))
		jsonEq(t, "data frame", frames[1].data, `{"event":{"data":{"stdout":"aGVsbG8="}}}`) // base64("hello")
		jsonEq(t, "end frame", frames[2].data, tc.end)
		if frames[3].flags != 0x02 {
			t.Fatalf("last frame flags %#x, want 0x02", frames[3].flags)
		}
		jsonEq(t, "end-stream frame", frames[3].data, `{}`)
	}
}

func TestWireKeepaliveAndPTYFrames(t *testing.T) {
	f := newFixture(t)
	body := `{"process":{"cmd":"/bin/sh","args":["-c","sleep 0.5; printf x"]},"pty":{"size":{"cols":80,"rows":24}}}`
	resp := postStream(t, f.plain.URL, "/process.Process/Start", body, map[string]string{"Keepalive-Ping-Interval": "0.05"})
	frames := readFrames(t, resp.Body)
	var keepalives, ptyFrames int
	for _, fr := range frames[1 : len(frames)-2] {
		switch s := string(fr.data); {
		case s == `{"event":{"keepalive":{}}}`:
			keepalives++
		case strings.HasPrefix(s, `{"event":{"data":{"pty":`):
			jsonEq(t, "pty frame", fr.data, `{"event":{"data":{"pty":"eA=="}}}`) // base64("x")
			ptyFrames++
		default:
			t.Fatalf("unexpected frame %s", fr.data)
		}
	}
	if keepalives == 0 || ptyFrames != 1 {
		t.Fatalf("%d keepalive and %d pty frames, want >0 and 1", keepalives, ptyFrames)
	}
	jsonEq(t, "end frame", frames[len(frames)-2].data, `{"event":{"end":{"exited":true,"status":"exit status 0"}}}`)
	if last := frames[len(frames)-1]; last.flags != 0x02 || string(last.data) != "{}" {
		t.Fatalf("end-stream frame %#x %s", last.flags, last.data)
	}
}

// Stream errors travel as HTTP 200 with an error in the end-stream frame.
func TestWireStreamErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		procedure, body, code, message string
	}{
		{"/process.Process/Connect", `{"process":{"pid":999999999}}`, "not_found", "process with pid 999999999 not found"},
		{"/process.Process/Connect", `{"process":{"tag":"nope"}}`, "not_found", "process with tag 'nope' not found"},
		{"/process.Process/Start", `{"process":{"cmd":"/bin/true","cwd":"/no/such/dir"}}`, "invalid_argument", "cwd '/no/such/dir' does not exist"},
		{"/process.Process/Start", `{}`, "invalid_argument", "process config is required"},
	} {
		resp := postStream(t, f.plain.URL, tc.procedure, tc.body, nil)
		frames := readFrames(t, resp.Body)
		if len(frames) != 1 || frames[0].flags != 0x02 {
			t.Fatalf("%s %s: frames %q, want one end-stream frame", tc.procedure, tc.body, frames)
		}
		want, _ := json.Marshal(map[string]any{"error": map[string]string{"code": tc.code, "message": tc.message}})
		jsonEq(t, tc.procedure+" error frame", frames[0].data, string(want))
	}
}

// Unary RPCs answer application/json, errors with their Connect status.
func TestWireUnary(t *testing.T) {
	f := newFixture(t)
	post := func(procedure, body string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodPost, f.plain.URL+procedure, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connect-Protocol-Version", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := post("/process.Process/List", `{}`)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("List: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	jsonEq(t, "empty List", b, `{}`)

	resp, b = post("/process.Process/SendSignal", `{"process":{"pid":999999999},"signal":"SIGNAL_SIGKILL"}`)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("SendSignal unknown pid: HTTP %d %s, want 404", resp.StatusCode, b)
	}
	jsonEq(t, "not_found body", b, `{"code":"not_found","message":"process with pid 999999999 not found"}`)

	resp, b = post("/process.Process/SendSignal", `{"process":{"pid":1},"signal":"SIGNAL_UNSPECIFIED"}`)
	if resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("SendSignal unspecified: HTTP %d %s, want 501", resp.StatusCode, b)
	}
	jsonEq(t, "unimplemented body", b, `{"code":"unimplemented","message":"invalid signal: SIGNAL_UNSPECIFIED"}`)
}
