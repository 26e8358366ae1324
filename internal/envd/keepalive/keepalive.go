// Package keepalive owns the keepalive cadence of envd's server streams:
// clients ask for it with the Keepalive-Ping-Interval header (seconds), and
// envd emits a keepalive event after that much idle time so proxies and load
// balancers do not cut quiet streams.
package keepalive

import (
	"net/http"
	"strconv"
	"time"
)

// Default is the interval used when the client sends no header.
const Default = 90 * time.Second

// Header is the request header carrying the interval in seconds.
const Header = "Keepalive-Ping-Interval"

// Interval returns the keepalive interval asked for in h, or Default.
func Interval(h http.Header) time.Duration {
	v := h.Get(Header)
	if v == "" {
		return Default
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n <= 0 {
		return Default
	}
	d := time.Duration(n * float64(time.Second))
	if d < 10*time.Millisecond {
		d = 10 * time.Millisecond
	}
	return d
}
