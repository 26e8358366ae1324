package platform

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"
)

func TestTemplateRoutesByHand(t *testing.T) {
	for _, c := range []struct {
		method, target, alias string
		ok                    bool
	}{
		{"GET", "/templates/aliases/my-app", "my-app", true},
		{"GET", "/templates/aliases/team%2Fmy-app", "team/my-app", true},
		{"GET", "/templates/aliases/", "", false},
		{"GET", "/templates/aliases/a/b", "", false},
		{"POST", "/templates/aliases/my-app", "", false},
		{"GET", "/templates/abc/tags", "", false},
	} {
		alias, ok := aliasRoute(httptest.NewRequest(c.method, c.target, nil))
		if ok != c.ok || alias != c.alias {
			t.Errorf("aliasRoute(%s %s) = %q, %v; want %q, %v", c.method, c.target, alias, ok, c.alias, c.ok)
		}
	}
	for _, c := range []struct {
		method, target string
		ok             bool
	}{
		{"PUT", "/templates/t1/files/abc/upload?token=x", true},
		{"GET", "/templates/t1/files/abc/upload", false},
		{"PUT", "/templates/t1/files/abc", false},
		{"PUT", "/templates/t1/files/abc/upload/more", false},
		{"PUT", "/sandboxes/t1/files/abc/upload", false},
	} {
		if got := isUploadRoute(httptest.NewRequest(c.method, c.target, nil)); got != c.ok {
			t.Errorf("isUploadRoute(%s %s) = %v, want %v", c.method, c.target, got, c.ok)
		}
	}
	r := httptest.NewRequest("GET", "http://127.0.0.1:3000/templates/x/files/y", nil)
	if got := baseURL(r); got != "http://127.0.0.1:3000" {
		t.Errorf("baseURL = %q", got)
	}
	r = httptest.NewRequest("GET", "https://api.sandbox.internal/templates/x/files/y", nil)
	r.TLS = &tls.ConnectionState{}
	if got := baseURL(r); got != "https://api.sandbox.internal" {
		t.Errorf("baseURL over TLS = %q", got)
	}
}
