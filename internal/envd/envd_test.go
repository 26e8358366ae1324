package envd

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, url, contentType, body string) (int, string) {
	t.Helper()
	res, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// envd answers /health without building its Connect services; /init has
// them built in the background; without /init, the first call builds them
// itself. Either way the calls work.
func TestRPCServicesBuiltOnNeed(t *testing.T) {
	for _, withInit := range []bool{true, false} {
		d := New(Config{})
		srv := httptest.NewServer(d.Handler())
		res, err := http.Get(srv.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent || d.rpc.built.Load() {
			t.Fatalf("/health: %d, services built: %v; want 204 without them", res.StatusCode, d.rpc.built.Load())
		}
		if withInit {
			if code, body := post(t, srv.URL+"/init", "application/json", `{"envVars":{"A":"b"}}`); code != http.StatusNoContent {
				t.Fatalf("/init: %d %s", code, body)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !d.rpc.built.Load() {
				if time.Now().After(deadline) {
					t.Fatal("services not built 5 s after /init")
				}
				time.Sleep(time.Millisecond)
			}
		}
		code, body := post(t, srv.URL+"/process.Process/List", "application/json", "{}")
		if code != http.StatusOK || !strings.HasPrefix(body, "{") {
			t.Fatalf("process.List (init %v): %d %s", withInit, code, body)
		}
		code, body = post(t, srv.URL+"/filesystem.Filesystem/Stat", "application/json", `{"path":"/"}`)
		if code != http.StatusOK || !strings.Contains(body, `"type":"FILE_TYPE_DIRECTORY"`) {
			t.Fatalf("filesystem.Stat / (init %v): %d %s", withInit, code, body)
		}
		srv.Close()
		d.processes.Close()
		d.files.Close()
	}
}
