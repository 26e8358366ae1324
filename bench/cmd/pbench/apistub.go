package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func init() {
	subcommands["apistub"] = subcommand{"static loopback stand-in for Paddock (the client's floor): POST /v2/sandboxes and /sandboxes answer the --body-file JSON at once, envd's process.Start ends at once; runs until stdin closes", runAPIStub}
}

// apiStub answers what the E2B SDK asks when it creates a sandbox and runs
// a command, without doing either: whatever Sandbox.create() and
// commands.run() take against it is the client's own cost (Node, the SDK,
// loopback HTTP), the floor under any server.
type apiStub struct {
	sandbox []byte // the create response (a real one, so the SDK parses the same)
}

// startFrames is process.Start's whole response in the Connect protocol's
// JSON streaming form: a start event, an end event (exit 0), end of stream.
var startFrames = func() []byte {
	var b []byte
	frame := func(flags byte, msg string) {
		b = append(b, flags)
		b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
		b = append(b, msg...)
	}
	frame(0, `{"event":{"start":{"pid":1}}}`)
	frame(0, `{"event":{"end":{"exited":true,"status":"exit status 0"}}}`)
	frame(2, `{}`) // end of stream, no error
	return b
}()

func (s apiStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	switch {
	case r.Method == http.MethodPost && (r.URL.Path == "/v2/sandboxes" || r.URL.Path == "/sandboxes"):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(s.sandbox)
	case r.Method == http.MethodPost && r.URL.Path == "/process.Process/Start":
		w.Header().Set("Content-Type", "application/connect+json")
		_, _ = w.Write(startFrames)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/sandboxes/"):
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "the stub does not answer "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

func runAPIStub(args []string) (*result, error) {
	fs := flag.NewFlagSet("apistub", flag.ContinueOnError)
	bodyFile := fs.String("body-file", "", "the create response to send (JSON of a sandbox, as Paddock returned it)")
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *bodyFile == "" {
		return nil, errors.New("--body-file is required")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: apiStub{sandbox: body}, ReadHeaderTimeout: 10 * time.Second}
	return nil, serveUntilStdinCloses(srv, *listen)
}
