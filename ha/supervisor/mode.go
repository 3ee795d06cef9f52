package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/status"
)

// operatorMode is what `tandem maintenance` and `tandem standby` set.
type operatorMode struct {
	// Maintenance: monitors report, nothing is restarted, moved or
	// started (the quorum rule still stops a head without quorum).
	Maintenance bool `json:"maintenance,omitempty"`
	// Standby: this head hands the service over and never takes it.
	Standby bool `json:"standby,omitempty"`
}

func readMode(path string) (operatorMode, error) {
	var m operatorMode
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return operatorMode{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func writeMode(path string, m operatorMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	raw, _ := json.Marshal(m)
	return atomicfile.Write(path, append(raw, '\n'), 0o644)
}

// loadMode applies the recorded modes at the HA loop's start.
func (s *Supervisor) loadMode() {
	m, err := readMode(s.cfg.ModeFile)
	if err != nil {
		// Normal mode is the one that serves; say so loudly.
		s.log.Error("cannot read the operator's modes; running in normal mode", "err", err)
	}
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
	if m.Maintenance {
		s.cfg.Layers.Maintenance(true)
	}
	if m.Maintenance || m.Standby {
		s.log.Warn("operator's modes from before the reboot", "maintenance", m.Maintenance, "standby", m.Standby)
	}
}

// standbyWait bounds how long `tandem standby on` waits for the service
// to leave the active head.
const standbyWait = 3 * time.Minute

// SetMode carries out an OpMaintenance* or OpStandby* request.
func (s *Supervisor) SetMode(ctx context.Context, req status.Request) (string, error) {
	node := s.cfg.Node
	s.mu.Lock()
	m := s.mode
	s.mu.Unlock()
	switch req.Op {
	case status.OpMaintenanceOn, status.OpMaintenanceOff:
		m.Maintenance = req.Op == status.OpMaintenanceOn
	case status.OpStandbyOn:
		if !m.Standby && s.Role() == ha.Active && !req.Force {
			if why := s.peerCannotTakeOver(ctx); why != "" {
				return "", fmt.Errorf("refused: %s, so the service would stop; use --force to stop it anyway", why)
			}
		}
		m.Standby = true
	case status.OpStandbyOff:
		m.Standby = false
	default:
		return "", fmt.Errorf("unknown mode op %q", req.Op)
	}
	// Recorded first: a reboot right after the answer keeps the mode.
	if err := writeMode(s.cfg.ModeFile, m); err != nil {
		return "", fmt.Errorf("recording the mode: %w", err)
	}
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
	s.cfg.Layers.Maintenance(m.Maintenance)
	s.log.Info("operator's mode changed", "op", req.Op, "maintenance", m.Maintenance, "standby", m.Standby)
	s.poke()

	switch req.Op {
	case status.OpMaintenanceOn:
		return fmt.Sprintf("maintenance on %s: monitors report, nothing is restarted, moved or started", node), nil
	case status.OpMaintenanceOff:
		return fmt.Sprintf("maintenance off on %s: failures are acted on again", node), nil
	case status.OpStandbyOff:
		return fmt.Sprintf("standby off on %s: it may take the service again", node), nil
	}
	if m.Maintenance {
		return fmt.Sprintf("standby on %s, recorded; maintenance is on, so nothing moves until it is off", node), nil
	}
	// Wait until the loop has stopped the service here.
	t0 := s.clock.Now()
	wctx, cancel := context.WithTimeout(ctx, standbyWait)
	defer cancel()
	for s.Role() == ha.Active || s.busy() {
		select {
		case <-wctx.Done():
			return "", fmt.Errorf("standby on %s is recorded, but the service still runs here after %v", node, s.clock.Now().Sub(t0).Round(time.Second))
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Then for the peer to start it, which it does on its own.
	peer := "the peer"
	for {
		if p, err := s.PeerStatus(wctx); err == nil {
			if ha.Role(p.Role) == ha.Active {
				return fmt.Sprintf("standby on %s: %s is active (%d ms)", node, p.Node, s.since(t0)), nil
			}
			peer = p.Node
		}
		select {
		case <-wctx.Done():
			return fmt.Sprintf("standby on %s: the service does not run here; %s is not active", node, peer), nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// peerCannotTakeOver says why the peer could not take the service now
// ("" if it can): it must answer, be ready, standby, and UpToDate.
func (s *Supervisor) peerCannotTakeOver(ctx context.Context) string {
	p, err := s.PeerStatus(ctx)
	if err != nil {
		return "the peer does not answer (" + err.Error() + ")"
	}
	st := s.cfg.DRBD.State()
	switch {
	case p.State != status.Ready:
		return p.Node + " is " + string(p.State)
	case st.Connection != drbd.Connected:
		return "DRBD is " + orDash(string(st.Connection))
	case st.PeerDisk != drbd.UpToDate:
		return p.Node + "'s disk is " + orDash(string(st.PeerDisk))
	case p.HA != nil && p.HA.Mode != "normal":
		return p.Node + " is in " + p.HA.Mode
	}
	return ""
}

// busy reports whether the loop is changing this head's role.
func (s *Supervisor) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acting != ""
}

// Cleanup forgets the failures and escalation of one layer ("" for all):
// the operator has fixed the cause, and the head may serve it again.
func (s *Supervisor) Cleanup(layer string) (string, error) {
	var names []string
	for _, r := range s.cfg.Layers.Status() {
		if layer == "" || r.Name == layer {
			names = append(names, r.Name)
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no layer %q on this head", layer)
	}
	for _, n := range names {
		if err := s.cfg.Layers.Cleanup(n); err != nil {
			return "", err
		}
		s.mu.Lock()
		delete(s.escalatedAt, n)
		s.mu.Unlock()
	}
	s.poke()
	if layer == "" {
		return fmt.Sprintf("cleanup on %s: the failures of every layer are forgotten", s.cfg.Node), nil
	}
	return fmt.Sprintf("cleanup on %s: the failures of %s are forgotten", s.cfg.Node, layer), nil
}
