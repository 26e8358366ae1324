package codeinterp

import "testing"

// BenchmarkRunCode is sandbox.runCode('1') end to end: HTTP request, kernel
// round trip, NDJSON stream read to its end, per language.
func BenchmarkRunCode(b *testing.B) {
	ts := newTestServer(b)
	for _, lang := range []string{"python", "javascript", "bash"} {
		code := "1"
		if lang == "bash" {
			code = "echo 1"
		}
		b.Run(lang, func(b *testing.B) {
			ts.runCode(code, "language", lang) // the kernel starts here
			b.ResetTimer()
			for range b.N {
				ex := ts.runCode(code, "language", lang)
				if ex.Error != nil {
					b.Fatalf("error %+v", *ex.Error)
				}
			}
		})
	}
}

// BenchmarkKernelStart is the time to a usable kernel (POST /contexts),
// which is also what the first execution of a lazily created default
// context waits for.
func BenchmarkKernelStart(b *testing.B) {
	ts := newTestServer(b)
	for _, lang := range []string{"python", "javascript", "bash"} {
		b.Run(lang, func(b *testing.B) {
			for range b.N {
				c := ts.createContext(lang, "")
				b.StopTimer()
				ts.do("DELETE", "/contexts/"+c.ID, nil)
				b.StartTimer()
			}
		})
	}
}
