package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// HA is the HA supervisor's view from one head: quorum, the heartbeat
// paths, the tiebreaker vote, the last decision and the last failovers.
type HA struct {
	// At is when this view was taken (ages below are relative to it).
	At time.Time `json:"at"`
	// Quorum: the peer is seen (contact both ways) or this head holds the
	// tiebreaker vote. QuorumBy says which ("peer", "witness vote", ...).
	Quorum   bool   `json:"quorum"`
	QuorumBy string `json:"quorum_by,omitempty"`
	// Mode is the operator's mode: normal, maintenance or standby.
	Mode string `json:"mode"`
	// Switchover: this head is handing the service to its peer.
	Switchover bool `json:"switchover,omitempty"`
	// Escalated names the layers whose failures keep this head from
	// serving (past their migration threshold).
	Escalated []string `json:"escalated,omitempty"`
	// Announce is the role this head announces in its heartbeats.
	Announce string `json:"announce"`
	// Epoch is the generation of this head's data: raised when it takes
	// over without its peer; the higher epoch holds the newer data.
	Epoch     uint64 `json:"epoch"`
	Preferred bool   `json:"preferred"`
	// Decision is the HA loop's latest decision; Since is when it (or its
	// kind) was first made.
	Decision Decision `json:"decision"`
	// Alert is the latest alert while it still holds.
	Alert     string     `json:"alert,omitempty"`
	Timing    Timing     `json:"timing"`
	Heartbeat Heartbeat  `json:"heartbeat"`
	Vote      Vote       `json:"vote"`
	Failovers []Failover `json:"failovers,omitempty"` // newest first
}

// Decision is one outcome of the decision logic (ha/decide).
type Decision struct {
	Action string    `json:"action"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since,omitzero"`
}

// Timing is the pair's HA timing, in ms.
type Timing struct {
	IntervalMS  int64 `json:"interval_ms"`
	DeadTimeMS  int64 `json:"dead_time_ms"`
	StopBoundMS int64 `json:"stop_bound_ms"`
	WatchdogMS  int64 `json:"watchdog_ms"`
	MarginMS    int64 `json:"margin_ms"`
	// TakeoverDelayMS is how long a head waits, with the vote and without
	// the peer, before it takes over.
	TakeoverDelayMS int64 `json:"takeover_delay_ms"`
	// AddressDelayMS is how long after that the service address may come
	// up on the new head.
	AddressDelayMS int64 `json:"address_delay_ms"`
}

// Heartbeat is the membership layer's view of the peer.
type Heartbeat struct {
	// Alive: heard from the peer within the dead time; HearsUs: the peer
	// echoes our packets; Seen = both (contact both ways).
	Alive   bool            `json:"alive"`
	HearsUs bool            `json:"hears_us"`
	Seen    bool            `json:"seen"`
	RTTMS   float64         `json:"rtt_ms,omitempty"`
	Peer    *HeartbeatPeer  `json:"peer,omitempty"`
	Paths   []HeartbeatPath `json:"paths"`
	Dropped HeartbeatDrops  `json:"dropped"`
}

// HeartbeatPeer is what the peer announced in its newest heartbeat.
type HeartbeatPeer struct {
	Node      string    `json:"node"`
	Role      string    `json:"role"`
	Disk      string    `json:"disk"`
	HoldsVote bool      `json:"holds_vote"`
	Epoch     uint64    `json:"epoch"`
	Boots     int       `json:"boots"` // boots of the peer seen since this head started
	LastHeard time.Time `json:"last_heard,omitzero"`
	// LongestGapMS: the longest this boot of the peer went unheard on
	// every path while alive; compare with the dead time.
	LongestGapMS float64 `json:"longest_gap_ms,omitempty"`
}

// HeartbeatPath is one path's health.
type HeartbeatPath struct {
	Name       string    `json:"name"`
	Local      string    `json:"local"`
	Peer       string    `json:"peer"`
	Alive      bool      `json:"alive"`
	LastHeard  time.Time `json:"last_heard,omitzero"`
	Received   uint64    `json:"received"`
	Sent       uint64    `json:"sent"`
	SendErrors uint64    `json:"send_errors"`
	Loss       float64   `json:"loss"` // of the peer's last 64 rounds, 0 to 1
	RTTMS      float64   `json:"rtt_ms,omitempty"`
	// LongestGapMS: the longest time between two packets on this path
	// within the peer's current boot.
	LongestGapMS float64 `json:"longest_gap_ms,omitempty"`
}

// HeartbeatDrops count the packets refused, by reason.
type HeartbeatDrops struct {
	Forged    uint64 `json:"forged"`
	Replayed  uint64 `json:"replayed"`
	WrongPair uint64 `json:"wrong_pair"`
	Malformed uint64 `json:"malformed"`
	Foreign   uint64 `json:"foreign"`
	Unproven  uint64 `json:"unproven"`
	// Stale: authentic, but not provably sent within the dead time
	// (held back and released late).
	Stale uint64 `json:"stale"`
}

// Vote is this head's view of the tiebreaker.
type Vote struct {
	Tiebreaker string `json:"tiebreaker"` // "witness" or "ping target"
	Address    string `json:"address"`
	// Want: the decision asks for the vote; Held: this head counts on it.
	Want        bool      `json:"want"`
	Held        bool      `json:"held"`
	ExpiresInMS int64     `json:"expires_in_ms,omitempty"`
	Holder      string    `json:"holder,omitempty"`
	Last        string    `json:"last,omitempty"` // the witness's last answer
	LastAt      time.Time `json:"last_at,omitzero"`
	Error       string    `json:"error,omitempty"` // why the last exchange failed
	Dropped     uint64    `json:"dropped,omitempty"`
	// Writer: the witness records this head's data as the only current
	// copy (it wrote while DRBD was disconnected); Outdated: it records
	// the peer's, and this head is not granted the vote.
	Writer   bool `json:"writer,omitempty"`
	Outdated bool `json:"outdated,omitempty"`
}

// Failover is one change of this head's role, with its steps.
type Failover struct {
	// Kind: takeover (from a silent peer), failover (the peer handed over
	// or could not serve), start, switchover, quorum lost, ...
	Kind   string    `json:"kind"`
	Role   string    `json:"role"` // what this head became: active or standby
	Reason string    `json:"reason"`
	Start  time.Time `json:"start"`
	// TotalMS runs from Start to the end of the last step.
	TotalMS int64          `json:"total_ms"`
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Steps   []FailoverStep `json:"steps"`
}

// FailoverStep is one step of a failover: detect, fence, promote, mount,
// nfsd up, VIP up, ...
type FailoverStep struct {
	Name    string `json:"name"`
	StartMS int64  `json:"start_ms"` // from the failover's Start
	MS      int64  `json:"ms"`
	Error   string `json:"error,omitempty"`
}

// formatHA prints quorum, the heartbeat paths, the vote and the last
// failovers of this head, and the peer's quorum in one line.
func formatHA(w io.Writer, st *Status) error {
	h := st.HA
	var b strings.Builder
	fmt.Fprintf(&b, "\nha\n")
	q := "NO QUORUM"
	if h.Quorum {
		q = "quorum (" + h.QuorumBy + ")"
	}
	fmt.Fprintf(&b, "  %s: %s, epoch %d, announces %s, mode %s", orDash(st.Node), q, h.Epoch, orDash(h.Announce), orDash(h.Mode))
	if h.Switchover {
		b.WriteString(", handing over")
	}
	if len(h.Escalated) > 0 {
		fmt.Fprintf(&b, ", escalated: %s", strings.Join(h.Escalated, " "))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  decision: %s: %s", h.Decision.Action, h.Decision.Reason)
	if !h.Decision.Since.IsZero() {
		fmt.Fprintf(&b, " (%s)", ago(h.At, h.Decision.Since))
	}
	b.WriteString("\n")
	if h.Alert != "" && h.Alert != h.Decision.Reason {
		fmt.Fprintf(&b, "  ALERT: %s\n", h.Alert)
	}
	if p := st.Peer; p != nil && p.HA != nil {
		pq := "NO QUORUM"
		if p.HA.Quorum {
			pq = "quorum (" + p.HA.QuorumBy + ")"
		}
		fmt.Fprintf(&b, "  %s: %s, epoch %d, announces %s; decision: %s: %s\n", orDash(p.Node), pq, p.HA.Epoch, orDash(p.HA.Announce), p.HA.Decision.Action, p.HA.Decision.Reason)
	}
	t := h.Timing
	fmt.Fprintf(&b, "  timing: interval %s, dead time %s, stop bound %s, watchdog %s; takeover after %s without the peer, service address after %s\n",
		ms(t.IntervalMS), ms(t.DeadTimeMS), ms(t.StopBoundMS), ms(t.WatchdogMS), ms(t.TakeoverDelayMS), ms(t.AddressDelayMS))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}

	hb := h.Heartbeat
	peer := "peer"
	if hb.Peer != nil {
		said := fmt.Sprintf("%s, disk %s, epoch %d", hb.Peer.Role, orDash(hb.Peer.Disk), hb.Peer.Epoch)
		if hb.Peer.HoldsVote {
			said += ", holds the vote"
		}
		peer = hb.Peer.Node + ": " + said
		if !hb.Alive {
			peer = hb.Peer.Node + " (last announced: " + said + ")"
		}
	}
	fmt.Fprintf(w, "\nheartbeat  %s %s\n", seenWord(hb), peer)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  path\tlocal\tpeer\tstate\tlast heard\trx\ttx\terr\tloss\trtt\tlongest gap")
	for _, p := range hb.Paths {
		state := "down"
		if p.Alive {
			state = "up"
		}
		last := "never"
		if !p.LastHeard.IsZero() {
			last = ago(h.At, p.LastHeard)
		}
		rtt := "-"
		if p.RTTMS > 0 {
			rtt = fmt.Sprintf("%.1fms", p.RTTMS)
		}
		gap := "-"
		if p.LongestGapMS > 0 {
			gap = fmt.Sprintf("%.2fs", p.LongestGapMS/1000)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%.0f%%\t%s\t%s\n", p.Name, p.Local, p.Peer, state, last, p.Received, p.Sent, p.SendErrors, 100*p.Loss, rtt, gap)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	d := hb.Dropped
	fmt.Fprintf(w, "  dropped: forged %d, replayed %d, stale %d, wrong pair %d, malformed %d, foreign %d, unproven %d\n",
		d.Forged, d.Replayed, d.Stale, d.WrongPair, d.Malformed, d.Foreign, d.Unproven)

	v := h.Vote
	line := fmt.Sprintf("\n%-10s %s: ", v.Tiebreaker, orDash(v.Address))
	switch {
	case v.Held:
		line += fmt.Sprintf("vote HELD by this head, %s left", ms(v.ExpiresInMS))
	case v.Holder != "":
		line += "vote held by " + v.Holder
	default:
		line += "vote not held"
	}
	if v.Want {
		line += "; wanted"
	}
	switch {
	case v.Writer:
		line += "; records this head as the only current copy until the peer resyncs"
	case v.Outdated:
		line += "; records this head's data as OUTDATED (the peer wrote alone)"
	}
	if v.Last != "" {
		line += fmt.Sprintf("; last answer %s %s", v.Last, ago(h.At, v.LastAt))
	}
	if v.Error != "" {
		line += "; " + v.Error
	}
	if v.Dropped > 0 {
		// Answers that were not authentic or answered no request of
		// this head: a replay or reflection on the network.
		line += fmt.Sprintf("; %d answers dropped", v.Dropped)
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return err
	}

	if len(h.Failovers) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nfailovers (newest first)")
	for _, f := range h.Failovers {
		res := "ok"
		if !f.OK {
			res = "FAILED: " + f.Error
		}
		fmt.Fprintf(w, "  %s %s → %s in %s, %s: %s\n", f.Start.Format("2006-01-02 15:04:05.000"), f.Kind, f.Role, ms(f.TotalMS), res, f.Reason)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, s := range f.Steps {
			e := ""
			if s.Error != "" {
				e = "\t" + s.Error
			}
			fmt.Fprintf(tw, "    %s\t+%s\t%s%s\n", s.Name, ms(s.StartMS), dur(s.MS), e)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func seenWord(hb Heartbeat) string {
	switch {
	case hb.Seen:
		return "SEEN"
	case hb.Alive:
		return "HEARD (one way)"
	}
	return "SILENT"
}

// ms renders a duration in ms as seconds with a tenth ("1.5s").
func ms(v int64) string { return fmt.Sprintf("%.1fs", float64(v)/1000) }

// dur renders a step's length: ms below a second.
func dur(v int64) string {
	if v < 1000 {
		return fmt.Sprintf("%dms", v)
	}
	return ms(v)
}

// ago renders how long before now t was.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return fmt.Sprintf("%.1fs ago", d.Seconds())
}
