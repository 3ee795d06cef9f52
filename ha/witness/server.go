// Package witness is the pair's tiebreaker: `tandem witness` runs Server on
// a third host, and each head asks it for the vote with Client.
//
// The witness has one vote and leases it to one head at a time. The holder
// renews it; another head gets it only after the lease has run out
// unrenewed (or the holder released it). Requests and replies are single
// UDP datagrams authenticated with the pair key (HMAC-SHA256); a reply
// echoes the request's random nonce, so an old grant cannot be replayed to
// a head.
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
// Restart. The witness persists nothing. After a start it keeps a quiet
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

	"tandem.dev/tandem/ha"
)

// DefaultLease is the lease when none is configured: three times the
// default heartbeat dead time (3 s).
const DefaultLease = 9 * time.Second

// Config configures a Server.
type Config struct {
	Pair string
	Key  []byte
	// Lease is how long one grant lasts; the holder renews well within
	// it. A few heartbeat dead times. Zero: DefaultLease.
	Lease time.Duration
	// Nodes, if set, are the only node names that may ask (the two heads
	// of the site config).
	Nodes []string
	// Quiet is the quiet period after start (see the package comment).
	// Zero: Lease. Set it to the longest lease the previous run may have
	// granted if --lease was lowered across a restart. Negative: none
	// (only for tests and a witness that has never granted anything).
	Quiet time.Duration
	Log   *slog.Logger     // nil: slog.Default()
	Now   func() time.Time // nil: time.Now; tests drive a fake clock
}

// Counters count requests by outcome.
type Counters struct {
	Grants    uint64 `json:"grants"`   // new holder
	Renewals  uint64 `json:"renewals"` // holder renewed
	Reinstate uint64 `json:"reinstated"`
	Denials   uint64 `json:"denials"`
	Releases  uint64 `json:"releases"`
	Expiries  uint64 `json:"expiries"` // leases that ran out unrenewed
	Forged    uint64 `json:"forged"`
	Replayed  uint64 `json:"replayed"`
	WrongPair uint64 `json:"wrong_pair"`
	Malformed uint64 `json:"malformed"`
	Unknown   uint64 `json:"unknown_node"`
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
}

type clientState struct {
	boot    ID
	seq     uint64
	retired []ID
}

// Server is the witness. Its methods are safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	boot  ID
	start time.Time
	quiet time.Time // no new grants before this

	mu        sync.Mutex
	holder    string
	expiry    time.Time
	heldSince time.Time
	clients   map[string]*clientState
	counters  Counters
	denied    map[string]string // node -> holder at its last denial, to log changes only
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
		errs = append(errs, fmt.Errorf("pair key is %d bytes, need at least %d", len(cfg.Key), ha.MinKeyBytes))
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
	s := &Server{cfg: cfg, log: cfg.Log, now: cfg.Now, clients: map[string]*clientState{}, denied: map[string]string{}}
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
	return s, nil
}

// ListenAndServe listens on addr (host:port, UDP) and serves until ctx
// ends.
func ListenAndServe(ctx context.Context, addr string, cfg Config) error {
	s, err := NewServer(cfg)
	if err != nil {
		return err
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	return s.Serve(ctx, conn)
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
				s.sweepLocked(s.now())
				s.mu.Unlock()
			}
		}
	}()
	buf := make([]byte, MaxMessage+1)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("witness: %w", err)
			}
			s.log.Debug("witness: read", "err", err)
			continue
		}
		if out := s.Handle(buf[:n], from.String()); out != nil {
			if _, err := conn.WriteTo(out, from); err != nil {
				s.log.Debug("witness: reply", "to", from.String(), "err", err)
			}
		}
	}
}

// Handle answers one request datagram from the named address; nil means
// no answer (the request was dropped and counted). Serve calls it; it is
// exported for embedding the witness in another transport.
func (s *Server) Handle(b []byte, from string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweepLocked(now)
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
	if !s.freshLocked(req) {
		s.dropLocked(&s.counters.Replayed, "replayed", from, req.Node)
		return nil
	}

	rep := reply{Nonce: req.Nonce, Witness: s.boot, Pair: s.cfg.Pair}
	held := s.holder != "" && now.Before(s.expiry)
	switch {
	case req.Op == opRelease:
		if held && s.holder == req.Node {
			s.log.Info("witness: released", "holder", req.Node, "held_for", now.Sub(s.heldSince).Round(time.Millisecond), "from", from)
			s.counters.Releases++
			s.holder, s.expiry, s.heldSince = "", time.Time{}, time.Time{}
		}
		rep.Status, rep.Holder = Released, s.holder
		if s.holder != "" {
			rep.Lease = s.expiry.Sub(now)
		}
	case held && s.holder == req.Node:
		s.expiry = now.Add(s.cfg.Lease)
		s.counters.Renewals++
		s.log.Debug("witness: renewed", "holder", req.Node, "from", from)
		rep.Status, rep.Holder, rep.Lease = Granted, req.Node, s.cfg.Lease
	case held:
		s.counters.Denials++
		s.logDenialLocked(req.Node, s.holder, "witness: denied", "remaining", s.expiry.Sub(now).Round(time.Millisecond), "from", from)
		rep.Status, rep.Holder, rep.Lease = Denied, s.holder, s.expiry.Sub(now)
	case now.Before(s.quiet) && !req.Claim:
		s.counters.Denials++
		s.logDenialLocked(req.Node, "", "witness: denied during the quiet period after start", "quiet_for", s.quiet.Sub(now).Round(time.Millisecond), "from", from)
		rep.Status, rep.Quiet, rep.Lease = Denied, true, s.quiet.Sub(now)
	default:
		if now.Before(s.quiet) {
			s.counters.Reinstate++
			s.log.Warn("witness: reinstated the holder of a lease granted before this witness started", "holder", req.Node, "its_remaining", req.HeldFor, "from", from)
		} else {
			s.counters.Grants++
			s.log.Warn("witness: granted", "holder", req.Node, "lease", s.cfg.Lease, "from", from)
		}
		s.holder, s.expiry, s.heldSince = req.Node, now.Add(s.cfg.Lease), now
		delete(s.denied, req.Node)
		rep.Status, rep.Holder, rep.Lease = Granted, req.Node, s.cfg.Lease
	}
	rep.Quiet = rep.Quiet || now.Before(s.quiet)
	return rep.marshal(s.cfg.Key)
}

// logDenialLocked logs a denial at info level when the node's situation
// changed (another holder), else at debug level: a standby that lost its
// peer asks every interval.
func (s *Server) logDenialLocked(node, holder, msg string, args ...any) {
	level := slog.LevelDebug
	if prev, ok := s.denied[node]; !ok || prev != holder {
		level = slog.LevelInfo
		s.denied[node] = holder
	}
	s.log.Log(context.Background(), level, msg, append([]any{"node", node, "holder", holder}, args...)...)
}

// freshLocked applies the replay rule to req: within a client boot the
// sequence number must grow; a boot ID the client has left is refused; a
// new boot ID is accepted (the head restarted). A replay of a request the
// witness has never seen can at worst renew that head's lease, which only
// delays a takeover: the head does not believe in a grant it did not get
// an answer to, so no head ever acts on it.
func (s *Server) freshLocked(req *request) bool {
	c := s.clients[req.Node]
	switch {
	case c == nil:
		s.clients[req.Node] = &clientState{boot: req.Boot, seq: req.Seq}
	case c.boot == req.Boot:
		if req.Seq <= c.seq {
			return false
		}
		c.seq = req.Seq
	case slices.Contains(c.retired, req.Boot):
		return false
	default:
		c.retired = append(c.retired, c.boot)
		if len(c.retired) > 16 {
			c.retired = c.retired[1:]
		}
		c.boot, c.seq = req.Boot, req.Seq
	}
	return true
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

// Status returns the witness's state.
func (s *Server) Status() ServerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweepLocked(now)
	st := ServerStatus{Boot: hex.EncodeToString(s.boot[:]), Holder: s.holder, HeldSince: s.heldSince, Quiet: now.Before(s.quiet),
		Lease: s.cfg.Lease, Counters: s.counters, StartedAt: s.start, QuietUntil: s.quiet}
	if s.holder != "" {
		st.Remaining = s.expiry.Sub(now)
	}
	return st
}
