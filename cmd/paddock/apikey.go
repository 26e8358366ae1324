package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/paddockhq/paddock/internal/auth"
	"github.com/paddockhq/paddock/internal/platform"
)

func init() {
	register("apikey", "create, list and revoke API keys (works while serve runs)", runAPIKey)
}

func runAPIKey(args []string) error {
	usage := "usage: paddock apikey create [--team T] [--name N] [--expires DURATION] | list | revoke <id|mask|key> [--data-dir DIR]"
	if len(args) == 0 {
		return errors.New(usage)
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("apikey "+sub, flag.ContinueOnError)
	dataDir := fs.String("data-dir", DefaultDataDir, "Paddock's data directory")
	storeURL := fs.String("store", "", "state store when serve is not running (as for serve)")
	team := fs.String("team", auth.DefaultTeam, "team the key acts for (create)")
	name := fs.String("name", "", "free-text name of the key (create)")
	expires := fs.Duration("expires", 0, "lifetime of the key, e.g. 720h; 0 never expires (create)")
	var positional []string
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		rest = fs.Args()
		if len(rest) > 0 {
			positional = append(positional, rest[0])
			rest = rest[1:]
		}
	}
	c := &keyClient{dataDir: *dataDir, storeURL: *storeURL}
	ctx := context.Background()
	switch sub {
	case "create":
		body := platform.AdminCreateKey{Team: *team, Name: *name}
		if *expires > 0 {
			t := time.Now().Add(*expires).UTC()
			body.ExpiresAt = &t
		}
		created, err := c.create(ctx, body)
		if err != nil {
			return err
		}
		fmt.Printf("%s\n", created.Key)
		fmt.Fprintf(os.Stderr, "created API key %s (%s) for team %q; it is shown only once\n", created.APIKey.ID, created.APIKey.Mask, created.APIKey.Team)
		return nil
	case "list":
		keys, err := c.list(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKEY\tTEAM\tNAME\tCREATED\tEXPIRES\tLAST USED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Mask, k.Team, k.Name,
				k.CreatedAt.Format(time.RFC3339), fmtTime(k.ExpiresAt), fmtTime(k.LastUsedAt))
		}
		return tw.Flush()
	case "revoke":
		if len(positional) != 1 {
			return errors.New("usage: paddock apikey revoke <id|mask|key>")
		}
		k, err := c.revoke(ctx, positional[0])
		if err != nil {
			return err
		}
		fmt.Printf("revoked API key %s (%s)\n", k.ID, k.Mask)
		return nil
	default:
		return errors.New(usage)
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// keyClient manages keys through the running server's admin socket, or
// directly in the store when no server runs.
type keyClient struct {
	dataDir  string
	storeURL string
}

func (c *keyClient) socketClient() (*http.Client, bool) {
	path := filepath.Join(c.dataDir, adminSocket)
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil, false
	}
	conn.Close()
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}, true
}

func (c *keyClient) call(ctx context.Context, hc *http.Client, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://paddock"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		var e struct{ Message string }
		if json.Unmarshal(raw, &e) == nil && e.Message != "" {
			return errors.New(e.Message)
		}
		return fmt.Errorf("admin socket: status %d", res.StatusCode)
	}
	return json.Unmarshal(raw, out)
}

// withKeys runs fn on the store directly (serve is not running).
func (c *keyClient) withKeys(ctx context.Context, fn func(*auth.Keys) error) error {
	st, err := openStore(ctx, c.storeURL, c.dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(auth.NewKeys(st))
}

func (c *keyClient) create(ctx context.Context, body platform.AdminCreateKey) (platform.AdminCreatedKey, error) {
	var out platform.AdminCreatedKey
	if hc, ok := c.socketClient(); ok {
		return out, c.call(ctx, hc, http.MethodPost, "/admin/apikeys", body, &out)
	}
	err := c.withKeys(ctx, func(k *auth.Keys) error {
		plain, key, err := k.Create(ctx, body.Team, body.Name, body.ExpiresAt)
		out = platform.AdminCreatedKey{Key: plain, APIKey: platform.ToAdminKey(key)}
		return err
	})
	return out, err
}

func (c *keyClient) list(ctx context.Context) ([]platform.AdminKey, error) {
	var out []platform.AdminKey
	if hc, ok := c.socketClient(); ok {
		return out, c.call(ctx, hc, http.MethodGet, "/admin/apikeys", nil, &out)
	}
	err := c.withKeys(ctx, func(k *auth.Keys) error {
		list, err := k.List(ctx)
		for _, key := range list {
			out = append(out, platform.ToAdminKey(key))
		}
		return err
	})
	return out, err
}

func (c *keyClient) revoke(ctx context.Context, ref string) (platform.AdminKey, error) {
	var out platform.AdminKey
	if hc, ok := c.socketClient(); ok {
		return out, c.call(ctx, hc, http.MethodDelete, "/admin/apikeys/"+url.PathEscape(ref), nil, &out)
	}
	err := c.withKeys(ctx, func(k *auth.Keys) error {
		key, err := k.Revoke(ctx, ref)
		out = platform.ToAdminKey(key)
		return err
	})
	return out, err
}
