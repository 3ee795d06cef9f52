package pid1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/status"
)

// modeFile keeps the operator's modes of this head across reboots, as
// Pacemaker keeps maintenance-mode and node standby: an operator who put a
// head in standby does not want a reboot to bring the service back there.
const modeFile = "/var/lib/tandem/ha/mode.json"

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
func (h *haSup) loadMode() {
	m, err := readMode(h.modes)
	if err != nil {
		// Normal mode is the one that serves; say so loudly.
		h.log.Error("HA: cannot read the operator's modes; running in normal mode", "err", err)
	}
	h.mu.Lock()
	h.mode = m
	h.mu.Unlock()
	if sup := h.b.serviceSupervisor(); sup != nil && m.Maintenance {
		sup.Maintenance(true)
	}
	if m.Maintenance || m.Standby {
		h.log.Warn("HA: operator's modes from before the reboot", "maintenance", m.Maintenance, "standby", m.Standby)
	}
}

// standbyWait bounds how long `tandem standby on` waits for the service
// to leave the active head.
const standbyWait = 3 * time.Minute

// setMode carries out an OpMaintenance* or OpStandby* request.
func (b *Boot) setMode(ctx context.Context, req status.Request) (string, error) {
	h := b.haSup()
	sup := b.serviceSupervisor()
	if h == nil || sup == nil {
		return "", errors.New("the HA supervisor does not run on this head")
	}
	h.mu.Lock()
	m := h.mode
	h.mu.Unlock()
	switch req.Op {
	case status.OpMaintenanceOn, status.OpMaintenanceOff:
		m.Maintenance = req.Op == status.OpMaintenanceOn
	case status.OpStandbyOn:
		if !m.Standby && b.role() == roleActive && !req.Force {
			if why := b.peerCannotTakeOver(ctx); why != "" {
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
	if err := writeMode(h.modes, m); err != nil {
		return "", fmt.Errorf("recording the mode: %w", err)
	}
	h.mu.Lock()
	h.mode = m
	h.mu.Unlock()
	sup.Maintenance(m.Maintenance)
	b.Log.Info("HA: operator's mode changed", "op", req.Op, "maintenance", m.Maintenance, "standby", m.Standby)
	h.poke()

	switch req.Op {
	case status.OpMaintenanceOn:
		return fmt.Sprintf("maintenance on %s: monitors report, nothing is restarted, moved or started", b.Node), nil
	case status.OpMaintenanceOff:
		return fmt.Sprintf("maintenance off on %s: failures are acted on again", b.Node), nil
	case status.OpStandbyOff:
		return fmt.Sprintf("standby off on %s: it may take the service again", b.Node), nil
	}
	if m.Maintenance {
		return fmt.Sprintf("standby on %s, recorded; maintenance is on, so nothing moves until it is off", b.Node), nil
	}
	// Wait until the loop has stopped the service here.
	t0 := time.Now()
	wctx, cancel := context.WithTimeout(ctx, standbyWait)
	defer cancel()
	for b.role() == roleActive || h.busy() {
		select {
		case <-wctx.Done():
			return "", fmt.Errorf("standby on %s is recorded, but the service still runs here after %v", b.Node, time.Since(t0).Round(time.Second))
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Then for the peer to start it, which it does on its own.
	peer := "the peer"
	for {
		if p, err := b.peerStatus(wctx); err == nil {
			if p.Role == roleActive {
				return fmt.Sprintf("standby on %s: %s is active (%d ms)", b.Node, p.Node, time.Since(t0).Milliseconds()), nil
			}
			peer = p.Node
		}
		select {
		case <-wctx.Done():
			return fmt.Sprintf("standby on %s: the service does not run here; %s is not active", b.Node, peer), nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// peerCannotTakeOver says why the peer could not take the service now
// ("" if it can): it must answer, be ready, standby, and UpToDate.
func (b *Boot) peerCannotTakeOver(ctx context.Context) string {
	p, err := b.peerStatus(ctx)
	if err != nil {
		return "the peer does not answer (" + err.Error() + ")"
	}
	st := b.stack.drbd.State()
	switch {
	case p.State != status.Ready:
		return p.Node + " is " + string(p.State)
	case st.Connection != "Connected":
		return "DRBD is " + orDash(st.Connection)
	case st.PeerDisk != "UpToDate":
		return p.Node + "'s disk is " + orDash(st.PeerDisk)
	case p.HA != nil && p.HA.Mode != "normal":
		return p.Node + " is in " + p.HA.Mode
	}
	return ""
}

// busy reports whether the loop is changing this head's role.
func (h *haSup) busy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acting != ""
}

// cleanup forgets the failures and escalation of one layer ("" for all):
// the operator has fixed the cause, and the head may serve it again.
func (b *Boot) cleanup(layer string) (string, error) {
	sup := b.serviceSupervisor()
	if sup == nil {
		return "", errors.New("the services are not running on this head")
	}
	var names []string
	for _, r := range sup.Status() {
		if layer == "" || r.Name == layer {
			names = append(names, r.Name)
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no layer %q on this head", layer)
	}
	h := b.haSup()
	for _, n := range names {
		if err := sup.Cleanup(n); err != nil {
			return "", err
		}
		if h != nil {
			h.mu.Lock()
			delete(h.escalatedAt, n)
			h.mu.Unlock()
		}
	}
	if h != nil {
		h.poke()
	}
	if layer == "" {
		return fmt.Sprintf("cleanup on %s: the failures of every layer are forgotten", b.Node), nil
	}
	return fmt.Sprintf("cleanup on %s: the failures of %s are forgotten", b.Node, layer), nil
}
