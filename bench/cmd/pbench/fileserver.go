package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func init() {
	subcommands["fileserver"] = subcommand{"plain Go file server on loopback (the files baseline): POST multipart /files?path=, GET /files?path=; runs until stdin closes", runFileServer}
}

// fileServer stores uploads under dir, as envd's /files does in a sandbox:
// the first multipart part streamed to the named file, downloads served
// with http.ServeContent.
type fileServer struct{ dir string }

func (s fileServer) path(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" || strings.Contains(p, "..") {
		return "", errors.New("bad path")
	}
	return filepath.Join(s.dir, filepath.Clean("/"+p)), nil
}

func (s fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, err := s.path(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet:
		f, err := os.Open(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", st.ModTime(), f)
	case http.MethodPost:
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		part, err := mr.NextPart()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		f, err := os.Create(p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, err = io.Copy(f, part)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `[{"name":%q,"type":"file","path":%q}]`, filepath.Base(p), p)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func runFileServer(args []string) (*result, error) {
	fs := flag.NewFlagSet("fileserver", flag.ContinueOnError)
	dir := fs.String("dir", "", "where uploads go (same filesystem as Paddock's data dir)")
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *dir == "" {
		return nil, errors.New("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: fileServer{dir: *dir}, ReadHeaderTimeout: 10 * time.Second}
	if err := serveUntilStdinCloses(srv, *listen); err != nil {
		return nil, err
	}
	return nil, os.RemoveAll(*dir)
}

// serveUntilStdinCloses serves srv on a new listener at addr: it prints
// {"addr": ...} on stdout for the driver, which stops the server by
// closing stdin.
func serveUntilStdinCloses(srv *http.Server, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	if err := json.NewEncoder(os.Stdout).Encode(map[string]string{"addr": l.Addr().String()}); err != nil {
		_ = srv.Close()
		return err
	}
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
		return srv.Close()
	case err := <-errc:
		return err
	}
}
