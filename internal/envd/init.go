package envd

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/paddockhq/paddock/internal/envd/identity"
)

// initRequest is the body of POST /init as the control plane sends it.
type initRequest struct {
	EnvVars        map[string]string `json:"envVars"`
	AccessToken    *string           `json:"accessToken"`
	Timestamp      *time.Time        `json:"timestamp"`
	DefaultUser    string            `json:"defaultUser"`
	DefaultWorkdir string            `json:"defaultWorkdir"`
}

// handleInit configures the daemon: environment, access token, default user
// and working directory. The first /init may set a token freely; afterwards
// the caller must prove it knows the current token (header or body).
func (d *Daemon) handleInit(w http.ResponseWriter, r *http.Request) {
	var req initRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		WriteError(w, http.StatusBadRequest, "read init body: "+err.Error())
		return
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			WriteError(w, http.StatusBadRequest, "parse init body: "+err.Error())
			return
		}
	}
	if cur := d.state.AccessToken(); cur != "" {
		headerOK := d.state.TokenMatches(r.Header.Get("X-Access-Token"))
		bodyOK := req.AccessToken != nil && d.state.TokenMatches(*req.AccessToken)
		if !headerOK && !bodyOK {
			WriteError(w, http.StatusUnauthorized, "unauthorized access, please provide a valid access token")
			return
		}
	}
	if req.DefaultUser != "" {
		if _, err := identity.Lookup(req.DefaultUser); err != nil {
			WriteError(w, http.StatusBadRequest, "default user: "+err.Error())
			return
		}
	}
	in := identity.Init{
		EnvVars:        req.EnvVars,
		AccessToken:    req.AccessToken,
		DefaultUser:    req.DefaultUser,
		DefaultWorkdir: req.DefaultWorkdir,
	}
	if req.AccessToken == nil {
		empty := ""
		in.AccessToken = &empty // an /init without a token clears it, as E2B's envd does
	}
	if req.Timestamp != nil {
		in.Timestamp = req.Timestamp.UnixNano()
	}
	if d.state.Apply(in) {
		d.log.Info("init applied", "defaultUser", d.state.DefaultUser(), "defaultWorkdir", d.state.DefaultWorkdir(), "envVars", len(req.EnvVars), "token", d.state.AccessToken() != "")
	}
	// The client's first RPC follows soon: build the services meanwhile.
	d.rpc.prepare()
	w.Header().Set("X-Envd-Version", Version)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleEnvs returns the global environment variables as a JSON object.
func (d *Daemon) handleEnvs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(d.state.Env())
}
