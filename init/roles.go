package pid1

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"tandem.dev/tandem/ha/control"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/status"
)

// Roles. The HA supervisor (ha.go) decides which head is active: at
// boot, on a failure, and when the peer falls silent; `tandem switchover`
// moves the role by hand over the control channel, and the supervisor
// stands aside meanwhile.
const (
	roleStandby = "standby"
	roleActive  = "active"
)

// Budgets for role changes: the whole active stack, each way.
const (
	acquireBudget = 2 * time.Minute
	releaseBudget = 2 * time.Minute
	peerTimeout   = 3 * time.Second // a status query of the peer
)

// role returns this head's role.
func (b *Boot) role() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.curRole
}

func (b *Boot) setRole(r string) {
	b.mu.Lock()
	b.curRole = r
	b.mu.Unlock()
}

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
func (b *Boot) acquire(ctx context.Context, rc roleChange) error {
	b.roleMu.Lock()
	defer b.roleMu.Unlock()
	if b.stopping.Load() {
		return errors.New("this head is shutting down")
	}
	if b.role() == roleActive {
		return nil
	}
	sup := b.supervisor()
	if sup == nil {
		return errors.New("the services are not running")
	}
	if st := b.stack.drbd.State(); st.Disk != "UpToDate" {
		return fmt.Errorf("this head's DRBD disk is %s, not UpToDate: it may hold stale data", orDash(st.Disk))
	}
	b.Log.Info("role: becoming active (" + rc.why + ")")
	t0 := time.Now()
	w := watchSteps(b.serviceSupervisor(), true)
	err := sup.StartRoles(ctx, graph.Both, graph.ActiveOnly)
	b.recordRoleChange(rc, roleActive, t0, w.finish(), err)
	if err != nil {
		b.Log.Error("role: could not become active", "err", err)
		return err
	}
	b.setRole(roleActive)
	b.Log.Info(fmt.Sprintf("role: active after %d ms", time.Since(t0).Milliseconds()))
	return nil
}

// release stops the active layers top-down: VIP first, DRBD demoted last.
func (b *Boot) release(ctx context.Context, rc roleChange) error {
	b.roleMu.Lock()
	defer b.roleMu.Unlock()
	sup := b.supervisor()
	if sup == nil {
		return errors.New("the services are not running")
	}
	b.Log.Info("role: releasing the active role (" + rc.why + ")")
	t0 := time.Now()
	w := watchSteps(b.serviceSupervisor(), false)
	err := sup.StopRoles(ctx, graph.ActiveOnly)
	b.setRole(roleStandby) // every active layer was told to stop, even if one hung
	b.recordRoleChange(rc, roleStandby, t0, w.finish(), err)
	if err != nil {
		b.Log.Error("role: release did not finish", "err", err)
		return err
	}
	b.Log.Info(fmt.Sprintf("role: standby after %d ms", time.Since(t0).Milliseconds()))
	select {
	case b.warmNow <- struct{}{}: // ready for taking the service back
	default:
	}
	return nil
}

// recordRoleChange hands a finished role change to the HA supervisor's
// failover list.
func (b *Boot) recordRoleChange(rc roleChange, role string, t0 time.Time, done []layerDone, err error) {
	if rc.start.IsZero() {
		rc.start = t0
	}
	rc.steps = append(rc.steps, stackSteps(rc.start, t0, done, role == roleActive)...)
	b.haSup().addFailover(rc, role, time.Now(), err)
}

func (b *Boot) supervisor() interface {
	StartRoles(context.Context, ...graph.Role) error
	StopRoles(context.Context, ...graph.Role) error
} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sup == nil {
		return nil
	}
	return b.sup
}

// peerClient is the control channel to the other head, on its
// replication address.
func (b *Boot) peerClient() (control.Client, error) {
	peer := b.Site.Peer(b.Node)
	if peer == nil {
		return control.Client{}, errors.New("the site config names no peer")
	}
	key, err := pairKey(b.Site)
	if err != nil {
		return control.Client{}, err
	}
	ck, err := control.Key(key, b.Site.Pair.Name)
	if err != nil {
		return control.Client{}, err
	}
	addr := peer.Replication.Prefix().Addr()
	if !addr.IsValid() {
		return control.Client{}, fmt.Errorf("peer %s has no replication address", peer.Name)
	}
	return control.Client{Key: ck, Addr: netip.AddrPortFrom(addr, uint16(b.Site.HA.ControlPort)).String()}, nil
}

// serveControl answers the peer on this head's replication address.
func (b *Boot) serveControl() error {
	nd := b.Site.Node(b.Node)
	addr := nd.Replication.Prefix().Addr()
	if !addr.IsValid() {
		return errors.New("no replication address to serve the control channel on")
	}
	key, err := pairKey(b.Site)
	if err != nil {
		return err
	}
	ck, err := control.Key(key, b.Site.Pair.Name)
	if err != nil {
		return err
	}
	// The address is on the bond, which is up: the bond layer runs first.
	l, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(b.Site.HA.ControlPort)))
	if err != nil {
		return fmt.Errorf("control channel: %w", err)
	}
	srv := &control.Server{Key: ck, Handler: controlHandler{b}, Log: b.Log}
	go func() {
		defer func() {
			if r := recover(); r != nil {
				b.Log.Error("control server panic", "panic", fmt.Sprint(r))
			}
		}()
		if err := srv.Serve(l); err != nil {
			b.Log.Error("control channel stopped", "err", err)
		}
	}()
	return nil
}

type controlHandler struct{ b *Boot }

func (h controlHandler) Status(context.Context) (any, error) { return h.b.localStatus(), nil }

// Release hands the service to the peer (a switchover run there): this
// head yields until the peer is active, so that the HA loop does not
// start the service here again in between.
func (h controlHandler) Release(ctx context.Context) error {
	ha := h.b.haSup()
	defer ha.manualOp()()
	ha.handOver(true)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseBudget)
	defer cancel()
	return h.b.release(ctx, roleChange{kind: "switchover", why: "asked by the peer"})
}

// Acquire takes the service (a switchover, or the peer handing it back
// after one failed).
func (h controlHandler) Acquire(ctx context.Context) error {
	ha := h.b.haSup()
	defer ha.manualOp()()
	ha.handOver(false)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), acquireBudget)
	defer cancel()
	return h.b.acquire(ctx, roleChange{kind: "switchover", why: "asked by the peer"})
}

// peerStatus asks the other head for its status.
func (b *Boot) peerStatus(ctx context.Context) (*status.Status, error) {
	c, err := b.peerClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	var st status.Status
	if err := c.Call(ctx, control.OpStatus, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// switchover moves the active role to the other head: the active head
// stops its stack top-down, then the other starts it bottom-up. It
// refuses unless the head that will be active has an UpToDate disk and
// DRBD is connected, so no write is ever served from stale data. If the
// new head fails to start, the old one takes the role back.
//
// The HA supervisor starts no role change of its own while a switchover
// runs, and the head giving the service away yields (announces none)
// until the peer is active.
func (b *Boot) switchover(ctx context.Context) (string, error) {
	if b.stack == nil || b.supervisor() == nil {
		return "", errors.New("the services are not running on this head")
	}
	ha := b.haSup()
	defer ha.manualOp()()
	peer, err := b.peerStatus(ctx)
	if err != nil {
		return "", fmt.Errorf("cannot reach the peer, so no switchover: %w", err)
	}
	st := b.stack.drbd.State()
	if st.Connection != "Connected" {
		return "", fmt.Errorf("refused: DRBD is %s, not Connected; the other head would not have the latest writes", orDash(st.Connection))
	}
	c, err := b.peerClient()
	if err != nil {
		return "", err
	}
	switch b.role() {
	case roleActive:
		if st.PeerDisk != "UpToDate" {
			return "", fmt.Errorf("refused: %s's disk is %s, not UpToDate; wait for the resync to finish", peer.Node, orDash(st.PeerDisk))
		}
		if peer.State != status.Ready {
			return "", fmt.Errorf("refused: %s is %s, not ready", peer.Node, peer.State)
		}
		t0 := time.Now()
		ha.handOver(true)
		rctx, cancel := context.WithTimeout(ctx, releaseBudget)
		err := b.release(rctx, roleChange{kind: "switchover", why: "switchover to " + peer.Node})
		cancel()
		if err != nil {
			b.takeBack(ctx)
			return "", fmt.Errorf("stopping the stack here failed, so it stays here: %w", err)
		}
		actx, cancel := context.WithTimeout(ctx, acquireBudget)
		err = c.Call(actx, control.OpAcquire, nil)
		cancel()
		if err != nil {
			b.takeBack(ctx)
			return "", fmt.Errorf("%s did not start the stack (%w); it runs on %s again", peer.Node, err, b.Node)
		}
		return fmt.Sprintf("switchover: %s is active, %s standby (%d ms)", peer.Node, b.Node, time.Since(t0).Milliseconds()), nil
	default:
		if st.Disk != "UpToDate" {
			return "", fmt.Errorf("refused: this head's disk is %s, not UpToDate; wait for the resync to finish", orDash(st.Disk))
		}
		if peer.Role != roleActive {
			return "", fmt.Errorf("nothing to switch over: %s is %s, not active; start the stack with 'tandem switchover' on it, or wait for it", peer.Node, orDash(peer.Role))
		}
		t0 := time.Now()
		rctx, cancel := context.WithTimeout(ctx, releaseBudget)
		err := c.Call(rctx, control.OpRelease, nil)
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s did not stop its stack, so it stays there: %w", peer.Node, err)
		}
		actx, cancel := context.WithTimeout(ctx, acquireBudget)
		err = b.acquire(actx, roleChange{kind: "switchover", why: "switchover from " + peer.Node})
		cancel()
		if err != nil {
			b.release(context.WithoutCancel(ctx), roleChange{kind: "switchover", why: "switchover failed; handing back"})
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), acquireBudget)
			defer cancel()
			if berr := c.Call(bctx, control.OpAcquire, nil); berr != nil {
				return "", fmt.Errorf("this head did not start the stack (%w), and %s did not take it back (%v): no head is active", err, peer.Node, berr)
			}
			return "", fmt.Errorf("this head did not start the stack (%w); it runs on %s again", err, peer.Node)
		}
		return fmt.Sprintf("switchover: %s is active, %s standby (%d ms)", b.Node, peer.Node, time.Since(t0).Milliseconds()), nil
	}
}

// takeBack restarts the stack here after a failed switchover.
func (b *Boot) takeBack(ctx context.Context) {
	b.haSup().handOver(false)
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), acquireBudget)
	defer cancel()
	if err := b.acquire(actx, roleChange{kind: "switchover", why: "switchover failed; taking the stack back"}); err != nil {
		b.Log.Error("role: could not take the stack back: no head is active", "err", err)
	}
}
