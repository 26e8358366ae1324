package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/paddockhq/paddock/api/envd/process"
	"github.com/paddockhq/paddock/api/envd/process/processconnect"
)

// The stand-in must answer as Paddock does, or the client's floor would
// measure an error path: a Connect client (JSON, as the JS SDK speaks)
// reads a start and an exit-0 end from its process.Start.
func TestAPIStubProcessStart(t *testing.T) {
	srv := httptest.NewServer(apiStub{sandbox: []byte(`{"sandboxID":"i1"}`)})
	defer srv.Close()
	c := processconnect.NewProcessClient(srv.Client(), srv.URL, connect.WithProtoJSON())
	st, err := c.Start(context.Background(), connect.NewRequest(&process.StartRequest{
		Process: &process.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", "true"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	var started, ended bool
	for st.Receive() {
		ev := st.Msg().GetEvent()
		switch {
		case ev.GetStart() != nil:
			started = true
		case ev.GetEnd() != nil:
			if e := ev.GetEnd(); e.GetExitCode() != 0 || !e.GetExited() {
				t.Errorf("end = %v, want exit 0", e)
			}
			ended = true
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if !started || !ended {
		t.Fatalf("started %v, ended %v: want both", started, ended)
	}
}

func TestAPIStubCreateAndKill(t *testing.T) {
	body := `{"sandboxID":"i1","envdAccessToken":"t"}` + "\n"
	srv := httptest.NewServer(apiStub{sandbox: []byte(body)})
	defer srv.Close()
	for _, p := range []string{"/v2/sandboxes", "/sandboxes"} {
		res, err := http.Post(srv.URL+p, "application/json", strings.NewReader(`{"templateID":"base"}`))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated || string(got) != body {
			t.Errorf("POST %s = %d %q, want 201 %q", p, res.StatusCode, got, body)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/sandboxes/i1", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE = %d, want 204", res.StatusCode)
	}
	res, err = http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /health = %d, want 404 (the stub answers only what the floor measures)", res.StatusCode)
	}
}
