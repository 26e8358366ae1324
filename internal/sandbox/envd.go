package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/paddockhq/paddock/internal/runtime"
)

// envdClient talks to envd inside sandboxes over runtime.Dial, with HTTP
// keep-alive per sandbox.
type envdClient struct {
	http *http.Client
	tr   *http.Transport
}

func newEnvdClient(rt runtime.Runtime) *envdClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, portStr, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			port, err := strconv.Atoi(portStr)
			if err != nil {
				return nil, err
			}
			return rt.Dial(ctx, host, port)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	return &envdClient{http: &http.Client{Transport: tr}, tr: tr}
}

func envdURL(id, path string) string {
	return "http://" + net.JoinHostPort(id, strconv.Itoa(runtime.EnvdPort)) + path
}

// waitHealthy polls envd's /health until it answers 204 or ctx ends:
// every 1-4 ms while envd usually comes up (a refused dial costs little),
// then backing off to 20 ms.
func (c *envdClient) waitHealthy(ctx context.Context, id string) error {
	delay := time.Millisecond
	start := time.Now()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, envdURL(id, "/health"), nil)
		res, err := c.http.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusNoContent {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("status %d", res.StatusCode)
			}
			return fmt.Errorf("envd in sandbox %s did not become healthy: %w (last: %v)", id, ctx.Err(), err)
		case <-time.After(delay):
		}
		switch {
		case time.Since(start) < 250*time.Millisecond:
			delay = min(delay*2, 4*time.Millisecond)
		case delay < 20*time.Millisecond:
			delay += delay / 2
		}
	}
}

// initBody is envd's POST /init body.
type initBody struct {
	EnvVars        map[string]string `json:"envVars"`
	AccessToken    *string           `json:"accessToken,omitempty"`
	Timestamp      time.Time         `json:"timestamp"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
}

// init posts /init; token is the current token of the sandbox (for re-inits).
func (c *envdClient) init(ctx context.Context, id string, body initBody, currentToken string) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, envdURL(id, "/init"), bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if currentToken != "" {
		req.Header.Set("X-Access-Token", currentToken)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("post envd /init in sandbox %s: %w", id, err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusOK {
		return fmt.Errorf("envd /init in sandbox %s: status %d: %s", id, res.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// forget drops pooled connections (after a sandbox is gone).
func (c *envdClient) forget() { c.tr.CloseIdleConnections() }
