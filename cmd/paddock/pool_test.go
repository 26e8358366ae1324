package main

import (
	"maps"
	"testing"
)

func TestParsePools(t *testing.T) {
	got, err := parsePools(" code-interpreter-v1=2, mine:v1=1,,")
	if err != nil || !maps.Equal(got, map[string]int{"code-interpreter-v1": 2, "mine:v1": 1}) {
		t.Fatalf("parsePools = %v, %v", got, err)
	}
	if got, err := parsePools(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"base", "=2", "base=-1", "base=x"} {
		if _, err := parsePools(bad); err == nil {
			t.Errorf("parsePools(%q) accepted", bad)
		}
	}
}
