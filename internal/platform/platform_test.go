package platform

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"testing"
)

func TestParseMetadataFilter(t *testing.T) {
	// What e2b 2.51 sends for {user: 'a b', k: 'v&w'}: each key and value
	// encodeURIComponent'ed, joined as a query string, encoded once more as
	// the value of ?metadata=, which the HTTP layer decodes once.
	q, err := url.ParseQuery("metadata=user%3Da%252520b%26k%3Dv%252526w")
	if err != nil {
		t.Fatal(err)
	}
	raw := q.Get("metadata")
	got, err := parseMetadataFilter(&raw)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"user": "a b", "k": "v&w"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	bad := "novalue"
	if _, err := parseMetadataFilter(&bad); err == nil {
		t.Fatal("pair without '=' accepted")
	}
	if m, err := parseMetadataFilter(nil); err != nil || m != nil {
		t.Fatalf("nil filter: %v %v", m, err)
	}
}

func TestRejectBadQuery(t *testing.T) {
	reached := 0
	h := rejectBadQuery(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		w.WriteHeader(http.StatusOK)
	}))
	for _, q := range []string{"", "metadata=a%3Db", "state=running,paused&limit=1"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/sandboxes?"+q, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("query %q: status %d, want 200", q, rec.Code)
		}
	}
	before := reached
	for _, q := range []string{"metadata=%zz", "limit=1&metadata=a%"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/sandboxes?"+q, nil))
		var body struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("query %q: body %q: %v", q, rec.Body.String(), err)
		}
		if rec.Code != http.StatusBadRequest || body.Code != http.StatusBadRequest || body.Message == "" {
			t.Fatalf("query %q: status %d body %s, want 400 with E2B's error body", q, rec.Code, rec.Body.String())
		}
	}
	if reached != before {
		t.Fatal("a malformed query reached the handler")
	}
}
