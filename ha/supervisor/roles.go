package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/control"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/status"
)

// Budgets for role changes: the whole active stack, each way.
const (
	AcquireBudget = 2 * time.Minute
	ReleaseBudget = 2 * time.Minute
	PeerTimeout   = 3 * time.Second // a status query of the peer
)

// roleChange describes one change of this head's role, for the log and
// the failover timeline in status.
type roleChange struct {
	kind string // start, takeover, failover, switchover, quorum lost, ...
	why  string
	// start is when the failover began (e.g. the peer's last heartbeat);
	// zero: when the stack starts changing.
	start time.Time
	// steps came before the stack changed (detect, vote, wait, fence).
	steps []status.FailoverStep
}

// acquire starts the active layers bottom-up. Role changes are
// serialised; an acquire on an active head is a no-op.
func (s *Supervisor) acquire(ctx context.Context, rc roleChange) error {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	if s.cfg.Host.Stopping() {
		return errors.New("this head is shutting down")
	}
	if s.Role() == ha.Active {
		return nil
	}
	if st := s.cfg.DRBD.State(); st.Disk != drbd.UpToDate {
		return fmt.Errorf("this head's DRBD disk is %s, not UpToDate: it may hold stale data", orDash(string(st.Disk)))
	}
	s.log.Info("role: becoming active (" + rc.why + ")")
	t0 := s.clock.Now()
	w := watchSteps(s.cfg.Layers, s.clock, true)
	err := s.cfg.Layers.StartRoles(ctx, graph.Both, graph.ActiveOnly)
	s.recordRoleChange(rc, ha.Active, t0, w.finish(), err)
	if err != nil {
		s.log.Error("role: could not become active", "err", err)
		return err
	}
	s.setRole(ha.Active)
	s.log.Info(fmt.Sprintf("role: active after %d ms", s.since(t0)))
	return nil
}

// release stops the active layers top-down: VIP first, DRBD demoted last.
func (s *Supervisor) release(ctx context.Context, rc roleChange) error {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	s.log.Info("role: releasing the active role (" + rc.why + ")")
	t0 := s.clock.Now()
	w := watchSteps(s.cfg.Layers, s.clock, false)
	err := s.cfg.Layers.StopRoles(ctx, graph.ActiveOnly)
	s.setRole(ha.Standby) // every active layer was told to stop, even if one hung
	s.recordRoleChange(rc, ha.Standby, t0, w.finish(), err)
	if err != nil {
		s.log.Error("role: release did not finish", "err", err)
		return err
	}
	s.log.Info(fmt.Sprintf("role: standby after %d ms", s.since(t0)))
	select {
	case s.warmNow <- struct{}{}: // ready for taking the service back
	default:
	}
	return nil
}

// recordRoleChange adds a finished role change to the failover list.
func (s *Supervisor) recordRoleChange(rc roleChange, role ha.Role, t0 time.Time, done []layerDone, err error) {
	if rc.start.IsZero() {
		rc.start = t0
	}
	rc.steps = append(rc.steps, stackSteps(rc.start, t0, done, role == ha.Active)...)
	s.addFailover(rc, role, s.clock.Now(), err)
}

func orDash(v string) string {
	if v == "" {
		return "-"
	}
	return v
}

// peerClient is the control channel to the other head, on its
// replication address.
func (s *Supervisor) peerClient() (control.Client, error) {
	sc := s.cfg.Site
	peer := sc.Peer(s.cfg.Node)
	if peer == nil {
		return control.Client{}, errors.New("the site config names no peer")
	}
	ck, err := control.Key(s.cfg.Key, sc.Pair.Name)
	if err != nil {
		return control.Client{}, err
	}
	addr := peer.Replication.Prefix().Addr()
	if !addr.IsValid() {
		return control.Client{}, fmt.Errorf("peer %s has no replication address", peer.Name)
	}
	return control.Client{Key: ck, Node: s.cfg.Node, Peer: peer.Name, Addr: netip.AddrPortFrom(addr, uint16(sc.HA.ControlPort)).String()}, nil
}

// ServeControl answers the peer on this head's replication address
// (the bond layer, which holds it, runs first).
func (s *Supervisor) ServeControl() error {
	sc := s.cfg.Site
	addr := sc.Node(s.cfg.Node).Replication.Prefix().Addr()
	if !addr.IsValid() {
		return errors.New("no replication address to serve the control channel on")
	}
	ck, err := control.Key(s.cfg.Key, sc.Pair.Name)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(sc.HA.ControlPort)))
	if err != nil {
		return fmt.Errorf("control channel: %w", err)
	}
	srv := &control.Server{Key: ck, Node: s.cfg.Node, Peer: s.peer, Handler: controlHandler{s}, Log: s.log}
	s.goSafe("control server", func() {
		if err := srv.Serve(l); err != nil {
			s.log.Error("control channel stopped", "err", err)
		}
	})
	return nil
}

type controlHandler struct{ s *Supervisor }

func (h controlHandler) Status(context.Context) (any, error) { return h.s.cfg.Host.LocalStatus(), nil }

// Release hands the service to the peer (a switchover run there): this
// head yields until the peer is active, so that the HA loop does not
// start the service here again in between.
func (h controlHandler) Release(ctx context.Context) error {
	defer h.s.manualOp()()
	h.s.handOver(true)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ReleaseBudget)
	defer cancel()
	return h.s.release(ctx, roleChange{kind: "switchover", why: "asked by the peer"})
}

// Acquire takes the service (a switchover, or the peer handing it back
// after one failed).
func (h controlHandler) Acquire(ctx context.Context) error {
	defer h.s.manualOp()()
	h.s.handOver(false)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AcquireBudget)
	defer cancel()
	return h.s.acquire(ctx, roleChange{kind: "switchover", why: "asked by the peer"})
}

// peerStatus asks the other head for its status.
func (s *Supervisor) PeerStatus(ctx context.Context) (*status.Status, error) {
	c, err := s.peerClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, PeerTimeout)
	defer cancel()
	var st status.Status
	if err := c.Call(ctx, control.OpStatus, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Switchover moves the active role to the other head: the active head
// stops its stack top-down, then the other starts it bottom-up. It
// refuses unless the head that will be active has an UpToDate disk and
// DRBD is connected, so no write is ever served from stale data. If the
// new head fails to start, the old one takes the role back.
//
// The HA supervisor starts no role change of its own while a switchover
// runs, and the head giving the service away yields (announces none)
// until the peer is active.
func (s *Supervisor) Switchover(ctx context.Context) (string, error) {
	defer s.manualOp()()
	node := s.cfg.Node
	peer, err := s.PeerStatus(ctx)
	if err != nil {
		return "", fmt.Errorf("cannot reach the peer, so no switchover: %w", err)
	}
	st := s.cfg.DRBD.State()
	if st.Connection != drbd.Connected {
		return "", fmt.Errorf("refused: DRBD is %s, not Connected; the other head would not have the latest writes", orDash(string(st.Connection)))
	}
	c, err := s.peerClient()
	if err != nil {
		return "", err
	}
	t0 := s.clock.Now()
	if s.Role() == ha.Active {
		if st.PeerDisk != drbd.UpToDate {
			return "", fmt.Errorf("refused: %s's disk is %s, not UpToDate; wait for the resync to finish", peer.Node, orDash(string(st.PeerDisk)))
		}
		if peer.State != status.Ready {
			return "", fmt.Errorf("refused: %s is %s, not ready", peer.Node, peer.State)
		}
		s.handOver(true)
		rctx, cancel := context.WithTimeout(ctx, ReleaseBudget)
		err := s.release(rctx, roleChange{kind: "switchover", why: "switchover to " + peer.Node})
		cancel()
		if err != nil {
			s.takeBack(ctx)
			return "", fmt.Errorf("stopping the stack here failed, so it stays here: %w", err)
		}
		died, err := s.callPeer(ctx, c, control.OpAcquire, AcquireBudget)
		if died {
			return "", s.peerDiedDuringSwitchover(peer.Node)
		}
		if err != nil {
			s.takeBack(ctx)
			return "", fmt.Errorf("%s did not start the stack (%w); it runs on %s again", peer.Node, err, node)
		}
		return fmt.Sprintf("switchover: %s is active, %s standby (%d ms)", peer.Node, node, s.since(t0)), nil
	}
	if st.Disk != drbd.UpToDate {
		return "", fmt.Errorf("refused: this head's disk is %s, not UpToDate; wait for the resync to finish", orDash(string(st.Disk)))
	}
	if ha.Role(peer.Role) != ha.Active {
		return "", fmt.Errorf("nothing to switch over: %s is %s, not active; start the stack with 'tandem switchover' on it, or wait for it", peer.Node, orDash(peer.Role))
	}
	died, err := s.callPeer(ctx, c, control.OpRelease, ReleaseBudget)
	if died {
		return "", s.peerDiedDuringSwitchover(peer.Node)
	}
	if err != nil {
		return "", fmt.Errorf("%s did not stop its stack, so it stays there: %w", peer.Node, err)
	}
	actx, cancel := context.WithTimeout(ctx, AcquireBudget)
	err = s.acquire(actx, roleChange{kind: "switchover", why: "switchover from " + peer.Node})
	cancel()
	if err != nil {
		s.release(context.WithoutCancel(ctx), roleChange{kind: "switchover", why: "switchover failed; handing back"})
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AcquireBudget)
		defer cancel()
		if berr := c.Call(bctx, control.OpAcquire, nil); berr != nil {
			return "", fmt.Errorf("this head did not start the stack (%w), and %s did not take it back (%v): no head is active", err, peer.Node, berr)
		}
		return "", fmt.Errorf("this head did not start the stack (%w); it runs on %s again", err, peer.Node)
	}
	return fmt.Sprintf("switchover: %s is active, %s standby (%d ms)", node, peer.Node, s.since(t0)), nil
}

// callPeer makes a switchover's control call, bounded by budget, and
// ends it as soon as the peer is declared dead (died).
func (s *Supervisor) callPeer(ctx context.Context, c control.Client, op string, budget time.Duration) (died bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	dead := s.cancelIfPeerDies(cctx, cancel)
	err = c.Call(cctx, op, nil)
	cancel()
	return dead(), err
}

// cancelIfPeerDies calls cancel once the heartbeat no longer hears the
// peer for a dead time, while ctx lasts; died reports whether it did.
// A switchover's control call would otherwise wait out its whole budget
// on a peer that lost power.
func (s *Supervisor) cancelIfPeerDies(ctx context.Context, cancel context.CancelFunc) (died func() bool) {
	var dead atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(s.params.Interval/2, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !s.hb.Snapshot().Alive {
					dead.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	return func() bool { <-done; return dead.Load() }
}

// peerDiedDuringSwitchover gives the service back to the HA loop, which
// takes it over from the dead peer as in any failover (vote, fencing,
// new epoch): the peer may have started writing before it died.
func (s *Supervisor) peerDiedDuringSwitchover(peer string) error {
	s.handOver(false)
	s.log.Error("switchover: " + peer + " fell silent during the switchover; the HA loop takes the service over from it")
	return fmt.Errorf("%s fell silent during the switchover: %s takes the service over from it as in a failover", peer, s.cfg.Node)
}

// takeBack restarts the stack here after a failed switchover.
func (s *Supervisor) takeBack(ctx context.Context) {
	s.handOver(false)
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AcquireBudget)
	defer cancel()
	if err := s.acquire(actx, roleChange{kind: "switchover", why: "switchover failed; taking the stack back"}); err != nil {
		s.log.Error("role: could not take the stack back: no head is active", "err", err)
	}
}

// HandOverForShutdown moves the service to the peer before a planned
// poweroff or reboot of the active head, as a switchover: without it
// the peer would wait out the whole takeover delay. If the peer cannot
// take it, the service stops with this head.
func (s *Supervisor) HandOverForShutdown(ctx context.Context) {
	if s.Role() != ha.Active {
		return
	}
	s.log.Info("shutdown: handing the service to the peer first")
	msg, err := s.Switchover(ctx)
	if err != nil {
		s.log.Warn("shutdown: no handover; the service stops with this head", "err", err)
		return
	}
	s.log.Info("shutdown: " + msg)
}
