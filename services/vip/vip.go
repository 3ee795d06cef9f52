// Package vip is the service address layer: the virtual IP that clients
// mount through and that moves with the active head. The service graph
// puts it last, so it comes up only when every file service behind it is
// ready and goes down first.
//
// Start adds the address with netlink and announces it with gratuitous
// ARP, arp_count times, so switches and clients move to this head at
// once instead of after their ARP caches expire. Stop removes the
// address. Monitor checks that the address is present and the link up.
package vip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// Name is the resource's name in the service graph.
const Name = "vip"

// Config is the VIP of this head.
type Config struct {
	Address netip.Prefix
	// Link names the service interface: a name or a MAC address (the
	// management NIC when the site config names it by MAC).
	Link        string
	ARPCount    int
	ARPInterval time.Duration
	// OnUp runs after the address is up and first announced, e.g. the
	// NFS layer's SM_NOTIFY to NFSv3 clients, which must come from the
	// VIP. Its failure is logged, not fatal: the address serves.
	OnUp func(ctx context.Context, addr netip.Addr) error
	// ClientsFile, on the replicated filesystem, lists the TCP clients
	// of the VIP on TicklePorts; the head that takes the VIP over sends
	// them tickle ACKs (tickle.go). Empty: no tickles.
	ClientsFile string
	TicklePorts []uint16
	// ProcNetTCP is /proc/net/tcp; tests point it elsewhere.
	ProcNetTCP string
}

// tickleRounds and tickleGap: a client rate-limits its challenge ACKs
// (net.ipv4.tcp_invalid_ratelimit, 500 ms), so the rounds are spaced
// wider than that.
const (
	tickleRounds = 3
	tickleGap    = 600 * time.Millisecond
)

// DefaultARPInterval spaces the announcements like IPaddr2's send_arp.
const DefaultARPInterval = 200 * time.Millisecond

// FromSite returns the VIP config of head self.
func FromSite(sc *site.Config, self string) (Config, error) {
	if sc == nil {
		return Config{}, errorf("new", services.Config, "no site config")
	}
	nd := sc.Node(self)
	if nd == nil {
		return Config{}, errorf("new", services.Config, "%q is not a node of the pair", self)
	}
	p := sc.VIP.Prefix()
	if !p.IsValid() {
		return Config{}, errorf("new", services.Config, "bad address %q", sc.VIP.Address)
	}
	link := sc.VIP.Interface
	if link == "" {
		link = nd.Management.Interface
		if link == "" {
			link = nd.Management.MAC
		}
	}
	return Config{Address: p, Link: link, ARPCount: sc.VIP.ARPCount, ARPInterval: DefaultARPInterval}, nil
}

// Link is what the VIP needs to know about the service interface.
type Link struct {
	Index     int
	Name      string
	HW        net.HardwareAddr
	Broadcast net.HardwareAddr
	Up        bool // administratively up and carrier (or unknown) oper state
	IPoIB     bool
}

// netOps is the kernel side, netlink in production.
type netOps interface {
	Link(ref string) (Link, error) // ErrNoLink if absent
	HasAddr(l Link, p netip.Prefix) (bool, error)
	AddAddr(l Link, p netip.Prefix) error // nil if already there
	DelAddr(l Link, p netip.Prefix) error // nil if already gone
	// Silence on drops every packet this head would still send from the
	// address once it is gone; off undoes it (netlink.go).
	Silence(p netip.Prefix, on bool) error
}

// ErrNoLink is returned when the service interface does not exist.
var ErrNoLink = services.Sentinel("no such link", services.ErrNotFound)

// Resource is the VIP layer.
type Resource struct {
	cfg      Config
	log      *slog.Logger
	net      netOps
	announce Announcer

	mu      sync.Mutex
	cancel  context.CancelFunc // repeats of the announcement
	repeats sync.WaitGroup
	// recorded is the client list last saved to ClientsFile.
	recorded     []Conn
	recordedOnce bool
	saving       bool      // a write of the list is still under way
	hold         time.Time // Start raises the address no sooner (HoldUntil)
}

// saveBound is how long recordClients waits for the list to be written.
// It lives on the replicated filesystem, which may hang (frozen, or I/O
// held below it); the VIP must still go down at once.
const saveBound = time.Second

var _ services.Resource = (*Resource)(nil)

// Options are what the resource needs beyond its Config. Netlink and
// the ARP sender are replaced by this package's tests through unexported
// fields.
type Options struct {
	Log *slog.Logger
}

// New returns the VIP resource; it touches nothing.
func New(cfg Config, opts Options) (*Resource, error) {
	if !cfg.Address.IsValid() || cfg.Link == "" {
		return nil, errorf("new", services.Config, "address %v on link %q", cfg.Address, cfg.Link)
	}
	if cfg.ARPCount < 1 {
		cfg.ARPCount = 1
	}
	if cfg.ARPInterval <= 0 {
		cfg.ARPInterval = DefaultARPInterval
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Resource{cfg: cfg, log: log.With("resource", Name), net: netlinkOps{}, announce: packetAnnouncer{}}, nil
}

// Name implements services.Resource.
func (r *Resource) Name() string { return Name }

// fail is the one constructor of this layer's errors: the caller, which
// knows what went wrong, gives the Kind.
func fail(op string, kind services.Kind, err error) error {
	return &services.Error{Resource: Name, Op: op, Kind: kind, Err: err}
}

func errorf(op string, kind services.Kind, format string, a ...any) error {
	return fail(op, kind, fmt.Errorf(format, a...))
}

func (r *Resource) errorf(op string, kind services.Kind, format string, a ...any) error {
	return errorf(op, kind, format, a...)
}

// HoldUntil keeps the next Start from raising the address before t: on
// a takeover the old head must have dropped it first (see
// decide.Params.AddressDelay). The layers below start meanwhile.
func (r *Resource) HoldUntil(t time.Time) {
	r.mu.Lock()
	r.hold = t
	r.mu.Unlock()
}

// Start adds the address and announces it.
func (r *Resource) Start(ctx context.Context) error {
	const op = "start"
	r.mu.Lock()
	hold := r.hold
	r.hold = time.Time{}
	r.mu.Unlock()
	if wait := time.Until(hold); wait > 0 {
		r.log.Info("holding the address until the old head has dropped it", "address", r.cfg.Address, "wait", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return r.errorf(op, services.Timeout, "waiting %v for the old head to drop %s: %v", wait.Round(time.Millisecond), r.cfg.Address, ctx.Err())
		}
	}
	l, err := r.net.Link(r.cfg.Link)
	if errors.Is(err, ErrNoLink) {
		return r.errorf(op, services.Missing, "service interface %s: %v", r.cfg.Link, err)
	} else if err != nil {
		return r.errorf(op, services.Failed, "service interface %s: %v", r.cfg.Link, err)
	}
	if !l.Up {
		return r.errorf(op, services.Failed, "service interface %s is down", l.Name)
	}
	if err := r.net.Silence(r.cfg.Address, false); err != nil {
		return r.errorf(op, services.Failed, "lift the silence on %s: %v", r.cfg.Address, err)
	}
	if err := r.net.AddAddr(l, r.cfg.Address); err != nil {
		return r.errorf(op, services.Failed, "add %s to %s: %v", r.cfg.Address, l.Name, err)
	}
	ip := r.cfg.Address.Addr()
	if err := r.announce.Announce(l, ip); err != nil {
		// The address is up and serves; caches will learn it late.
		r.log.Warn("gratuitous ARP failed", "link", l.Name, "err", err)
	}
	var conns []Conn
	if r.cfg.ClientsFile != "" {
		var err error
		if conns, err = loadConns(r.cfg.ClientsFile); err != nil {
			r.log.Warn("cannot read the previous head's client list; no tickle ACKs", "file", r.cfg.ClientsFile, "err", err)
		}
	}
	r.repeat(l, ip, conns)
	r.log.Info("vip up", "address", r.cfg.Address, "link", l.Name, "arp_count", r.cfg.ARPCount, "tickled_clients", len(conns))
	if r.cfg.OnUp != nil {
		if err := r.cfg.OnUp(ctx, ip); err != nil {
			r.log.Warn("after-up hook failed", "err", err)
		}
	}
	return ctx.Err()
}

// repeat sends the remaining announcements in the background, so Start
// (and the switchover it is part of) does not wait arp_count intervals.
func (r *Resource) repeat(l Link, ip netip.Addr, conns []Conn) {
	r.stopRepeats()
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	if len(conns) > 0 {
		r.repeats.Add(1)
		go func() {
			defer r.repeats.Done()
			for i := 0; i < tickleRounds; i++ {
				if err := sendTickles(conns); err != nil {
					r.log.Warn("tickle ACKs failed", "err", err)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(tickleGap):
				}
			}
			r.log.Info("tickled the previous head's clients", "clients", len(conns), "rounds", tickleRounds)
		}()
	}
	if r.cfg.ARPCount < 2 {
		return
	}
	r.repeats.Add(1)
	go func() {
		defer r.repeats.Done()
		t := time.NewTicker(r.cfg.ARPInterval)
		defer t.Stop()
		for i := 1; i < r.cfg.ARPCount; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := r.announce.Announce(l, ip); err != nil {
				r.log.Debug("gratuitous ARP repeat failed", "err", err)
			}
		}
	}()
}

func (r *Resource) stopRepeats() {
	r.mu.Lock()
	cancel := r.cancel
	r.cancel = nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.repeats.Wait()
}

// Stop removes the address; a missing link or address is already stopped.
func (r *Resource) Stop(ctx context.Context) error {
	const op = "stop"
	r.stopRepeats()
	l, err := r.net.Link(r.cfg.Link)
	if errors.Is(err, ErrNoLink) {
		return nil
	} else if err != nil {
		return r.errorf(op, services.Failed, "service interface %s: %v", r.cfg.Link, err)
	}
	// The last list before the address leaves. If it is gone already
	// (deleted under us), nfsd has dropped its connections with it, and
	// their RSTs could not leave: the monitor's last list still names
	// the clients that wait, and the restart must tickle them.
	if has, err := r.net.HasAddr(l, r.cfg.Address); err == nil && has {
		r.recordClients()
	}
	// Silence first: when the file services then close their sockets,
	// no FIN may reach a client, whose reconnect would go nowhere until
	// its SYN backoff finds the new head. A client that hears nothing
	// keeps its connection until the new head's tickle resets it.
	if err := r.net.Silence(r.cfg.Address, true); err != nil {
		r.log.Warn("cannot silence the address; clients may wait for a reconnect", "err", err)
	}
	if err := r.net.DelAddr(l, r.cfg.Address); err != nil {
		return r.errorf(op, services.Failed, "remove %s from %s: %v", r.cfg.Address, l.Name, err)
	}
	r.log.Info("vip down", "address", r.cfg.Address, "link", l.Name)
	return ctx.Err()
}

// Monitor checks that the address is on the link and the link is up.
func (r *Resource) Monitor(ctx context.Context) error {
	const op = "monitor"
	l, err := r.net.Link(r.cfg.Link)
	if err != nil {
		return r.errorf(op, services.Failed, "service interface %s: %v", r.cfg.Link, err)
	}
	if !l.Up {
		return r.errorf(op, services.Failed, "service interface %s is down", l.Name)
	}
	has, err := r.net.HasAddr(l, r.cfg.Address)
	if err != nil {
		return r.errorf(op, services.Failed, "list addresses of %s: %v", l.Name, err)
	}
	if !has {
		return r.errorf(op, services.Failed, "%s is not on %s", r.cfg.Address, l.Name)
	}
	r.recordClients()
	return ctx.Err()
}

// recordClients saves the VIP's TCP clients for the next head, when the
// list changed. Failing to is logged, never fatal: it only costs a
// client one RPC timeout after a failover.
func (r *Resource) recordClients() {
	if r.cfg.ClientsFile == "" {
		return
	}
	f, err := os.Open(cmp.Or(r.cfg.ProcNetTCP, "/proc/net/tcp"))
	if err != nil {
		r.log.Debug("cannot list TCP connections", "err", err)
		return
	}
	conns, err := parseProcNetTCP(f, r.cfg.Address.Addr(), r.cfg.TicklePorts)
	f.Close()
	if err != nil {
		r.log.Debug("cannot list TCP connections", "err", err)
		return
	}
	slices.SortFunc(conns, func(a, b Conn) int { return strings.Compare(a.Client.String(), b.Client.String()) })
	r.mu.Lock()
	same := slices.Equal(conns, r.recorded) && r.recordedOnce
	busy := r.saving
	if !same && !busy {
		r.saving = true
	}
	r.mu.Unlock()
	if same || busy {
		return
	}
	done := make(chan error, 1)
	go func() {
		err := saveConns(r.cfg.ClientsFile, conns)
		r.mu.Lock()
		r.saving = false
		if err == nil {
			r.recorded, r.recordedOnce = conns, true
		}
		r.mu.Unlock()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			r.log.Warn("cannot record the VIP's clients", "file", r.cfg.ClientsFile, "err", err)
		}
	case <-time.After(saveBound):
		r.log.Warn("recording the VIP's clients is stuck (a hung filesystem?); going on without it", "file", r.cfg.ClientsFile)
	}
}

// matchLink reports whether ref (a name or a MAC) names a link.
func matchLink(ref, name string, hw, perm net.HardwareAddr) bool {
	if mac, err := net.ParseMAC(ref); err == nil {
		return strings.EqualFold(mac.String(), hw.String()) || (len(perm) > 0 && strings.EqualFold(mac.String(), perm.String()))
	}
	return ref == name
}
