package platform

import (
	"errors"
	"net/http"
	"time"

	"github.com/paddockhq/paddock/internal/auth"
)

// AdminKey is an API key as the admin API lists it (never the key itself).
type AdminKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Team       string     `json:"team"`
	Mask       string     `json:"mask"`
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  *time.Time `json:"expiresAt,omitempty"`
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
}

// AdminCreateKey is the body of POST /admin/apikeys.
type AdminCreateKey struct {
	Team      string     `json:"team"`
	Name      string     `json:"name"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// AdminCreatedKey is the answer to POST /admin/apikeys: the only time the
// key itself is shown.
type AdminCreatedKey struct {
	Key    string   `json:"key"`
	APIKey AdminKey `json:"apiKey"`
}

// ToAdminKey converts a stored key for listing.
func ToAdminKey(k auth.Key) AdminKey {
	return AdminKey{ID: k.ID, Name: k.Name, Team: k.Team, Mask: k.Mask, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt}
}

// AdminHandler serves the local administration API (API keys) that
// `paddock apikey` uses while the server runs. It must only be exposed on a
// socket reachable by the host's administrator (a 0600 unix socket).
func AdminHandler(keys *auth.Keys) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/apikeys", func(w http.ResponseWriter, r *http.Request) {
		list, err := keys.List(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		out := make([]AdminKey, 0, len(list))
		for _, k := range list {
			out = append(out, ToAdminKey(k))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /admin/apikeys", func(w http.ResponseWriter, r *http.Request) {
		var body AdminCreateKey
		if err := decode(r, &body, true); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		plain, k, err := keys.Create(r.Context(), body.Team, body.Name, body.ExpiresAt)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, AdminCreatedKey{Key: plain, APIKey: ToAdminKey(k)})
	})
	mux.HandleFunc("DELETE /admin/apikeys/{ref}", func(w http.ResponseWriter, r *http.Request) {
		k, err := keys.Revoke(r.Context(), r.PathValue("ref"))
		switch {
		case errors.Is(err, auth.ErrNotFound):
			writeError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, auth.ErrAmbiguous):
			writeError(w, http.StatusConflict, err.Error())
		case err != nil:
			writeError(w, http.StatusInternalServerError, err.Error())
		default:
			writeJSON(w, http.StatusOK, ToAdminKey(k))
		}
	})
	return mux
}
