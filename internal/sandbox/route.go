package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
)

// Ingress is what the data plane needs to admit traffic to a sandbox.
type Ingress struct {
	// TrafficToken, when set, is required on ports other than envd's.
	TrafficToken string
	// MaskRequestHost rewrites the Host header of non-envd traffic.
	MaskRequestHost string
}

// Ingress returns how traffic may reach a sandbox. A paused sandbox with
// auto-resume is resumed first; any sandbox that cannot serve traffic
// yields an error wrapping ErrNotFound.
func (s *Service) Ingress(ctx context.Context, id string) (Ingress, error) {
	// Every request to a sandbox asks: decode only what it needs.
	var r struct {
		State           State  `json:"state"`
		PublicTraffic   bool   `json:"publicTraffic"`
		MaskRequestHost string `json:"maskRequestHost"`
		AutoResume      bool   `json:"autoResume"`
	}
	if err := s.loadInto(ctx, id, &r); err != nil {
		return Ingress{}, err
	}
	switch r.State {
	case StateRunning:
	case StatePaused:
		if !r.AutoResume {
			return Ingress{}, fmt.Errorf("%w: sandbox %s is paused", ErrNotFound, id)
		}
		if err := s.resume(ctx, id, ResumeOptions{}); err != nil {
			return Ingress{}, fmt.Errorf("auto-resume sandbox %s: %w", id, err)
		}
	default:
		return Ingress{}, fmt.Errorf("%w: sandbox %s is %s", ErrNotFound, id, r.State)
	}
	in := Ingress{MaskRequestHost: r.MaskRequestHost}
	if !r.PublicTraffic {
		in.TrafficToken = s.TrafficToken(id)
	}
	return in, nil
}

// SecureIDs lists the sandboxes that hold an envd access token and can take
// traffic (running, or paused with auto-resume): the candidates for a
// signed /files link that names no sandbox.
func (s *Service) SecureIDs(ctx context.Context) ([]string, error) {
	recs, err := s.cfg.Store.List(ctx, Collection)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var ids []string
	for _, kv := range recs {
		var r struct {
			ID         string `json:"id"`
			State      State  `json:"state"`
			Secure     bool   `json:"secure"`
			AutoResume bool   `json:"autoResume"`
		}
		if err := json.Unmarshal(kv.Value, &r); err != nil || !r.Secure {
			continue
		}
		if r.State == StateRunning || r.State == StatePaused && r.AutoResume {
			ids = append(ids, r.ID)
		}
	}
	return ids, nil
}
