// Package witness is the pair's tiebreaker: `tandem witness` runs Server on
// a third host, and each head asks it for the vote with Client.
//
// The witness has one vote and leases it to one head at a time. The holder
// renews it; another head gets it only after the lease has run out
// unrenewed (or the holder released it). Requests and replies are single
// UDP datagrams authenticated with the witness key (HMAC-SHA256), a
// sub-key of the pair key and the only key the witness host holds; a reply
// echoes the request's random nonce, so an old grant cannot be replayed to
// a head.
//
// Freshness. A request acts only if it echoes this witness's boot ID and
// a challenge the witness handed that node recently (single use, see
// proveLocked); anything else, such as a head's first request or one
// recorded and replayed by an attacker, gets a "challenge" reply and
// changes nothing, and the head resends at once with the new challenge.
// So a recorded request can act at most once, within a few seconds of
// being sent, and never after a later request of its head or a witness
// restart. Release and clear-writer act only for the client boot that
// holds the vote or is bound to the writer record.
//
// No clock is shared. The reply carries the lease as a duration; the
// client counts it from the moment it SENT the request, on its own
// monotonic clock, minus a safety margin. The witness counts it from when
// it received the request, which is later, so a head's view of its lease
// always ends before the witness's: when the witness grants the vote to the
// other head, the old holder has already stopped counting on it.
//
// Why UDP and not TCP: a request is one datagram and so is its answer, so
// there is nothing for a connection to carry. UDP leaves every timeout to
// the client (TCP would add its own retransmission and connect timers,
// seconds long, in the middle of a failover), keeps no per-head
// connection state on the witness that a restart or a half-open
// connection could confuse, and each message is authenticated and bound to
// its request on its own anyway. Lost datagrams are retried by the client
// with a fresh nonce.
//
// The writer marker. A holder that writes while its peer is disconnected
// makes the peer's data stale; before it does, it asks the witness to
// record it as the writer (opOutdatePeer). From then on the witness grants
// the vote only to the writer, until the writer reports its peer resynced
// (opClearWriter): the other head must never take over with stale data.
//
// Restart. The witness persists only the writer marker (Config.StateFile),
// synced to disk before it answers, and refuses to start on a state file
// it cannot read, or that is missing: the file is created once, on
// request (InitState), so a wiped witness never passes for a new one. Leases are not persisted: after a start it keeps a quiet
// period of one lease: a lease its previous run granted may still be
// running, so it grants nobody new during that time. A head that still
// holds a lease by its own (conservative) clock says so in its request,
// and the witness reinstates it as the holder: at most one head can
// truthfully claim that, because leases never overlapped. So a witness
// restart never takes the vote from an active head, and never hands it to
// the other one early.
package witness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"tandem.dev/tandem/ha"
)

// DefaultLease is the lease when none is configured: the default
// heartbeat dead time (2.5 s), so a silent head's vote is free by the
// time its peer notices the silence.
const DefaultLease = 2500 * time.Millisecond

// Config configures a Server.
type Config struct {
	Pair string
	Key  []byte // the witness key (Key, FromSite), never the pair key
	// Lease is how long one grant lasts; the holder renews well within
	// it. About the heartbeat dead time. Zero: DefaultLease.
	Lease time.Duration
	// Nodes, if set, are the only node names that may ask (the two heads
	// of the site config).
	Nodes []string
	// Quiet is the quiet period after start (see the package comment).
	// Zero: Lease. Set it to the longest lease the previous run may have
	// granted if --lease was lowered across a restart. Negative: none
	// (only for tests and a witness that has never granted anything).
	Quiet time.Duration
	// StateFile is where the writer marker is kept (see loadState); it
	// must exist unless InitState. Empty: the marker is not persisted and
	// a restart forgets it; only for tests.
	StateFile string
	// InitState creates StateFile with no marker, once: refused if it
	// exists (--init). Without it a missing file is an error, so that a
	// wiped witness cannot pass for a new one.
	InitState bool
	// ForgetWriter clears a recorded marker at start: the operator's
	// override when the writer is gone for good.
	ForgetWriter bool
	Log          *slog.Logger     // nil: slog.Default()
	Now          func() time.Time // nil: time.Now; tests drive a fake clock
}

// Counters count requests by outcome.
type Counters struct {
	Grants    uint64 `json:"grants"`   // new holder
	Renewals  uint64 `json:"renewals"` // holder renewed
	Reinstate uint64 `json:"reinstated"`
	Denials   uint64 `json:"denials"`
	// Outdated counts acquires refused because another head is recorded
	// as the only one with current data (not counted in Denials).
	Outdated uint64 `json:"outdated"`
	Releases uint64 `json:"releases"`
	Expiries uint64 `json:"expiries"` // leases that ran out unrenewed
	Forged   uint64 `json:"forged"`
	// Challenged counts requests answered with a challenge that are
	// normal: a head's first contact, a witness restart, an expired
	// challenge, a resend whose first answer was lost. Replayed counts
	// those that only an attacker sends: an exact repeat, or a challenge
	// this witness never issued or has retired.
	Challenged uint64 `json:"challenged"`
	Replayed   uint64 `json:"replayed"`
	WrongPair  uint64 `json:"wrong_pair"`
	Malformed  uint64 `json:"malformed"`
	Unknown    uint64 `json:"unknown_node"`
}

// ServerStatus is the witness's state, JSON-friendly.
type ServerStatus struct {
	Boot       string        `json:"boot"`
	Holder     string        `json:"holder,omitempty"`
	Remaining  time.Duration `json:"remaining_ns,omitempty"`
	HeldSince  time.Time     `json:"held_since,omitzero"`
	Quiet      bool          `json:"quiet"`
	Lease      time.Duration `json:"lease_ns"`
	Counters   Counters      `json:"counters"`
	StartedAt  time.Time     `json:"started_at"`
	QuietUntil time.Time     `json:"quiet_until"`
	// Writer is the head recorded as the only one with current data.
	Writer      string    `json:"writer,omitempty"`
	WriterSince time.Time `json:"writer_since,omitzero"`
}

// Challenges: how many a node may have outstanding, and how many spent
// ones are remembered to tell a resend from a replay.
const (
	maxChallenges = 4
	spentKept     = 8
	// maxChallengeTTL caps a challenge's life (it is the lease if
	// shorter): how long a request may be delayed and still act.
	maxChallengeTTL = 10 * time.Second
)

type challenge struct {
	id ID
	at time.Time // issued
}

// nodeState is what the witness keeps per head for freshness.
type nodeState struct {
	out   []challenge      // outstanding, oldest first
	spent [spentKept][2]ID // ring of (challenge, nonce of the request that spent it)
	next  int
}

// Server is the witness. Its methods are safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	boot  ID
	start time.Time
	quiet time.Time // no new grants before this

	ttl time.Duration // a challenge's life

	mu         sync.Mutex
	holder     string
	holderBoot ID // the holder's client boot: only it may release
	expiry     time.Time
	heldSince  time.Time
	nodes      map[string]*nodeState
	counters   Counters
	denied     map[string]string // node -> holder at its last denial, to log changes only
	outdated   map[string]string // node -> writer at its last outdated denial, likewise
	writer     writerState
	// rebindFailed: the boot the writer record could not be bound to
	// last (logged once).
	rebindFailed ID
	// The refusal counts at the last summary, and when it was logged.
	refusedLogged [6]uint64
	refusedAt     time.Time
}

// NewServer checks cfg and starts the quiet period.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	var errs []error
	if cfg.Pair == "" || len(cfg.Pair) > ha.MaxNameLen {
		errs = append(errs, fmt.Errorf("pair name %q: 1 to %d bytes", cfg.Pair, ha.MaxNameLen))
	}
	if len(cfg.Key) < ha.MinKeyBytes {
		errs = append(errs, fmt.Errorf("witness key is %d bytes, need at least %d", len(cfg.Key), ha.MinKeyBytes))
	}
	if cfg.Lease < 0 {
		errs = append(errs, fmt.Errorf("lease %v must be positive", cfg.Lease))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	if cfg.Quiet == 0 {
		cfg.Quiet = cfg.Lease
	}
	s := &Server{cfg: cfg, log: cfg.Log, now: cfg.Now, ttl: min(cfg.Lease, maxChallengeTTL),
		nodes: map[string]*nodeState{}, denied: map[string]string{}, outdated: map[string]string{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "witness")
	if s.now == nil {
		s.now = time.Now
	}
	if _, err := rand.Read(s.boot[:]); err != nil {
		return nil, fmt.Errorf("witness: boot ID: %w", err)
	}
	s.start = s.now()
	s.quiet = s.start.Add(max(cfg.Quiet, 0))
	if err := s.loadWriter(); err != nil {
		return nil, err // names the state file
	}
	return s, nil
}

// loadWriter reads the marker, logs it and applies ForgetWriter.
func (s *Server) loadWriter() error {
	s.writer = writerState{Pair: s.cfg.Pair}
	if s.cfg.StateFile == "" {
		if s.cfg.InitState {
			return errors.New("witness: --init needs a state file")
		}
		return nil
	}
	st, err := loadState(s.cfg.StateFile, s.cfg.Pair, s.cfg.InitState)
	if err != nil {
		return err
	}
	s.writer = st
	if s.cfg.InitState {
		s.log.Info("witness: state file created: no head recorded as the only one with current data", "file", s.cfg.StateFile)
	}
	w := st.Writer
	switch {
	case w == "":
		if s.cfg.ForgetWriter {
			s.log.Info("witness: no writer marker to forget", "file", s.cfg.StateFile)
		}
		return nil
	case s.cfg.ForgetWriter:
		s.log.Warn(fmt.Sprintf("witness: forgetting that only %s's data is current (since %s): %s's writes not replicated to the other head may be lost if the other head is made active", w, st.Since.Format(time.RFC3339), w),
			"writer", w, "file", s.cfg.StateFile)
		return s.setWriterLocked("", ID{})
	}
	s.log.Warn(fmt.Sprintf("witness: only %s's data is current (since %s): the other head is not granted the vote until %s reports it resynced", w, st.Since.Format(time.RFC3339), w),
		"writer", w, "file", s.cfg.StateFile)
	if len(s.cfg.Nodes) > 0 && !slices.Contains(s.cfg.Nodes, w) {
		s.log.Warn("witness: the recorded writer is not a node of this pair: only --forget-writer clears the marker", "writer", w, "nodes", s.cfg.Nodes)
	}
	return nil
}

// setWriterLocked records (or, with "", clears) the writer and the client
// boot bound to the record, persisted first: on a write error nothing
// changes. Rebinding the same writer keeps Since.
func (s *Server) setWriterLocked(node string, boot ID) error {
	st := writerState{Pair: s.cfg.Pair, Writer: node}
	switch {
	case node != "" && node == s.writer.Writer:
		st.Since, st.Boot = s.writer.Since, boot
	case node != "":
		st.Since, st.Boot = s.now().UTC(), boot
	}
	if err := saveState(s.cfg.StateFile, st); err != nil {
		return err
	}
	s.writer = st
	clear(s.outdated) // a new marker is worth a warning again
	return nil
}

// ListenAndServe listens on addr (host:port, UDP) and serves until ctx
// ends. With no host it serves IPv4 and IPv6 on two sockets, so that each
// answers from the address a request came to.
func ListenAndServe(ctx context.Context, addr string, cfg Config) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("witness: listen address %q: %w", addr, err)
	}
	// Bind first: a witness that cannot serve must not have created its
	// state file (InitState) on the way.
	var conns []net.PacketConn
	if host == "" {
		for _, nw := range []string{"udp4", "udp6"} {
			c, err := net.ListenPacket(nw, net.JoinHostPort("", port))
			if err != nil && nw == "udp4" {
				return fmt.Errorf("witness: %w", err)
			}
			if err == nil { // a host without IPv6 serves IPv4 alone
				conns = append(conns, c)
			}
		}
	} else {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("witness: %w", err)
		}
		conns = append(conns, c)
	}
	s, err := NewServer(cfg)
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return err
	}
	if len(conns) == 1 {
		return s.Serve(ctx, conns[0])
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- serveDatagrams(ctx, conns[1], s.Handle, s.log) }()
	err = s.Serve(ctx, conns[0])
	cancel()
	conns[1].Close()
	return errors.Join(err, <-errc)
}

// Serve answers requests on conn until ctx ends; it closes conn and
// returns nil then, or the read error that stopped it.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	s.log.Info("witness: serving", "addr", conn.LocalAddr().String(), "pair", s.cfg.Pair,
		"lease", s.cfg.Lease, "quiet_until", s.quiet.Format(time.RFC3339Nano), "boot", hex.EncodeToString(s.boot[:]))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// Expiries are logged when they happen, not only at the next request.
	go func() {
		t := time.NewTicker(min(s.cfg.Lease/4, time.Second))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.mu.Lock()
				now := s.now()
				s.sweepLocked(now)
				s.logRefusedLocked(now)
				s.mu.Unlock()
			}
		}
	}()
	return serveDatagrams(ctx, conn, s.Handle, s.log)
}

// serveDatagrams answers each datagram on conn with handle's reply, from
// the address the request was sent to: a witness host with two addresses
// on the heads' subnet would otherwise answer from its primary one, and
// a head, whose socket is connected to the witness address, never sees
// that answer.
func serveDatagrams(ctx context.Context, conn net.PacketConn, handle func([]byte, string) []byte, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	rw := newReplier(conn)
	buf := make([]byte, MaxMessage+1)
	for {
		n, from, to, err := rw.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("witness: %w", err)
			}
			log.Debug("witness: read", "err", err)
			continue
		}
		if out := handle(buf[:n], from.String()); out != nil {
			if err := rw.write(out, from, to); err != nil {
				log.Debug("witness: reply", "to", from.String(), "err", err)
			}
		}
	}
}

// replier reads a datagram with the address it was sent to and answers
// from that address (IP_PKTINFO, IPV6_PKTINFO), where the socket allows.
type replier struct {
	conn net.PacketConn
	v4   *ipv4.PacketConn
	v6   *ipv6.PacketConn
}

func newReplier(conn net.PacketConn) *replier {
	r := &replier{conn: conn}
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		if a.IP.To4() != nil {
			if p := ipv4.NewPacketConn(conn); p.SetControlMessage(ipv4.FlagDst, true) == nil {
				r.v4 = p
			}
		} else if p := ipv6.NewPacketConn(conn); p.SetControlMessage(ipv6.FlagDst, true) == nil {
			r.v6 = p
		}
	}
	return r
}

func (r *replier) read(b []byte) (n int, from net.Addr, to net.IP, err error) {
	switch {
	case r.v4 != nil:
		var cm *ipv4.ControlMessage
		n, cm, from, err = r.v4.ReadFrom(b)
		if cm != nil {
			to = cm.Dst
		}
	case r.v6 != nil:
		var cm *ipv6.ControlMessage
		n, cm, from, err = r.v6.ReadFrom(b)
		if cm != nil {
			to = cm.Dst
		}
	default:
		n, from, err = r.conn.ReadFrom(b)
	}
	return n, from, to, err
}

func (r *replier) write(b []byte, to net.Addr, src net.IP) error {
	// Only a unicast address of ours can be a source.
	if src == nil || !src.IsGlobalUnicast() && !src.IsLoopback() && !src.IsLinkLocalUnicast() || src.Equal(net.IPv4bcast) {
		src = nil
	}
	var err error
	switch {
	case r.v4 != nil && src != nil:
		_, err = r.v4.WriteTo(b, &ipv4.ControlMessage{Src: src}, to)
	case r.v6 != nil && src != nil:
		_, err = r.v6.WriteTo(b, &ipv6.ControlMessage{Src: src}, to)
	default:
		_, err = r.conn.WriteTo(b, to)
	}
	return err
}

// Handle answers one request datagram from the named address; nil means
// no answer (the request was dropped and counted). Serve calls it; it is
// exported for embedding the witness in another transport.
func (s *Server) Handle(b []byte, from string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweepLocked(now)
	defer s.logRefusedLocked(now)
	req, err := parseRequest(b, s.cfg.Pair, s.cfg.Key)
	switch {
	case errors.Is(err, errMalformed):
		s.dropLocked(&s.counters.Malformed, "malformed", from, "")
		return nil
	case errors.Is(err, errWrongPair):
		s.dropLocked(&s.counters.WrongPair, "wrong pair", from, "")
		return nil
	case err != nil:
		s.dropLocked(&s.counters.Forged, "forged", from, "")
		return nil
	}
	if len(s.cfg.Nodes) > 0 && !slices.Contains(s.cfg.Nodes, req.Node) {
		s.dropLocked(&s.counters.Unknown, "unknown node", from, req.Node)
		return nil
	}
	n := s.nodes[req.Node]
	if n == nil {
		n = &nodeState{}
		s.nodes[req.Node] = n
	}
	if counter, why := s.proveLocked(n, req, now); counter != nil {
		if counter == &s.counters.Replayed {
			s.dropLocked(counter, "replayed", from, req.Node)
		} else {
			*counter++
			s.log.Debug("witness: challenged", "node", req.Node, "why", why, "from", from)
		}
		rep := reply{Status: Challenge, Nonce: req.Nonce, Witness: s.boot, Challenge: s.challengeLocked(n, now), Pair: s.cfg.Pair}
		return rep.marshal(s.cfg.Key)
	}

	rep := reply{Nonce: req.Nonce, Witness: s.boot, Challenge: s.mintLocked(n, now), Pair: s.cfg.Pair}
	switch req.Op {
	case opRelease:
		s.releaseLocked(req, now, from, &rep)
	case opOutdatePeer:
		s.outdatePeerLocked(req, now, from, &rep)
	case opClearWriter:
		s.clearWriterLocked(req, now, from, &rep)
	default:
		s.acquireLocked(req, now, from, &rep)
	}
	w := s.writer.Writer
	rep.Quiet = rep.Quiet || now.Before(s.quiet)
	rep.Writer, rep.Outdated = w != "" && w == req.Node, w != "" && w != req.Node
	return rep.marshal(s.cfg.Key)
}

// holderLocked fills rep's Holder and Lease with the current holder and
// what is left of its lease.
func (s *Server) holderLocked(now time.Time, rep *reply) {
	rep.Holder, rep.Lease = s.holder, 0
	if s.holder != "" {
		rep.Lease = s.expiry.Sub(now)
	}
}

// releaseLocked frees the vote, but only for the client boot it was
// granted (or last renewed) to: another boot of the holder's head does
// not count on that lease, and the lease lapses on its own.
func (s *Server) releaseLocked(req *request, now time.Time, from string, rep *reply) {
	rep.Status = Released
	switch {
	case s.holder == req.Node && s.holderBoot == req.Boot:
		s.log.Info("witness: released", "holder", req.Node, "held_for", now.Sub(s.heldSince).Round(time.Millisecond), "from", from)
		s.counters.Releases++
		s.holder, s.holderBoot, s.expiry, s.heldSince = "", ID{}, time.Time{}, time.Time{}
	case s.holder == req.Node:
		s.log.Warn("witness: refused a release from another start of the holder; its lease runs out on its own", "holder", req.Node, "from", from)
		rep.Status = Denied
	}
	s.holderLocked(now, rep)
}

func (s *Server) acquireLocked(req *request, now time.Time, from string, rep *reply) {
	held := s.holder != "" // swept by Handle: its lease still runs
	switch w := s.writer.Writer; {
	case w != "" && w != req.Node:
		// Even a claim: a lease taken after the marker was recorded can
		// only be the writer's, so the claim is not true.
		s.counters.Outdated++
		logChange(s.log, s.outdated, req.Node, w, slog.LevelWarn, "witness: denied: only the writer's data is current, the requester's is outdated",
			"node", req.Node, "writer", w, "since", s.writer.Since.Format(time.RFC3339), "claim", req.Claim, "from", from)
		rep.Status = Denied
		s.holderLocked(now, rep)
	case held && s.holder == req.Node:
		s.renewLocked(req, now, from, rep)
	case held:
		s.counters.Denials++
		logChange(s.log, s.denied, req.Node, s.holder, slog.LevelInfo, "witness: denied",
			"node", req.Node, "holder", s.holder, "remaining", s.expiry.Sub(now).Round(time.Millisecond), "from", from)
		rep.Status = Denied
		s.holderLocked(now, rep)
	case now.Before(s.quiet) && !req.Claim:
		s.counters.Denials++
		logChange(s.log, s.denied, req.Node, "", slog.LevelInfo, "witness: denied during the quiet period after start",
			"node", req.Node, "holder", "", "quiet_for", s.quiet.Sub(now).Round(time.Millisecond), "from", from)
		rep.Status, rep.Quiet, rep.Lease = Denied, true, s.quiet.Sub(now)
	default:
		if now.Before(s.quiet) {
			s.counters.Reinstate++
			s.log.Warn("witness: reinstated the holder of a lease granted before this witness started", "holder", req.Node, "its_remaining", req.HeldFor, "from", from)
		} else {
			s.counters.Grants++
			s.log.Warn("witness: granted", "holder", req.Node, "lease", s.cfg.Lease, "from", from)
		}
		s.holder, s.holderBoot, s.expiry, s.heldSince = req.Node, req.Boot, now.Add(s.cfg.Lease), now
		s.rebindWriterLocked(req, from)
		delete(s.denied, req.Node)
		rep.Status, rep.Holder, rep.Lease = Granted, req.Node, s.cfg.Lease
	}
}

func (s *Server) renewLocked(req *request, now time.Time, from string, rep *reply) {
	if s.holderBoot != req.Boot {
		s.log.Info("witness: the holder renews from a new start", "holder", req.Node, "from", from)
	}
	s.holderBoot, s.expiry = req.Boot, now.Add(s.cfg.Lease)
	s.rebindWriterLocked(req, from)
	s.counters.Renewals++
	s.log.Debug("witness: renewed", "holder", req.Node, "from", from)
	rep.Status, rep.Holder, rep.Lease = Granted, req.Node, s.cfg.Lease
}

// outdatePeerLocked records the holder as the writer. Only the holder by
// the witness's own view may: no reinstatement here, the head renews
// with a claim first. Another head's marker is never overwritten.
func (s *Server) outdatePeerLocked(req *request, now time.Time, from string, rep *reply) {
	rep.Status = Denied
	s.holderLocked(now, rep)
	w := s.writer.Writer
	switch {
	case s.holder != req.Node:
		s.log.Warn("witness: refused to record a writer that does not hold the vote", "node", req.Node, "holder", s.holder,
			"quiet", now.Before(s.quiet), "from", from)
		return
	case w != "" && w != req.Node:
		s.log.Warn("witness: refused to record a writer: another head is recorded", "node", req.Node, "writer", w, "from", from)
		return
	case w == "":
		if err := s.setWriterLocked(req.Node, req.Boot); err != nil {
			s.log.Warn("witness: could not record the writer", "node", req.Node, "from", from, "err", err)
			return
		}
		s.log.Warn("witness: recorded the writer: only its data is current; the other head is not granted the vote until it reports it resynced",
			"writer", req.Node, "from", from)
	}
	s.renewLocked(req, now, from, rep)
}

// clearWriterLocked clears the marker at the word of the writer's boot
// bound to it (idempotent).
func (s *Server) clearWriterLocked(req *request, now time.Time, from string, rep *reply) {
	rep.Status = Released
	switch w := s.writer.Writer; {
	case w != "" && w != req.Node:
		s.log.Warn("witness: refused to clear another head's writer marker", "node", req.Node, "writer", w, "from", from)
		rep.Status = Denied
	case w == req.Node && s.writer.Boot != req.Boot:
		s.log.Warn("witness: refused to clear the writer marker: it is bound to another start of the writer", "node", req.Node, "from", from)
		rep.Status = Denied
	case w == req.Node:
		since := s.writer.Since
		if err := s.setWriterLocked("", ID{}); err != nil {
			s.log.Warn("witness: could not clear the writer", "node", req.Node, "from", from, "err", err)
			rep.Status = Denied
			break
		}
		s.log.Warn("witness: cleared the writer: both heads' data is current", "writer", w, "recorded_at", since.Format(time.RFC3339), "from", from)
	}
	s.holderLocked(now, rep)
}

// logChange logs a denial at level when the node's situation changed
// since its last denial of this kind (seen[node] != why), else at debug
// level: a standby that lost its peer asks every interval.
func logChange(log *slog.Logger, seen map[string]string, node, why string, level slog.Level, msg string, args ...any) {
	if prev, ok := seen[node]; ok && prev == why {
		level = slog.LevelDebug
	}
	seen[node] = why
	log.Log(context.Background(), level, msg, args...)
}

// proveLocked decides whether req, authentic, is fresh: it must echo
// this witness's boot and a challenge outstanding for its node (issued
// to that node, within the TTL). That challenge and all older ones of
// the node are then spent: a head always sends the newest challenge it
// was given, so nothing it sent earlier can act any more. Otherwise it
// returns the counter to charge and why.
func (s *Server) proveLocked(n *nodeState, req *request, now time.Time) (*uint64, string) {
	switch {
	case req.Witness != s.boot:
		return &s.counters.Challenged, "another witness boot (first contact, or the witness restarted)"
	case req.Challenge == (ID{}):
		return &s.counters.Challenged, "no challenge"
	}
	for i, c := range n.out {
		if c.id != req.Challenge {
			continue
		}
		if !now.Before(c.at.Add(s.ttl)) {
			n.out = slices.Delete(n.out, i, i+1)
			return &s.counters.Challenged, "expired challenge"
		}
		n.spent[n.next] = [2]ID{c.id, req.Nonce}
		n.next = (n.next + 1) % spentKept
		n.out = slices.Delete(n.out, 0, i+1)
		return nil, ""
	}
	for _, sp := range n.spent {
		if sp[0] == req.Challenge && sp[1] != req.Nonce {
			// Signed anew by the head: a resend whose first attempt
			// acted but whose answer was lost.
			return &s.counters.Challenged, "spent challenge, new nonce"
		}
	}
	return &s.counters.Replayed, ""
}

// challengeLocked is the challenge for an unproven request: the node's
// newest while it is young, else a new one. Unproven requests, however
// many, so mint at most one challenge per quarter TTL, and with
// maxChallenges outstanding none that a head holds is evicted before it
// expires.
func (s *Server) challengeLocked(n *nodeState, now time.Time) ID {
	if k := len(n.out); k > 0 && now.Sub(n.out[k-1].at) < s.ttl/4 {
		return n.out[k-1].id
	}
	return s.mintLocked(n, now)
}

// mintLocked issues a new challenge to the node.
func (s *Server) mintLocked(n *nodeState, now time.Time) ID {
	n.out = slices.DeleteFunc(n.out, func(c challenge) bool { return !now.Before(c.at.Add(s.ttl)) })
	if len(n.out) >= maxChallenges {
		n.out = slices.Delete(n.out, 0, 1)
	}
	c := challenge{at: now}
	rand.Read(c.id[:])
	n.out = append(n.out, c)
	return c.id
}

// rebindWriterLocked binds the writer record to req's boot when req's
// head is the writer and now holds the vote (grant, reinstatement,
// renewal, outdate peer): a writer head that restarted takes the record
// over as it takes the vote, and can clear it once its peer has resynced;
// its earlier start no longer can. A writer head learns that it is the
// writer only by asking for the vote, which it is then granted, so this
// loses nothing. A record from a state file without a boot is bound the
// same way. On a write error the record stays bound to the old boot (the
// next renewal tries again).
func (s *Server) rebindWriterLocked(req *request, from string) {
	if w := s.writer; w.Writer != req.Node || w.Boot == req.Boot {
		return
	}
	if err := s.setWriterLocked(req.Node, req.Boot); err != nil {
		level := slog.LevelWarn
		if s.rebindFailed == req.Boot {
			level = slog.LevelDebug // tried at every renewal
		}
		s.rebindFailed = req.Boot
		s.log.Log(context.Background(), level, "witness: could not bind the writer marker to the writer's new start", "writer", req.Node, "from", from, "err", err)
		return
	}
	s.log.Info("witness: the writer marker now belongs to the writer's new start", "writer", req.Node, "from", from)
}

// sweepLocked logs and clears a lease that ran out unrenewed.
func (s *Server) sweepLocked(now time.Time) {
	if s.holder != "" && !now.Before(s.expiry) {
		s.counters.Expiries++
		s.log.Warn("witness: lease expired unrenewed", "holder", s.holder, "held_for", s.expiry.Sub(s.heldSince).Round(time.Millisecond),
			"late_by", now.Sub(s.expiry).Round(time.Millisecond))
		s.holder, s.expiry, s.heldSince = "", time.Time{}, time.Time{}
	}
}

func (s *Server) dropLocked(counter *uint64, kind, from, node string) {
	*counter++
	level := slog.LevelDebug
	if *counter == 1 {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "witness: dropped "+kind+" request", "from", from, "node", node, "count", *counter)
}

// refusedEvery spaces the summaries of refused requests: each one is
// logged at debug level only (a flood must not fill the log), yet an
// operator needs to see that replays arrive, and how many.
const refusedEvery = 5 * time.Second

// logRefusedLocked logs the totals of the requests that changed nothing
// (dropped, or answered with a challenge) when they changed since the
// last summary and that is refusedEvery old: at warning level when an
// attacker's kind rose, else (challenges, which a head's first contact
// also draws) at info level.
func (s *Server) logRefusedLocked(now time.Time) {
	c := s.counters
	cur := [6]uint64{c.Replayed, c.Forged, c.Malformed, c.WrongPair, c.Unknown, c.Challenged}
	if cur == s.refusedLogged || now.Sub(s.refusedAt) < refusedEvery {
		return
	}
	level := slog.LevelInfo
	if [5]uint64(cur[:5]) != [5]uint64(s.refusedLogged[:5]) {
		level = slog.LevelWarn
	}
	s.refusedLogged, s.refusedAt = cur, now
	s.log.Log(context.Background(), level, "witness: requests refused so far", "replayed", c.Replayed, "forged", c.Forged,
		"malformed", c.Malformed, "wrong_pair", c.WrongPair, "unknown_node", c.Unknown, "challenged", c.Challenged)
}

// Status returns the witness's state.
func (s *Server) Status() ServerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweepLocked(now)
	st := ServerStatus{Boot: hex.EncodeToString(s.boot[:]), Holder: s.holder, HeldSince: s.heldSince, Quiet: now.Before(s.quiet),
		Lease: s.cfg.Lease, Counters: s.counters, StartedAt: s.start, QuietUntil: s.quiet, Writer: s.writer.Writer, WriterSince: s.writer.Since}
	if s.holder != "" {
		st.Remaining = s.expiry.Sub(now)
	}
	return st
}
