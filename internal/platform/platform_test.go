package platform

import (
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
