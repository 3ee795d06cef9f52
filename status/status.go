// Package status is the contract between PID 1 and `tandem status`: the
// JSON PID 1 serves on a unix socket, the requests it accepts (status,
// poweroff, reboot), a client, and the human rendering.
package status

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Socket is where PID 1 listens. Only root may connect (mode 0600): the
// socket also powers the node off.
const Socket = "/run/tandem/status.sock"

// State is the node's state as a whole.
type State string

const (
	Starting     State = "starting"
	Ready        State = "ready"
	Maintenance  State = "maintenance"
	Unconfigured State = "unconfigured"
	Stopping     State = "stopping"
)

// Status is what `tandem status --json` prints.
type Status struct {
	State State `json:"state"`
	// Reason explains maintenance or unconfigured, verbatim (a bad site
	// config gives its file:line:col messages, one per line).
	Reason  string `json:"reason,omitempty"`
	Node    string `json:"node,omitempty"`
	Pair    string `json:"pair,omitempty"`
	Version string `json:"version"`
	Slot    string `json:"slot"`
	Board   string `json:"board,omitempty"`
	// Lab: the lab's guest agent runs on this head (a QEMU lab image).
	Lab bool `json:"lab,omitempty"`
	// Config is where the site config was read from.
	Config string `json:"config,omitempty"`
	// UptimeMS counts from PID 1's start; ReadyMS is when it became ready.
	UptimeMS int64 `json:"uptime_ms"`
	ReadyMS  int64 `json:"ready_ms,omitempty"`
	// RSSKiB is PID 1's resident memory (VmRSS).
	RSSKiB   int64     `json:"rss_kib,omitempty"`
	Services []Service `json:"services"`
	Steps    []Step    `json:"steps"`
	// Role is this head's part in the pair: active or standby; empty
	// before the services run.
	Role string `json:"role,omitempty"`
	// RAID and DRBD are the health of this head's storage.
	RAID *RAID `json:"raid,omitempty"`
	DRBD *DRBD `json:"drbd,omitempty"`
	// Peer is the other head's status as it answered over the control
	// channel (its own Peer left out); PeerError says why it is missing.
	Peer      *Status `json:"peer,omitempty"`
	PeerError string  `json:"peer_error,omitempty"`
	// HA is the HA supervisor's view: quorum, heartbeat paths, the vote
	// and the last failovers; nil before it runs.
	HA *HA `json:"ha,omitempty"`
}

// RAID is the local RAID10 array.
type RAID struct {
	Device   string       `json:"device"`
	UUID     string       `json:"uuid,omitempty"`
	State    string       `json:"state"`            // md array_state: clean, active, ...
	Health   string       `json:"health,omitempty"` // "[4/3] [UU_U]"
	Degraded int          `json:"degraded"`         // members missing or failed
	Disks    int          `json:"disks"`
	Sync     string       `json:"sync,omitempty"` // a resync or rebuild and its progress
	Members  []RAIDMember `json:"members,omitempty"`
}

// RAIDMember is one member disk of the array.
type RAIDMember struct {
	ID     string `json:"id,omitempty"` // as site.toml names it
	Kernel string `json:"kernel"`
	State  string `json:"state"`
}

// DRBD is the replicated device as DRBD reports it.
type DRBD struct {
	Resource    string  `json:"resource"`
	Role        string  `json:"role"`
	PeerRole    string  `json:"peer_role,omitempty"`
	Connection  string  `json:"connection"`
	Replication string  `json:"replication,omitempty"`
	Disk        string  `json:"disk"`
	PeerDisk    string  `json:"peer_disk,omitempty"`
	SyncPercent float64 `json:"sync_percent,omitempty"`
}

// Service is one node of the service graph.
type Service struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Role     string `json:"role,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Error    string `json:"error,omitempty"`
	Restarts int    `json:"restarts,omitempty"`
	// FailCount is the failures within ha.failure_timeout_seconds; at
	// ha.migration_threshold the layer escalates (Escalated): restarts
	// stop and the head fails over if its peer can take the service.
	FailCount int       `json:"fail_count,omitempty"`
	Escalated bool      `json:"escalated,omitempty"`
	Since     time.Time `json:"since,omitzero"`
}

// Step is the outcome of one boot step.
type Step struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Optional bool   `json:"optional,omitempty"`
	MS       int64  `json:"ms"`
	Error    string `json:"error,omitempty"`
}

// Ops a client may ask for.
const (
	OpStatus     = "status"
	OpPoweroff   = "poweroff"
	OpReboot     = "reboot"
	OpSwitchover = "switchover"
	// The operator's modes of this head (tandem maintenance, tandem standby).
	OpMaintenanceOn  = "maintenance-on"
	OpMaintenanceOff = "maintenance-off"
	OpStandbyOn      = "standby-on"
	OpStandbyOff     = "standby-off"
	// OpCleanup forgets a layer's failures and escalation (Request.Layer;
	// "" for every layer), as Pacemaker's resource cleanup does.
	OpCleanup = "cleanup"
	// OpFencePeer is DRBD's fence-peer handler asking, for a primary that
	// lost the peer with its I/O frozen, whether the peer is now outdated
	// (Response.Message: a drbd verdict word).
	OpFencePeer = "fence-peer"
)

// Request is one client request (one per connection).
type Request struct {
	Op string `json:"op"`
	// Force: standby-on even when the peer cannot take the service over,
	// so that the service stops.
	Force bool `json:"force,omitempty"`
	// Layer names the layer of OpCleanup.
	Layer string `json:"layer,omitempty"`
}

// Response answers a Request.
type Response struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Message string  `json:"message,omitempty"`
	Status  *Status `json:"status,omitempty"`
}

// Handler is what the server asks PID 1.
type Handler interface {
	Status() Status
	// Shutdown starts a poweroff or reboot and returns at once.
	Shutdown(op string) error
	// Switchover moves the active role to the other head and says what
	// it did; it returns when the move is done or refused.
	Switchover(ctx context.Context) (string, error)
	// Operate carries out an operator's request (OpMaintenance*,
	// OpStandby*, OpCleanup) and says what it did; standby-on on the
	// active head returns once the service has moved or stopped.
	Operate(ctx context.Context, req Request) (string, error)
}

// SwitchoverBudget bounds a switchover: stopping one head's stack and
// starting the other's.
const SwitchoverBudget = 5 * time.Minute

// maxRequest bounds a request: they are a few bytes.
const maxRequest = 4096

// Listen creates the socket (replacing a stale one) with mode 0600.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve answers requests until l is closed. Each connection gets a few
// seconds: a stuck client must not pile up goroutines in PID 1.
func Serve(l net.Listener, h Handler, log *slog.Logger) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			log.Warn("status: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go serveConn(c, h, log)
	}
}

func serveConn(c net.Conn, h Handler, log *slog.Logger) {
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			log.Error("status: handler panic", "panic", fmt.Sprint(r))
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, maxRequest)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return
	}
	var req Request
	var resp Response
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "bad request: " + err.Error()
	} else {
		switch req.Op {
		case OpStatus, "":
			st := h.Status()
			resp.OK, resp.Status = true, &st
		case OpPoweroff, OpReboot:
			if err := h.Shutdown(req.Op); err != nil {
				resp.Error = err.Error()
			} else {
				resp.OK = true
				log.Info("status: " + req.Op + " requested over the status socket")
			}
		case OpSwitchover, OpMaintenanceOn, OpMaintenanceOff, OpStandbyOn, OpStandbyOff, OpCleanup, OpFencePeer:
			log.Info("status: "+req.Op+" requested over the status socket", "force", req.Force)
			ctx, cancel := context.WithTimeout(context.Background(), SwitchoverBudget)
			var msg string
			var err error
			if req.Op == OpSwitchover {
				msg, err = h.Switchover(ctx)
			} else {
				msg, err = h.Operate(ctx, req)
			}
			cancel()
			if err != nil {
				resp.Error = err.Error()
			} else {
				resp.OK, resp.Message = true, msg
			}
		default:
			resp.Error = fmt.Sprintf("unknown op %q", req.Op)
		}
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	json.NewEncoder(c).Encode(resp)
}

// Call sends one request to the socket at path and returns the response.
func Call(ctx context.Context, path, op string) (*Response, error) {
	return Send(ctx, path, Request{Op: op})
}

// Send is Call with a whole request.
func Send(ctx context.Context, path string, req Request) (*Response, error) {
	op := req.Op
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to PID 1 (%s): %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, fmt.Errorf("send %s: %w", op, err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("read answer to %s: %w", op, err)
	}
	if !resp.OK {
		return &resp, fmt.Errorf("%s: %s", op, resp.Error)
	}
	return &resp, nil
}

// Format renders st for a person, crm_mon-like.
func Format(w io.Writer, st *Status) error {
	var b strings.Builder
	state := strings.ToUpper(string(st.State))
	fmt.Fprintf(&b, "node     %s", orDash(st.Node))
	if st.Role != "" {
		fmt.Fprintf(&b, " (%s)", st.Role)
	}
	b.WriteString("\n")
	if st.Pair != "" {
		fmt.Fprintf(&b, "pair     %s\n", st.Pair)
	}
	fmt.Fprintf(&b, "state    %s\n", state)
	if st.Reason != "" {
		lines := strings.Split(strings.TrimRight(st.Reason, "\n"), "\n")
		fmt.Fprintf(&b, "reason   %s\n", lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(&b, "         %s\n", l)
		}
	}
	fmt.Fprintf(&b, "version  %s (slot %s, board %s)\n", st.Version, st.Slot, orDash(st.Board))
	if st.Lab {
		b.WriteString("image    LAB IMAGE: the lab's guest agent runs here; never on hardware\n")
	}
	if st.Config != "" {
		fmt.Fprintf(&b, "config   %s\n", st.Config)
	}
	up := (time.Duration(st.UptimeMS) * time.Millisecond).Round(time.Second)
	fmt.Fprintf(&b, "uptime   %s", up)
	if st.ReadyMS > 0 {
		fmt.Fprintf(&b, " (ready after %d ms)", st.ReadyMS)
	}
	if st.RSSKiB > 0 {
		fmt.Fprintf(&b, ", PID 1 RSS %.1f MiB", float64(st.RSSKiB)/1024)
	}
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := formatPair(w, st); err != nil {
		return err
	}
	if st.HA != nil {
		if err := formatHA(w, st); err != nil {
			return err
		}
	}
	if len(st.Services) > 0 {
		if err := formatServices(w, st); err != nil {
			return err
		}
	}
	var failed []Step
	for _, s := range st.Steps {
		if !s.OK {
			failed = append(failed, s)
		}
	}
	if len(failed) > 0 {
		fmt.Fprintln(w, "\nfailed boot steps")
		for _, s := range failed {
			opt := ""
			if s.Optional {
				opt = " (optional)"
			}
			fmt.Fprintf(w, "  %s%s: %s\n", s.Name, opt, s.Error)
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatPair prints both heads side by side: role, state, DRBD, RAID.
func formatPair(w io.Writer, st *Status) error {
	if st.DRBD == nil && st.RAID == nil && st.Peer == nil && st.PeerError == "" {
		return nil
	}
	fmt.Fprintln(w, "\nheads")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  node\trole\tstate\tdrbd (role connection disk/peer)\traid\n")
	row := func(s *Status, mark string) {
		fmt.Fprintf(tw, "  %s%s\t%s\t%s\t%s\t%s\n", orDash(s.Node), mark, orDash(s.Role), s.State, drbdLine(s.DRBD), raidLine(s.RAID))
	}
	row(st, " (this head)")
	if st.Peer != nil {
		row(st.Peer, "")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.PeerError != "" {
		fmt.Fprintf(w, "  peer: unreachable: %s\n", st.PeerError)
	}
	return nil
}

func drbdLine(d *DRBD) string {
	if d == nil {
		return "-"
	}
	out := fmt.Sprintf("%s %s %s/%s", orDash(d.Role), orDash(d.Connection), orDash(d.Disk), orDash(d.PeerDisk))
	if strings.HasPrefix(d.Replication, "Sync") || strings.HasPrefix(d.Replication, "PausedSync") {
		out += fmt.Sprintf(" %s %.1f%%", d.Replication, d.SyncPercent)
	}
	return out
}

func raidLine(r *RAID) string {
	if r == nil {
		return "-"
	}
	out := strings.TrimSpace(r.State + " " + r.Health)
	if r.Degraded > 0 {
		out += fmt.Sprintf(" DEGRADED (%d of %d missing or failed)", r.Degraded, r.Disks)
	}
	if r.Sync != "" {
		out += " " + r.Sync
	}
	return out
}

// formatServices prints each layer, where it runs and its state on
// both heads.
func formatServices(w io.Writer, st *Status) error {
	peer := map[string]Service{}
	head := "  layer\trole\t" + orDash(st.Node)
	if st.Peer != nil {
		for _, s := range st.Peer.Services {
			peer[s.Name] = s
		}
		head += "\t" + orDash(st.Peer.Node)
	}
	fmt.Fprintln(w, "\nservices (start order)")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, head+"\tdetail (this head)")
	for _, s := range st.Services {
		extra := s.Detail
		if s.Error != "" {
			extra = strings.TrimSpace(extra + " error: " + s.Error)
		}
		if s.Restarts > 0 {
			extra = strings.TrimSpace(fmt.Sprintf("%s restarts=%d", extra, s.Restarts))
		}
		if s.FailCount > 0 {
			extra = strings.TrimSpace(fmt.Sprintf("%s fail-count=%d", extra, s.FailCount))
		}
		if s.Escalated {
			extra = strings.TrimSpace(extra + " ESCALATED (tandem cleanup " + s.Name + " clears it)")
		}
		if st.Peer != nil {
			ps := orDash(peer[s.Name].State)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Name, orDash(s.Role), s.State, ps, extra)
		} else {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Name, orDash(s.Role), s.State, extra)
		}
	}
	return tw.Flush()
}
