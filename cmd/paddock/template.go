package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/paddockhq/paddock/internal/template"
)

func init() {
	register("template", "build templates from Dockerfiles, list and delete them (talks to a running serve)", runTemplate)
}

const templateUsage = `usage:
  paddock template build -n NAME[:TAG] [-f Dockerfile] [--tag T]... [--build-arg K=V]...
                         [--cpu N] [--memory MB] [--ready-cmd CMD] [--no-cache] [CONTEXT]
  paddock template list
  paddock template delete NAME|ID...
common flags: --api-url URL (default $E2B_API_URL or http://127.0.0.1:3000),
              --api-key KEY (default $E2B_API_KEY or the data dir's initial key), --data-dir DIR`

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type templateFlags struct {
	apiURL, apiKey, dataDir string
	file, name              string
	tags, buildArgs         multiFlag
	cpu, memory             int
	readyCmd                string
	noCache                 bool
}

func runTemplate(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, templateUsage)
		if len(args) == 0 {
			return errors.New("missing subcommand")
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	var f templateFlags
	fs := flag.NewFlagSet("template "+sub, flag.ContinueOnError)
	fs.StringVar(&f.apiURL, "api-url", envOr("E2B_API_URL", "http://127.0.0.1:3000"), "Paddock's Platform API")
	fs.StringVar(&f.apiKey, "api-key", os.Getenv("E2B_API_KEY"), "API key (default $E2B_API_KEY, else the data dir's initial key)")
	fs.StringVar(&f.dataDir, "data-dir", DefaultDataDir, "data dir whose initial API key is used when no key is given")
	if sub == "build" {
		fs.StringVar(&f.file, "f", "", "Dockerfile (default CONTEXT/Dockerfile)")
		fs.StringVar(&f.name, "n", "", "template name, name[:tag]")
		fs.StringVar(&f.name, "name", "", "same as -n")
		fs.Var(&f.tags, "tag", "another tag for the build (repeatable)")
		fs.Var(&f.buildArgs, "build-arg", "K=V value of an ARG (repeatable)")
		fs.IntVar(&f.cpu, "cpu", 0, "CPUs of sandboxes from the template (default 2)")
		fs.IntVar(&f.memory, "memory", 0, "memory in MB of sandboxes from the template (default 512)")
		fs.StringVar(&f.readyCmd, "ready-cmd", "", "command that exits 0 once the start command (CMD/ENTRYPOINT) is ready")
		fs.BoolVar(&f.noCache, "no-cache", false, "run every step, ignoring the build cache")
	}
	var positional []string
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		rest = rest[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch sub {
	case "build":
		if len(positional) > 1 {
			return errors.New("template build takes one context directory")
		}
		dir := "."
		if len(positional) == 1 {
			dir = positional[0]
		}
		return templateBuild(ctx, f, dir)
	case "list", "ls":
		c, err := newAPIClient(f)
		if err != nil {
			return err
		}
		return templateList(ctx, c)
	case "delete", "rm":
		if len(positional) == 0 {
			return errors.New("usage: paddock template delete NAME|ID...")
		}
		c, err := newAPIClient(f)
		if err != nil {
			return err
		}
		for _, ref := range positional {
			if err := c.do(ctx, http.MethodDelete, "/templates/"+url.PathEscape(ref), nil, nil); err != nil {
				return fmt.Errorf("delete %s: %w", ref, err)
			}
			fmt.Printf("deleted template %s\n", ref)
		}
		return nil
	default:
		return fmt.Errorf("unknown subcommand %q\n%s", sub, templateUsage)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// apiClient calls the Platform API with an API key.
type apiClient struct {
	base string
	key  string
	http *http.Client
}

func newAPIClient(f templateFlags) (*apiClient, error) {
	key := f.apiKey
	if key == "" {
		b, err := os.ReadFile(filepath.Join(f.dataDir, initialKeyFile))
		if err != nil {
			return nil, fmt.Errorf("no API key: set E2B_API_KEY or --api-key (reading %s: %v)", filepath.Join(f.dataDir, initialKeyFile), err)
		}
		key = strings.TrimSpace(string(b))
	}
	u, err := url.Parse(f.apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--api-url %q: want http(s)://host:port", f.apiURL)
	}
	return &apiClient{base: strings.TrimRight(f.apiURL, "/"), key: key, http: &http.Client{Timeout: 2 * time.Minute}}, nil
}

// do sends a JSON request; a non-2xx answer becomes an error with the
// server's message.
func (c *apiClient) do(ctx context.Context, method, p string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+p, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", c.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is paddock serve running at %s?)", method, p, err, c.base)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if res.StatusCode/100 != 2 {
		var e struct{ Message string }
		if json.Unmarshal(raw, &e) == nil && e.Message != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Message, res.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, p, res.StatusCode)
	}
	if out != nil && len(bytes.TrimSpace(raw)) > 0 {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// templateBuild parses and checks everything locally, then uploads the
// COPY sources, starts the build and follows its log.
func templateBuild(ctx context.Context, f templateFlags, dir string) error {
	if f.name == "" {
		return errors.New("template build: -n NAME[:TAG] is required")
	}
	if _, err := template.ParseName(f.name); err != nil {
		return fmt.Errorf("-n %s: %w", f.name, err)
	}
	bc, err := template.OpenBuildContext(dir)
	if err != nil {
		return err
	}
	file := f.file
	if file == "" {
		file = filepath.Join(bc.Dir, "Dockerfile")
	}
	buildArgs := map[string]string{}
	for _, kv := range f.buildArgs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			v, ok = os.LookupEnv(k) // Docker's "--build-arg NAME" form
			if !ok {
				return fmt.Errorf("--build-arg %s: want NAME=VALUE", kv)
			}
		}
		buildArgs[k] = v
	}
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	df, err := template.ParseDockerfile(fh, buildArgs)
	fh.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	for _, ig := range df.Ignored {
		fmt.Fprintf(os.Stderr, "note: ignoring %s\n", ig)
	}
	spec := template.Spec{FromImage: df.FromImage, StartCmd: df.StartCmd, ReadyCmd: f.readyCmd, Force: f.noCache, Steps: df.Steps}
	if spec.ReadyCmd != "" && spec.StartCmd == "" {
		return errors.New("--ready-cmd needs a start command (CMD or ENTRYPOINT in the Dockerfile)")
	}
	// Hash every COPY source now: a missing source fails before any work.
	for i := range spec.Steps {
		st := &spec.Steps[i]
		if st.Type != template.StepCopy {
			continue
		}
		if st.FilesHash, err = bc.FilesHash(st.Args[0], st.Args[1]); err != nil {
			return err
		}
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	c, err := newAPIClient(f)
	if err != nil {
		return err
	}

	begin := time.Now()
	var req struct {
		TemplateID string   `json:"templateID"`
		BuildID    string   `json:"buildID"`
		Names      []string `json:"names"`
		Tags       []string `json:"tags"`
	}
	body := map[string]any{"name": f.name, "tags": []string(f.tags)}
	if f.cpu > 0 {
		body["cpuCount"] = f.cpu
	}
	if f.memory > 0 {
		body["memoryMB"] = f.memory
	}
	if err := c.do(ctx, http.MethodPost, "/v3/templates", body, &req); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "building %s (template %s, build %s, tags %s) from %s\n",
		f.name, req.TemplateID, req.BuildID, strings.Join(req.Tags, ", "), df.FromImage)

	uploaded := map[string]bool{}
	for _, st := range spec.Steps {
		if st.Type != template.StepCopy || uploaded[st.FilesHash] {
			continue
		}
		uploaded[st.FilesHash] = true
		if err := uploadSource(ctx, c, bc, req.TemplateID, st); err != nil {
			return err
		}
	}
	if err := c.do(ctx, http.MethodPost, "/v2/templates/"+url.PathEscape(req.TemplateID)+"/builds/"+url.PathEscape(req.BuildID), spec, nil); err != nil {
		return err
	}
	return followBuild(ctx, c, req.TemplateID, req.BuildID, f.name, begin)
}

// uploadSource uploads a COPY source unless the server has its files.
func uploadSource(ctx context.Context, c *apiClient, bc *template.BuildContext, templateID string, st template.Step) error {
	var link struct {
		Present bool              `json:"present"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
	}
	if err := c.do(ctx, http.MethodGet, "/templates/"+url.PathEscape(templateID)+"/files/"+st.FilesHash, nil, &link); err != nil {
		return err
	}
	if link.Present || link.URL == "" {
		fmt.Fprintf(os.Stderr, "  files of COPY %s: already uploaded\n", st.Args[0])
		return nil
	}
	tmp, err := os.CreateTemp("", "paddock-context-*.tar.gz")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := bc.WriteArchive(tmp, st.Args[0]); err != nil {
		return fmt.Errorf("archive COPY %s: %w", st.Args[0], err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, link.URL, tmp)
	if err != nil {
		return err
	}
	req.ContentLength = size
	for k, v := range link.Headers {
		req.Header.Set(k, v)
	}
	res, err := (&http.Client{Timeout: time.Hour}).Do(req)
	if err != nil {
		return fmt.Errorf("upload COPY %s: %w", st.Args[0], err)
	}
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("upload COPY %s: HTTP %d: %s", st.Args[0], res.StatusCode, bytes.TrimSpace(msg))
	}
	fmt.Fprintf(os.Stderr, "  files of COPY %s: uploaded %d KiB\n", st.Args[0], size>>10)
	return nil
}

// followBuild prints the build's log as it grows and returns when it ends.
func followBuild(ctx context.Context, c *apiClient, templateID, buildID, name string, begin time.Time) error {
	offset := 0
	p := "/templates/" + url.PathEscape(templateID) + "/builds/" + url.PathEscape(buildID) + "/status"
	for {
		var st struct {
			Status     string `json:"status"`
			LogEntries []struct {
				Timestamp time.Time `json:"timestamp"`
				Level     string    `json:"level"`
				Message   string    `json:"message"`
				Step      string    `json:"step"`
			} `json:"logEntries"`
			Reason *struct {
				Message string `json:"message"`
				Step    string `json:"step"`
			} `json:"reason"`
		}
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("%s?logsOffset=%d", p, offset), nil, &st); err != nil {
			return err
		}
		for _, e := range st.LogEntries {
			lvl := ""
			if e.Level != "info" {
				lvl = strings.ToUpper(e.Level) + " "
			}
			fmt.Printf("%s %s%s\n", e.Timestamp.Local().Format("15:04:05"), lvl, e.Message)
		}
		offset += len(st.LogEntries)
		if len(st.LogEntries) > 0 {
			continue // drain the log before looking at the status
		}
		switch st.Status {
		case "ready":
			fmt.Fprintf(os.Stderr, "template %s built in %.1f s (template %s, build %s)\n", name, time.Since(begin).Seconds(), templateID, buildID)
			return nil
		case "error":
			msg := "unknown error"
			if st.Reason != nil {
				msg = st.Reason.Message
			}
			return fmt.Errorf("build of %s failed: %s", name, msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped following build %s (it goes on on the server): %w", buildID, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func templateList(ctx context.Context, c *apiClient) error {
	var list []struct {
		TemplateID string    `json:"templateID"`
		BuildID    string    `json:"buildID"`
		Aliases    []string  `json:"aliases"`
		Public     bool      `json:"public"`
		CPUCount   int       `json:"cpuCount"`
		MemoryMB   int       `json:"memoryMB"`
		CreatedAt  time.Time `json:"createdAt"`
		UpdatedAt  time.Time `json:"updatedAt"`
	}
	if err := c.do(ctx, http.MethodGet, "/templates", nil, &list); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPUBLIC\tCPU\tMEMORY MB\tBUILD\tUPDATED")
	for _, t := range list {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%s\t%s\n", t.TemplateID, strings.Join(t.Aliases, ","), t.Public,
			t.CPUCount, t.MemoryMB, t.BuildID, t.UpdatedAt.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}
