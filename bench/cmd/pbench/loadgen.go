package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

func init() {
	subcommands["loadgen"] = subcommand{"closed-loop HTTP GET load (control plane) against a URL, or (--baseline) against a static loopback server returning the same response", runLoadgen}
}

// loadgen issues GETs from c workers for a duration, each worker waiting for
// its response before the next request (closed loop, keep-alive).
func runLoadgen(args []string) (*result, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	url := fs.String("url", "", "URL to GET; {id} is replaced by the next of --ids")
	idsFile := fs.String("ids", "", "file with one ID per line for {id}")
	key := fs.String("key", os.Getenv("PADDOCK_API_KEY"), "X-API-KEY header (default $PADDOCK_API_KEY)")
	conc := fs.Int("c", 16, "concurrent workers (connections)")
	dur := fs.Duration("d", 5*time.Second, "duration")
	baseline := fs.Bool("baseline", false, "GET the URL once, then load a static loopback Go server returning that response")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *url == "" || *conc < 1 || *dur <= 0 {
		return nil, errors.New("--url is required; -c and -d must be positive")
	}
	var ids []string
	if *idsFile != "" {
		b, err := os.ReadFile(*idsFile)
		if err != nil {
			return nil, err
		}
		ids = strings.Fields(string(b))
	}
	if strings.Contains(*url, "{id}") && len(ids) == 0 {
		return nil, errors.New("--url has {id} but --ids gave none")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(ctx context.Context, u string) (int, []byte, http.Header, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if *key != "" {
			req.Header.Set("X-API-KEY", *key)
		}
		res, err := client.Do(req)
		if err != nil {
			return 0, nil, nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res.StatusCode, body, res.Header, err
	}
	urlFor := func(i int) string {
		if len(ids) == 0 {
			return *url
		}
		return strings.ReplaceAll(*url, "{id}", ids[i%len(ids)])
	}

	res := newResult()
	ctx := context.Background()
	status, body, hdr, err := get(ctx, urlFor(0))
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %.200s", urlFor(0), status, body)
	}
	res.Values["response_bytes"] = float64(len(body))
	if *baseline {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ct := hdr.Get("Content-Type")
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			w.Write(body)
		}), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
		target := "http://" + l.Addr().String() + "/static"
		urlFor = func(int) string { return target }
		res.note("baseline: static Go net/http server on loopback returning the same %d-byte response", len(body))
	}

	var (
		mu      sync.Mutex
		lat     []float64
		errs    int
		lastErr error
		wg      sync.WaitGroup
	)
	deadline := time.Now().Add(*dur)
	start := time.Now()
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []float64
			bad := 0
			var le error
			for i := w; time.Now().Before(deadline); i += *conc {
				t0 := time.Now()
				st, _, _, err := get(ctx, urlFor(i))
				d := time.Since(t0)
				if err == nil && st != http.StatusOK {
					err = fmt.Errorf("status %d", st)
				}
				if err != nil {
					bad++
					le = err
					continue
				}
				mine = append(mine, ms(d))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			if le != nil {
				lastErr = le
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.Samples["latency"] = lat
	res.Values["requests"] = float64(len(lat))
	res.Values["errors"] = float64(errs)
	res.Values["rps"] = float64(len(lat)) / elapsed.Seconds()
	res.Values["concurrency"] = float64(*conc)
	if lastErr != nil {
		res.note("last error: %v", lastErr)
	}
	return res, nil
}
