package wizard

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unicode"
)

// Discovery defaults. The beacon port is Tandem's own; the address is
// the limited broadcast, so that a head needs no configuration to be
// found on its management network.
const (
	DefaultDiscoveryPort     = 7793
	DefaultAnnounceInterval  = 2 * time.Second
	beaconMagic              = "tandem-wizard"
	beaconVersion            = 1
	maxBeaconSize            = 512
	maxPeers                 = 32
	maxImageVersionLen       = 64
	beaconLifetimeIntervals  = 3
	defaultDiscoveryListen   = ":7793"
	defaultDiscoveryAnnounce = "255.255.255.255:7793"
)

// Discovery configures how unconfigured heads find each other. Every
// address is injectable so that tests use loopback only.
type Discovery struct {
	// Listen is the UDP address beacons are received on, and sent from
	// (so that a beacon's source address is the head's). Default
	// ":7793"; "off" turns discovery off (the IP field still works).
	Listen string
	// AnnounceTo are the UDP addresses beacons go to. Default the
	// limited broadcast 255.255.255.255:7793.
	AnnounceTo []string
	// Interval between beacons. Default 2 s.
	Interval time.Duration
}

// Beacon is what an unconfigured head announces. It is a hint and
// nothing more: nobody signs it, so it only says where to look; the
// pairing proves who answered there (the setup code).
type Beacon struct {
	Magic string `json:"magic"`
	V     int    `json:"v"`
	ID    string `json:"id"`
	Port  int    `json:"port"` // of the wizard's HTTPS server, at the beacon's source address
	FP    string `json:"fp"`   // hex SHA-256 of the wizard's TLS certificate
	Image string `json:"image"`
}

// Peer is another head as discovery or the operator's IP field found it.
type Peer struct {
	ID          string
	Addr        string // host:port of its wizard
	Fingerprint []byte
	Image       string
	Seen        time.Time
	Typed       bool // from the IP field, not from a beacon
}

func (b Beacon) check() error {
	switch {
	case b.Magic != beaconMagic:
		return errors.New("not a Tandem beacon")
	case b.V != beaconVersion:
		return fmt.Errorf("beacon version %d", b.V)
	case !validID(b.ID):
		return errors.New("bad head ID")
	case b.Port < 1 || b.Port > 65535:
		return errors.New("bad port")
	case !printable(b.Image, maxImageVersionLen):
		return errors.New("bad image version")
	}
	fp, err := hex.DecodeString(b.FP)
	if err != nil || len(fp) != 32 {
		return errors.New("bad fingerprint")
	}
	return nil
}

func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// discovery announces this head and collects the others' beacons.
type discovery struct {
	conn     *net.UDPConn
	targets  []*net.UDPAddr
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	self    Beacon
	enabled bool // announce only while the head is unconfigured and free
	peers   map[string]Peer
}

func newDiscovery(cfg Discovery, log *slog.Logger) (*discovery, error) {
	if cfg.Listen == "off" {
		return nil, nil
	}
	listen := cfg.Listen
	if listen == "" {
		listen = defaultDiscoveryListen
	}
	announce := cfg.AnnounceTo
	if announce == nil {
		announce = []string{defaultDiscoveryAnnounce}
	}
	d := &discovery{interval: cfg.Interval, log: log, now: time.Now, peers: map[string]Peer{}, enabled: true}
	if d.interval <= 0 {
		d.interval = DefaultAnnounceInterval
	}
	for _, a := range announce {
		ua, err := net.ResolveUDPAddr("udp4", a)
		if err != nil {
			return nil, fmt.Errorf("discovery: announce address %q: %w", a, err)
		}
		d.targets = append(d.targets, ua)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// Broadcast needs SO_BROADCAST; SO_REUSEADDR lets a restarted
			// wizard bind again at once.
			serr = errors.Join(
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1))
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", listen)
	if err != nil {
		return nil, fmt.Errorf("discovery: listen on %s: %w", listen, err)
	}
	d.conn = pc.(*net.UDPConn)
	return d, nil
}

func (d *discovery) setSelf(b Beacon) {
	d.mu.Lock()
	d.self = b
	d.mu.Unlock()
}

// setEnabled starts or stops the announcements: a head that is being
// paired or is configured is no longer free to pair.
func (d *discovery) setEnabled(on bool) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.enabled = on
	d.mu.Unlock()
}

// run announces and listens until ctx ends.
func (d *discovery) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		d.conn.Close()
	}()
	go d.announce(ctx)
	buf := make([]byte, maxBeaconSize+1)
	for {
		n, src, err := d.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("discovery: read", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if n > maxBeaconSize {
			continue
		}
		d.receive(buf[:n], src)
	}
}

func (d *discovery) announce(ctx context.Context) {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		d.mu.Lock()
		on, self := d.enabled, d.self
		d.mu.Unlock()
		if on {
			msg, _ := json.Marshal(self)
			for _, to := range d.targets {
				if _, err := d.conn.WriteToUDP(msg, to); err != nil && ctx.Err() == nil {
					d.log.Debug("discovery: announce", "to", to, "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// receive records a beacon. The peer's wizard is at the beacon's source
// address: a beacon cannot send the wizard to a third host.
func (d *discovery) receive(msg []byte, src netip.AddrPort) {
	var b Beacon
	if err := json.Unmarshal(msg, &b); err != nil || b.check() != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if b.ID == d.self.ID {
		return
	}
	now := d.now()
	d.expireLocked(now)
	if _, known := d.peers[b.ID]; !known && len(d.peers) >= maxPeers {
		return
	}
	fp, _ := hex.DecodeString(b.FP)
	d.peers[b.ID] = Peer{
		ID:          b.ID,
		Addr:        net.JoinHostPort(src.Addr().Unmap().String(), strconv.Itoa(b.Port)),
		Fingerprint: fp,
		Image:       b.Image,
		Seen:        now,
	}
}

func (d *discovery) expireLocked(now time.Time) {
	for id, p := range d.peers {
		if now.Sub(p.Seen) > beaconLifetimeIntervals*d.interval {
			delete(d.peers, id)
		}
	}
}

// list returns the heads heard recently, by ID.
func (d *discovery) list() []Peer {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expireLocked(d.now())
	out := make([]Peer, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

func (d *discovery) lookup(id string) (Peer, bool) {
	for _, p := range d.list() {
		if p.ID == id {
			return p, true
		}
	}
	return Peer{}, false
}
