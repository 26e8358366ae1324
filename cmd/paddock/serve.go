package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/paddockhq/paddock/internal/auth"
	"github.com/paddockhq/paddock/internal/envd"
	"github.com/paddockhq/paddock/internal/guest"
	"github.com/paddockhq/paddock/internal/platform"
	"github.com/paddockhq/paddock/internal/proxy"
	"github.com/paddockhq/paddock/internal/runtime/local"
	"github.com/paddockhq/paddock/internal/runtime/local/network"
	"github.com/paddockhq/paddock/internal/sandbox"
	"github.com/paddockhq/paddock/internal/store"
	"github.com/paddockhq/paddock/internal/store/bolt"
	"github.com/paddockhq/paddock/internal/store/redis"
	"github.com/paddockhq/paddock/internal/template"
	"github.com/paddockhq/paddock/internal/version"
)

func init() {
	register("serve", "run the control plane: Platform API, proxy and sandboxes", runServe)
}

// DefaultDataDir is where Paddock keeps its state unless told otherwise.
const DefaultDataDir = "/var/lib/paddock"

type serveFlags struct {
	listen     string
	dataDir    string
	cacheDir   string
	domain     string
	runtime    string
	storeURL   string
	maxTimeout time.Duration
	bridge     string
	subnet     string
	mirror     string
	logLevel   string
	pprof      string
	poolSize   int
	pools      string
	ingress    ingressFlags
}

func runServe(args []string) error {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:3000", "address of the Platform API and the sandbox proxy")
	fs.StringVar(&f.dataDir, "data-dir", DefaultDataDir, "directory for Paddock's state (store, layers, sandboxes)")
	fs.StringVar(&f.cacheDir, "cache-dir", template.DefaultCacheDir, "machine-wide cache of the base template and Debian packages")
	fs.StringVar(&f.domain, "domain", "", "sandbox domain D: HTTPS for api.D, D and <port>-<sandboxID>.D (see --tls-listen); hosts <port>-<sandboxID>.D reach sandbox ports")
	fs.StringVar(&f.runtime, "runtime", "local", "sandbox runtime (local)")
	fs.StringVar(&f.storeURL, "store", "", "state store: empty for the embedded store in the data dir, or redis://host:port/db")
	fs.DurationVar(&f.maxTimeout, "max-timeout", 24*time.Hour, "longest sandbox lifetime a client may ask for")
	fs.StringVar(&f.bridge, "bridge", network.DefaultBridge, "host bridge for sandbox networks")
	fs.StringVar(&f.subnet, "subnet", network.DefaultSubnet.String(), "address pool of sandbox networks")
	fs.StringVar(&f.mirror, "debian-mirror", "", "Debian mirror for building the base template (default: the one apt uses)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.IntVar(&f.poolSize, "pool-size", 0, "warm pool: keep this many started sandboxes of the base template ready, so a compatible Sandbox.create() takes one (0: off)")
	fs.StringVar(&f.pools, "pool-templates", "", "warm pools of other templates: NAME[:TAG]=N,... (as --pool-size; resolved as the default team)")
	f.ingress.register(fs)
	fs.StringVar(&f.pprof, "pprof-listen", "", "serve Go's net/http/pprof on this address (profiling; off when empty, never expose it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	if f.runtime != "local" {
		return fmt.Errorf("--runtime %q is not supported (available: local)", f.runtime)
	}
	if f.poolSize < 0 {
		return fmt.Errorf("--pool-size must not be negative (got %d)", f.poolSize)
	}
	pools, err := parsePools(f.pools)
	if err != nil {
		return fmt.Errorf("--pool-templates: %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("paddock serve must run as root (it creates namespaces, cgroups and mounts)")
	}
	subnet, err := netip.ParsePrefix(f.subnet)
	if err != nil {
		return fmt.Errorf("--subnet: %w", err)
	}
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return err
	}
	// Sandboxes' user namespaces walk this path to reach their root
	// filesystems, so it is searchable (o+x) but not listable by others.
	if err := os.MkdirAll(dataDir, 0o711); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(dataDir, 0o711); err != nil {
		return err
	}

	ing, err := newIngress(f.ingress, f.domain, f.listen, dataDir, log)
	if err != nil {
		return err
	}
	defer ing.close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	st, err := openStore(ctx, f.storeURL, dataDir)
	if err != nil {
		return err
	}
	defer st.Close()

	secret, err := serverSecret(ctx, st)
	if err != nil {
		return err
	}
	keys := auth.NewKeys(st, auth.WithLogger(log))
	initialKey, err := ensureInitialKey(ctx, keys, dataDir)
	if err != nil {
		return err
	}

	netMgr, err := network.New(network.Config{
		Bridge: f.bridge, Subnet: subnet,
		StateDir: filepath.Join(dataDir, "network"),
	})
	if err != nil {
		return fmt.Errorf("set up sandbox networking: %w", err)
	}
	defer netMgr.Close()
	// The slim guest binary when this build carries it (it starts faster
	// as each sandbox's envd); else the runtime mounts this binary.
	guestBin, err := guest.Install(filepath.Join(dataDir, "bin"))
	if err != nil {
		return err
	}
	if guestBin == "" {
		log.Warn("this paddock binary carries no guest binary (built without `make build`): sandboxes run paddock itself as envd, which starts slower")
	}
	rt, err := local.New(local.Config{
		RootDir:    filepath.Join(dataDir, "runtime"),
		Network:    netMgr,
		Logger:     log,
		EnvdBinary: guestBin,
		InitBinary: initBinary,
	})
	if err != nil {
		return fmt.Errorf("start local runtime: %w", err)
	}
	defer rt.Close()

	tm, err := template.New(template.Config{
		DataDir: dataDir, CacheDir: f.cacheDir, Store: st, Mirror: f.mirror,
		Progress: os.Stderr, Logger: log, EnvdVersion: envd.Version,
		Runtime: rt, Secret: secret,
	})
	if err != nil {
		return err
	}
	templates := newTemplateSource(tm)
	buildCtx, stopBuilds := context.WithCancel(ctx)
	go templates.build(buildCtx)
	// Before the runtime closes: a build in flight destroys its sandbox.
	defer templates.wait(stopBuilds)

	node, _ := os.Hostname()
	// The proxy is built on the sandbox service; the service tells it of
	// each sandbox that starts running (Running) once both exist.
	// Its dial reaches the sandbox as it is: Route would resume a paused one.
	var dataPlane atomic.Pointer[proxy.Proxy]
	var svc *sandbox.Service
	svc, err = sandbox.New(sandbox.Config{
		Runtime: rt, Store: st, Templates: templates, Secret: secret,
		Domain: ing.sdkDomain, Node: node, MaxTimeout: f.maxTimeout,
		NewID: auth.NewSandboxID, Logger: log.With("component", "sandbox"),
		SnapshotDir: filepath.Join(dataDir, "snapshots"),
		PoolSize:    f.poolSize, Pools: pools, PoolTeam: auth.DefaultTeam,
		Running: func(id string) {
			if px := dataPlane.Load(); px != nil {
				px.Preconnect(id, func(ctx context.Context, port int) (net.Conn, error) { return svc.Dial(ctx, id, port) })
			}
		},
	})
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer svc.Close()
	// After the sandbox service reaped orphans (build sandboxes included):
	// unfinished builds fail, unreferenced layers go.
	if err := tm.Start(ctx); err != nil {
		return err
	}
	defer tm.Close()

	apiHandler := platform.New(platform.Config{
		Sandboxes:   svc,
		Templates:   tm,
		TemplateUse: svc,
		Keys:        keys,
		Limiter:     auth.NewLimiter(auth.LimiterConfig{}),
		Health:      withPool(withMemorySnapshots(templates.health, svc), svc),
		Version:     version.Version,
		Runtime:     f.runtime,
		Logger:      log.With("component", "api"),
	})
	px := proxy.New(proxy.Config{Domain: f.domain, Sandboxes: proxyAdapter{svc}, Logger: log.With("component", "proxy")})
	defer px.Close()
	dataPlane.Store(px)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if px.Match(r) {
			px.ServeHTTP(w, r)
			return
		}
		apiHandler.ServeHTTP(w, r)
	})

	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: handler, Protocols: &protocols,
		ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 640 * time.Second, MaxHeaderBytes: 1 << 20,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	// The proxy's front end serves requests to envd on their connection's
	// goroutine and hands every other connection to srv.
	front := px.Front(l, proxy.FrontConfig{IdleTimeout: srv.IdleTimeout, ReadHeaderTimeout: srv.ReadHeaderTimeout})
	defer front.Close()
	srv.ConnContext = front.ConnContext
	adminL, err := listenAdmin(filepath.Join(dataDir, adminSocket))
	if err != nil {
		return err
	}
	admin := &http.Server{Handler: platform.AdminHandler(keys), ReadHeaderTimeout: 10 * time.Second}

	var wg sync.WaitGroup
	errc := make(chan error, 5)
	wg.Add(2)
	go func() { defer wg.Done(); errc <- ignoreClosed(srv.Serve(front)) }()
	go func() { defer wg.Done(); errc <- ignoreClosed(admin.Serve(adminL)) }()
	var prof *http.Server
	if f.pprof != "" {
		pl, err := net.Listen("tcp", f.pprof)
		if err != nil {
			return fmt.Errorf("listen on %s (--pprof-listen): %w", f.pprof, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		prof = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() { defer wg.Done(); errc <- ignoreClosed(prof.Serve(pl)) }()
		log.Info("pprof serving", "addr", pl.Addr().String())
	}
	ing.serve(handler, &wg, errc)
	bannerDomain := f.domain
	if ing.httpsOn() {
		bannerDomain = "" // the HTTPS block below gives E2B_DOMAIN
	}
	printBanner(os.Stdout, l.Addr().String(), bannerDomain, initialKey, dataDir)
	ing.printBanner(os.Stdout)
	log.Info("paddock serving", "addr", l.Addr().String(), "dataDir", dataDir, "version", version.Version)

	select {
	case <-ctx.Done():
		log.Info("shutting down; sandboxes keep running and are adopted at the next start")
	case err = <-errc:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	_ = front.Shutdown(shutdown)
	frontStats := front.Stats()
	log.Info("proxy front end", "servedRequests", frontStats.Served, "connectionsHandedToNetHTTP", frontStats.HandedOver, "connectionsTakenBack", frontStats.TakenBack)
	_ = admin.Shutdown(shutdown)
	ing.shutdown(shutdown)
	if prof != nil {
		_ = prof.Close()
	}
	wg.Wait()
	return err
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// openStore opens the embedded store in the data dir, or Redis/Valkey.
func openStore(ctx context.Context, url, dataDir string) (store.Store, error) {
	if url == "" {
		s, err := bolt.Open(filepath.Join(dataDir, "paddock.db"))
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return s, nil
	}
	if strings.HasPrefix(url, "redis") || strings.HasPrefix(url, "valkey") || strings.HasPrefix(url, "unix") {
		redis.SetLogger(slog.Default())
		s, err := redis.Open(ctx, url)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("--store %q: use empty (embedded) or a redis:// URL", url)
}

// serverSecret returns the HMAC secret shared by every replica (created once).
func serverSecret(ctx context.Context, st store.Store) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	err := st.Apply(ctx, store.Op{Collection: "config", Key: "secret", Value: fresh, Cond: store.IfAbsent})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return nil, fmt.Errorf("store server secret: %w", err)
	}
	secret, err := st.Get(ctx, "config", "secret")
	if err != nil {
		return nil, fmt.Errorf("read server secret: %w", err)
	}
	return secret, nil
}

// initialKeyFile holds the first API key, readable by root only.
const initialKeyFile = "initial-api-key"

// ensureInitialKey creates the first API key when there is none and writes
// it to the data dir; it returns the new key ("" when keys already existed).
func ensureInitialKey(ctx context.Context, keys *auth.Keys, dataDir string) (string, error) {
	list, err := keys.List(ctx)
	if err != nil {
		return "", fmt.Errorf("list API keys: %w", err)
	}
	if len(list) > 0 {
		return "", nil
	}
	plain, _, err := keys.Create(ctx, auth.DefaultTeam, "initial", nil)
	if err != nil {
		return "", fmt.Errorf("create the first API key: %w", err)
	}
	path := filepath.Join(dataDir, initialKeyFile)
	if err := os.WriteFile(path, []byte(plain+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return plain, os.Chmod(path, 0o600)
}

func printBanner(w io.Writer, addr, domain, initialKey, dataDir string) {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	base := "http://" + net.JoinHostPort(host, port)
	fmt.Fprintf(w, "Paddock %s is serving the E2B API on %s\n\n", version.Version, base)
	if initialKey != "" {
		fmt.Fprintf(w, "First API key created (shown once; also in %s):\n\n", filepath.Join(dataDir, initialKeyFile))
	} else {
		fmt.Fprintf(w, "Point the E2B SDK at Paddock (API keys: `paddock apikey list|create`):\n\n")
	}
	fmt.Fprintf(w, "  export E2B_API_URL=%s\n  export E2B_SANDBOX_URL=%s\n", base, base)
	if domain != "" {
		fmt.Fprintf(w, "  export E2B_DOMAIN=%s\n", domain)
	}
	if initialKey != "" {
		fmt.Fprintf(w, "  export E2B_API_KEY=%s\n", initialKey)
	}
	fmt.Fprintln(w)
}

// adminSocket is the unix socket of the local admin API, inside a
// root-only directory of the data dir.
const adminSocket = "admin/paddock.sock"

func listenAdmin(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("another paddock serve is running on this data dir (%s answers)", path)
	}
	// The socket is created inside a 0700 directory, so it is never
	// reachable by others, without touching the process-wide umask.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create admin socket dir: %w", err)
	}
	if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on admin socket %s: %w", path, err)
	}
	return l, os.Chmod(path, 0o600)
}

// templateSource adapts the template manager to what the sandbox service
// consumes, and makes creates wait until the base template is built (and
// creates of code-interpreter-v1 until that one is).
type templateSource struct {
	tm      *template.Manager
	ready   chan struct{} // closed once the base template is ready or failed
	ciReady chan struct{} // closed once code-interpreter-v1 is ready or failed
	done    chan struct{} // closed when build returned
	mu      sync.Mutex
	err     error
	ciErr   error
}

func newTemplateSource(tm *template.Manager) *templateSource {
	return &templateSource{tm: tm, ready: make(chan struct{}), ciReady: make(chan struct{}), done: make(chan struct{})}
}

// build prepares the built-in templates: base, then code-interpreter-v1.
func (t *templateSource) build(ctx context.Context) {
	defer close(t.done)
	_, err := t.tm.EnsureBase(ctx)
	t.mu.Lock()
	t.err = err
	t.mu.Unlock()
	if err != nil {
		slog.Error("base template build failed; sandboxes cannot be created until it succeeds (restart to retry)", "err", err)
	}
	close(t.ready)
	if err == nil {
		_, err = t.tm.EnsureCodeInterpreter(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			slog.Info("code-interpreter template build stopped (shutting down)", "template", template.CodeInterpreterAlias)
		case err != nil:
			slog.Error("code-interpreter template build failed; creates of it fail until it succeeds (restart to retry)", "template", template.CodeInterpreterAlias, "err", err)
		}
	} else {
		err = fmt.Errorf("it is built on the base template, which failed: %w", err)
	}
	t.mu.Lock()
	t.ciErr = err
	t.mu.Unlock()
	close(t.ciReady)
}

// wait stops the builds (stop cancels their context) and waits for them.
func (t *templateSource) wait(stop context.CancelFunc) {
	stop()
	<-t.done
}

// health reports the built-in templates. Only the base decides readiness:
// code-interpreter-v1 builds in the background (minutes on a fresh machine)
// and only its own creates wait for it.
func (t *templateSource) health() (bool, map[string]string) {
	checks := map[string]string{}
	select {
	case <-t.ciReady:
		t.mu.Lock()
		if t.ciErr != nil {
			checks["codeInterpreterTemplate"] = "error: " + firstLine(t.ciErr.Error())
		} else {
			checks["codeInterpreterTemplate"] = "ready"
		}
		t.mu.Unlock()
	default:
		checks["codeInterpreterTemplate"] = "building"
	}
	select {
	case <-t.ready:
	default:
		checks["baseTemplate"] = "building"
		return false, checks
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		checks["baseTemplate"] = "error: " + t.err.Error()
		return false, checks
	}
	checks["baseTemplate"] = "ready"
	return true, checks
}

// waitCodeInterpreter waits until code-interpreter-v1 is ready when ref
// names it (by name, with any tag, or by ID).
func (t *templateSource) waitCodeInterpreter(ctx context.Context, ref string) error {
	n, err := template.ParseName(ref)
	if err != nil || (n.Identifier() != template.CodeInterpreterAlias && n.Identifier() != template.CodeInterpreterID) {
		return nil
	}
	select {
	case <-t.ciReady:
	case <-ctx.Done():
		return fmt.Errorf("%w: template %s is still being built (see GET /health): %v", sandbox.ErrNotReady, template.CodeInterpreterAlias, ctx.Err())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ciErr != nil {
		return fmt.Errorf("%w: template %s could not be built (restart paddock serve to retry; its log has the build output): %s", sandbox.ErrNotReady, template.CodeInterpreterAlias, firstLine(t.ciErr.Error()))
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (t *templateSource) Resolve(ctx context.Context, ref, team string) (sandbox.Template, error) {
	select {
	case <-t.ready:
	case <-ctx.Done():
		return sandbox.Template{}, fmt.Errorf("%w: base template still building: %v", sandbox.ErrNotReady, ctx.Err())
	}
	if err := t.waitCodeInterpreter(ctx, ref); err != nil {
		return sandbox.Template{}, err
	}
	tpl, err := t.tm.Registry().Resolve(ctx, ref, team)
	switch {
	case errors.Is(err, template.ErrNotFound):
		return sandbox.Template{}, fmt.Errorf("%w: %v", sandbox.ErrTemplate, err)
	case errors.Is(err, template.ErrForbidden):
		return sandbox.Template{}, fmt.Errorf("%w: %v", sandbox.ErrForbidden, err)
	case errors.Is(err, template.ErrInvalid):
		return sandbox.Template{}, fmt.Errorf("%w: %v", sandbox.ErrInvalid, err)
	case err != nil:
		return sandbox.Template{}, err
	}
	layers, err := t.tm.LayerPaths(tpl)
	if err != nil {
		return sandbox.Template{}, fmt.Errorf("template %s: %w", tpl.ID, err)
	}
	ev := tpl.EnvdVersion
	if ev == "" {
		ev = envd.Version
	}
	return sandbox.Template{
		ID: tpl.ID, Alias: tpl.Name(), Layers: layers,
		CPUs: tpl.CPUCount, MemoryMB: tpl.MemoryMB, DiskMB: tpl.DiskSizeMB,
		User: tpl.User, Workdir: tpl.Workdir, Env: tpl.Env,
		StartCmd: tpl.StartCmd, ReadyCmd: tpl.ReadyCmd, EnvdVersion: ev,
	}, nil
}

// proxyAdapter lets the proxy reach sandboxes through the sandbox service.
type proxyAdapter struct{ svc *sandbox.Service }

func (a proxyAdapter) Signers(ctx context.Context) ([]proxy.Signer, error) {
	ids, err := a.svc.SecureIDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]proxy.Signer, len(ids))
	for i, id := range ids {
		out[i] = proxy.Signer{ID: id, EnvdToken: a.svc.EnvdToken(id)}
	}
	return out, nil
}

func (a proxyAdapter) Route(ctx context.Context, id string) (proxy.Route, error) {
	in, err := a.svc.Ingress(ctx, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		return proxy.Route{}, fmt.Errorf("%w: %v", proxy.ErrGone, err)
	}
	if err != nil {
		return proxy.Route{}, err
	}
	return proxy.Route{
		Dial:            func(ctx context.Context, port int) (net.Conn, error) { return a.svc.Dial(ctx, id, port) },
		TrafficToken:    in.TrafficToken,
		MaskRequestHost: in.MaskRequestHost,
	}, nil
}

// withMemorySnapshots adds the memory snapshot self-test's verdict to the
// health checks ("available", "checking", "unavailable: <reason>"). It does
// not make the server unready: without it pauses keep files only.
func withMemorySnapshots(health func() (bool, map[string]string), svc *sandbox.Service) func() (bool, map[string]string) {
	return func() (bool, map[string]string) {
		ready, checks := health()
		if checks == nil {
			checks = map[string]string{}
		}
		checks["memorySnapshots"] = svc.MemorySnapshots()
		return ready, checks
	}
}

// withPool adds the warm pool's state to the health checks when it is on
// ("base 2/2": ready/size per template). It does not affect readiness.
func withPool(health func() (bool, map[string]string), svc *sandbox.Service) func() (bool, map[string]string) {
	return func() (bool, map[string]string) {
		ready, checks := health()
		if p := svc.PoolStatus(); p != "" {
			if checks == nil {
				checks = map[string]string{}
			}
			checks["warmPool"] = p
		}
		return ready, checks
	}
}

// parsePools parses --pool-templates: NAME[:TAG]=N, comma-separated.
func parsePools(v string) (map[string]int, error) {
	out := map[string]int{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		ref, n, ok := strings.Cut(item, "=")
		size, err := strconv.Atoi(strings.TrimSpace(n))
		if ref = strings.TrimSpace(ref); !ok || ref == "" || err != nil || size < 0 {
			return nil, fmt.Errorf("%q: want NAME[:TAG]=N with N ≥ 0", item)
		}
		out[ref] = size
	}
	return out, nil
}
