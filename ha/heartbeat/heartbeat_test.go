package heartbeat

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/site"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
)

// waitFor bounds every event-driven wait: generous, since only a broken
// implementation (or a machine stalled for that long) reaches it.
const waitFor = 30 * time.Second

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// relay stands between the two endpoints on one path, so a test can cut
// the path (each direction on its own), record packets and inject its own
// from the address the receiving endpoint expects. Side a faces endpoint
// A, side b faces endpoint B; each side learns its endpoint's address from
// the first packet it gets.
type relay struct {
	a, b *net.UDPConn

	mu             sync.Mutex
	aAddr, bAddr   netip.AddrPort
	dropAB, dropBA bool
	toA            [][]byte // packets forwarded from B to A, newest last
	withhold       bool     // keep B's packets in held instead of forwarding
	held           [][]byte // B's packets withheld from A, oldest first
}

func newRelay(t *testing.T) *relay {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	r := &relay{a: listen(), b: listen()}
	go r.pump(r.a, r.b, &r.aAddr, &r.bAddr, &r.dropAB, nil)
	go r.pump(r.b, r.a, &r.bAddr, &r.aAddr, &r.dropBA, &r.toA)
	t.Cleanup(func() { r.a.Close(); r.b.Close() })
	return r
}

func (r *relay) pump(in, out *net.UDPConn, learn, dest *netip.AddrPort, drop *bool, record *[][]byte) {
	buf := make([]byte, 2048)
	for {
		n, src, err := in.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		} else if err != nil {
			continue
		}
		r.mu.Lock()
		*learn = src
		to, dropped := *dest, *drop
		if record != nil && r.withhold {
			r.held = append(r.held, bytes.Clone(buf[:n]))
			dropped = true
		}
		if !dropped && to.IsValid() && record != nil {
			*record = append(*record, bytes.Clone(buf[:n]))
			if len(*record) > 64 {
				*record = (*record)[1:]
			}
		}
		r.mu.Unlock()
		if !dropped && to.IsValid() {
			out.WriteToUDPAddrPort(buf[:n], to)
		}
	}
}

func (r *relay) cut(ab, ba bool) {
	r.mu.Lock()
	r.dropAB, r.dropBA = ab, ba
	r.mu.Unlock()
}

// startWithholding makes the relay keep B's packets instead of passing
// them to A, until takeHeld.
func (r *relay) startWithholding() {
	r.mu.Lock()
	r.withhold, r.held = true, nil
	r.mu.Unlock()
}

// takeHeld returns the packets withheld so far, oldest first.
func (r *relay) takeHeld() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	held := r.held
	r.held = nil
	return held
}

// injectToA sends b to endpoint A from the address A expects its peer at.
func (r *relay) injectToA(t *testing.T, b []byte) {
	t.Helper()
	r.mu.Lock()
	to := r.aAddr
	r.mu.Unlock()
	if _, err := r.a.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// lastToA returns the newest packet forwarded from B to A.
func (r *relay) lastToA() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.toA[len(r.toA)-1])
}

type pair struct {
	a, b   *Endpoint
	relays []*relay
	cancel map[*Endpoint]context.CancelFunc
	done   map[*Endpoint]chan struct{}
}

func cfgFor(t *testing.T, node, peer string, peers []netip.AddrPort, locals []netip.AddrPort, dead time.Duration) Config {
	cfg := Config{Pair: "vdi-nas", Node: node, Peer: peer, Key: testKey,
		Interval: 20 * time.Millisecond, DeadTime: dead, Log: testLog(t).With("node", node)}
	for i, p := range peers {
		local := netip.MustParseAddrPort("127.0.0.1:0")
		if locals != nil {
			local = locals[i]
		}
		cfg.Paths = append(cfg.Paths, Path{Name: []string{"replication", "management"}[i], Local: local, Peer: p})
	}
	return cfg
}

func newPair(t *testing.T, dead time.Duration) *pair {
	t.Helper()
	p := &pair{relays: []*relay{newRelay(t), newRelay(t)}, cancel: map[*Endpoint]context.CancelFunc{}, done: map[*Endpoint]chan struct{}{}}
	var toA, toB []netip.AddrPort
	for _, r := range p.relays {
		toA = append(toA, r.a.LocalAddr().(*net.UDPAddr).AddrPort()) // A's peer address
		toB = append(toB, r.b.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	p.a = p.start(t, cfgFor(t, "nas-a", "nas-b", toA, nil, dead))
	p.b = p.start(t, cfgFor(t, "nas-b", "nas-a", toB, nil, dead))
	return p
}

func (p *pair) start(t *testing.T, cfg Config) *Endpoint {
	t.Helper()
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	p.cancel[e], p.done[e] = cancel, done
	t.Cleanup(func() { p.stop(e) })
	return e
}

func (p *pair) stop(e *Endpoint) {
	p.cancel[e]()
	<-p.done[e]
}

func await(t *testing.T, e *Endpoint, what string, cond func(Snapshot) bool) Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, err := e.Await(ctx, cond)
	if err != nil {
		b, _ := json.MarshalIndent(s, "", "  ")
		t.Fatalf("%s: %s never happened: %v; last snapshot:\n%s", e.cfg.Node, what, err, b)
	}
	return s
}

func bothPathsAlive(s Snapshot) bool { return s.Seen && s.Paths[0].Alive && s.Paths[1].Alive }

func TestPeersMeetAndExchangeState(t *testing.T) {
	p := newPair(t, time.Second)
	await(t, p.a, "seeing nas-b on both paths", bothPathsAlive)
	await(t, p.b, "seeing nas-a on both paths", bothPathsAlive)

	want := State{Role: ha.Active, Disk: ha.UpToDate, HoldsVote: true, Epoch: 7}
	p.a.SetState(want)
	s := await(t, p.b, "nas-a's new state", func(s Snapshot) bool { return s.Peer != nil && s.Peer.State == want })
	want = State{Role: ha.Standby, Disk: ha.Outdated, Epoch: 7, Outdated: true}
	p.a.SetState(want)
	s = await(t, p.b, "nas-a's new state", func(s Snapshot) bool { return s.Peer != nil && s.Peer.State == want })
	if s.Peer.Boot != p.a.BootID() || s.Peer.Boots != 1 {
		t.Errorf("peer boot %v (%d boots), want %v (1)", s.Peer.Boot, s.Peer.Boots, p.a.BootID())
	}
	if s.RTT <= 0 || s.RTT > Duration(waitFor) {
		t.Errorf("rtt %v", time.Duration(s.RTT))
	}
	if d := s.Dropped; d.Forged+d.Replayed+d.WrongPair+d.Malformed+d.Foreign != 0 {
		t.Errorf("dropped %+v on a clean pair", d)
	}
	if _, err := json.Marshal(s); err != nil {
		t.Errorf("snapshot is not JSON: %v", err)
	}
	if !p.a.Alive(time.Minute) || !p.a.Seen() {
		t.Errorf("Alive/Seen false while the snapshot says seen")
	}
	// A few rounds later every path, and the peer, has shown a gap.
	await(t, p.b, "longest gaps measured", func(s Snapshot) bool {
		return s.Peer != nil && s.Peer.LongestGap > 0 && s.Paths[0].LongestGap > 0 && s.Paths[1].LongestGap > 0
	})
}

// Cutting one path (both directions) leaves the peer seen through the
// other; the cut path alone goes dead and shows full loss.
func TestOnePathCutKeepsPeer(t *testing.T) {
	p := newPair(t, 3*time.Second)
	await(t, p.a, "both paths", bothPathsAlive)
	await(t, p.b, "both paths", bothPathsAlive)

	// Watch nas-a from here on: the peer must never be lost.
	var lost sync.WaitGroup
	stopWatch := make(chan struct{})
	var lostAt []time.Time
	lost.Add(1)
	go func() {
		defer lost.Done()
		for {
			ch := p.a.Changed()
			if s := p.a.Snapshot(); !s.Seen {
				lostAt = append(lostAt, s.At)
			}
			select {
			case <-ch:
			case <-stopWatch:
				return
			}
		}
	}()

	p.relays[0].cut(true, true)
	for _, e := range []*Endpoint{p.a, p.b} {
		await(t, e, "path 0 dead, full loss, peer seen via path 1", func(s Snapshot) bool {
			return !s.Paths[0].Alive && s.Paths[0].Loss == 1 && s.Paths[1].Alive && s.Paths[1].Loss < 1 && s.Seen
		})
	}
	close(stopWatch)
	lost.Wait()
	if len(lostAt) > 0 {
		t.Errorf("peer lost at %v though one path stayed up", lostAt)
	}

	p.relays[0].cut(false, false)
	await(t, p.a, "path 0 back", bothPathsAlive)
}

// Cutting both paths makes the peer dead once the dead time has passed
// since it was last heard, not before; mending one brings it back.
func TestBothPathsCutPeerDies(t *testing.T) {
	const dead = time.Second
	p := newPair(t, dead)
	await(t, p.a, "both paths", bothPathsAlive)
	await(t, p.b, "both paths", bothPathsAlive)

	p.relays[0].cut(true, true)
	p.relays[1].cut(true, true)
	for _, e := range []*Endpoint{p.a, p.b} {
		s := await(t, e, "peer dead", func(s Snapshot) bool { return !s.Alive })
		if s.Seen || s.HearsUs {
			t.Errorf("%s: seen %v, hears_us %v with both paths cut", e.cfg.Node, s.Seen, s.HearsUs)
		}
		for _, ps := range s.Paths {
			if ps.Alive || s.At.Sub(ps.LastHeard) <= dead {
				t.Errorf("%s: path %s declared dead %v after it was last heard, dead time %v", e.cfg.Node, ps.Name, s.At.Sub(ps.LastHeard), dead)
			}
		}
		if e.Alive(time.Hour) != true {
			t.Errorf("%s: Alive(1h) is false: a longer dead time must still see the peer", e.cfg.Node)
		}
	}

	// One direction back is not enough to be seen: contact must be mutual.
	p.relays[1].cut(true, false) // B -> A flows again, A -> B still cut
	s := await(t, p.a, "nas-b heard again", func(s Snapshot) bool { return s.Alive })
	if s.Seen {
		t.Errorf("nas-a sees nas-b although nas-b cannot hear nas-a")
	}
	p.relays[1].cut(false, false)
	await(t, p.a, "peer back", func(s Snapshot) bool { return s.Seen })
	await(t, p.b, "peer back", func(s Snapshot) bool { return s.Seen })
}

// craft builds a packet as nas-b would send it, signed with the
// heartbeat key an endpoint derives from pairKey.
func craft(t *testing.T, pairKey []byte, mod func(*packet)) []byte {
	t.Helper()
	pk := packet{Role: ha.Active, Boot: BootID{1}, Seq: 1, Tick: 1, Pair: "vdi-nas", Node: "nas-b", Disk: "UpToDate"}
	mod(&pk)
	key, err := site.SubKey(pairKey, pk.Pair, site.PurposeHeartbeat, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := appendPacket(nil, &pk, key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForgedReplayedAndForeignDropped(t *testing.T) {
	p := newPair(t, 2*time.Second)
	await(t, p.a, "seen", bothPathsAlive)
	standby := State{Role: ha.Standby, Disk: ha.UpToDate}
	p.b.SetState(standby)
	await(t, p.a, "standby peer", func(s Snapshot) bool { return s.Peer.State == standby })
	r := p.relays[0]
	before := p.a.Snapshot().Dropped

	// A forged packet claiming nas-b is active, at the next sequence
	// numbers of nas-b's own boot: refused for its MAC.
	forged := craft(t, otherKey, func(pk *packet) { pk.Boot = p.b.BootID(); pk.Seq = 1 << 40; pk.Tick = 1 << 40 })
	r.injectToA(t, forged)
	await(t, p.a, "forged counted", func(s Snapshot) bool { return s.Dropped.Forged == before.Forged+1 })

	// Malformed: garbage, a truncated packet, a wrong version.
	good := craft(t, testKey, func(*packet) {})
	badVersion := bytes.Clone(good)
	badVersion[4] = 2
	for _, b := range [][]byte{[]byte("hello"), good[:len(good)-1], badVersion, make([]byte, MaxPacket+1)} {
		r.injectToA(t, b)
	}
	await(t, p.a, "malformed counted", func(s Snapshot) bool { return s.Dropped.Malformed == before.Malformed+4 })

	// Another pair's heartbeat (its own key, its own name).
	r.injectToA(t, craft(t, otherKey, func(pk *packet) { pk.Pair = "other-nas" }))
	await(t, p.a, "wrong pair counted", func(s Snapshot) bool { return s.Dropped.WrongPair == before.WrongPair+1 })

	// Authentic, but signed as nas-a itself (a reflection), and one from
	// an address that is not the peer's.
	r.injectToA(t, craft(t, testKey, func(pk *packet) { pk.Node = "nas-a" }))
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort(good, p.a.LocalAddr(0)); err != nil {
		t.Fatal(err)
	}
	await(t, p.a, "foreign counted", func(s Snapshot) bool { return s.Dropped.Foreign == before.Foreign+2 })

	// A replay of a genuine packet of nas-b's current boot, twice: the
	// second copy at least is a duplicate.
	old := r.lastToA()
	r.injectToA(t, old)
	r.injectToA(t, old)
	await(t, p.a, "replay counted", func(s Snapshot) bool { return s.Dropped.Replayed >= before.Replayed+1 })

	s := p.a.Snapshot()
	if s.Peer.State != standby || s.Peer.Boot != p.b.BootID() || s.Peer.Boots != 1 {
		t.Errorf("a dropped packet changed the peer: %+v", *s.Peer)
	}
	if !s.Seen {
		t.Errorf("peer lost while junk arrived")
	}
}

// A rebooted peer (new boot ID, same addresses) is accepted; packets of
// its previous boot are then replays, and an unknown boot that cannot
// echo a recent packet of ours is not accepted.
func TestPeerRebootAccepted(t *testing.T) {
	p := newPair(t, 2*time.Second)
	await(t, p.a, "seen", bothPathsAlive)
	await(t, p.b, "seen", bothPathsAlive)
	oldBoot := p.b.BootID()
	oldPacket := p.relays[0].lastToA()

	cfg := p.b.cfg
	cfg.Paths = nil
	for i := range p.b.paths {
		cfg.Paths = append(cfg.Paths, Path{Name: p.b.paths[i].Name, Local: p.b.LocalAddr(i), Peer: p.b.paths[i].Peer})
	}
	p.stop(p.b)
	b2 := p.start(t, cfg)
	if b2.BootID() == oldBoot {
		t.Fatal("same boot ID after a restart")
	}
	s := await(t, p.a, "the new boot", func(s Snapshot) bool { return s.Seen && s.Peer.Boot == b2.BootID() })
	if s.Peer.Boots != 2 {
		t.Errorf("boots %d, want 2", s.Peer.Boots)
	}
	await(t, b2, "nas-a from the new boot", func(s Snapshot) bool { return s.Seen })

	before := p.a.Snapshot().Dropped
	p.relays[0].injectToA(t, oldPacket)
	await(t, p.a, "old boot's packet counted as a replay", func(s Snapshot) bool { return s.Dropped.Replayed == before.Replayed+1 })

	// A boot never seen, echoing nothing of ours, then one echoing a
	// sequence number we never sent: neither proves freshness.
	stranger := BootID{0xee}
	p.relays[0].injectToA(t, craft(t, testKey, func(pk *packet) { pk.Boot = stranger }))
	p.relays[0].injectToA(t, craft(t, testKey, func(pk *packet) { pk.Boot = stranger; pk.Seq = 2; pk.EchoBoot = p.a.BootID(); pk.EchoSeq = 1 << 50 }))
	s = await(t, p.a, "unproven counted", func(s Snapshot) bool { return s.Dropped.Unproven >= before.Unproven+2 })
	if s.Peer.Boot != b2.BootID() || !s.Seen {
		t.Errorf("unproven boot changed the peer: boot %v seen %v", s.Peer.Boot, s.Seen)
	}
}

func TestPacketCodec(t *testing.T) {
	for _, in := range []packet{
		{Role: ha.Standby, HoldsVote: true, Path: 1, Boot: BootID{9, 8}, Seq: 42, Tick: 21, SentUnix: 1234567890,
			Epoch: 3, EchoBoot: BootID{7}, EchoSeq: 41, EchoHold: 500, Pair: "vdi-nas", Node: "nas-b", Disk: "UpToDate"},
		{Role: ha.Standby, Outdated: true, Path: 0, Boot: BootID{9, 8}, Seq: 43, Tick: 22, SentUnix: 1234567891,
			Epoch: 3, EchoBoot: BootID{7}, EchoSeq: 41, EchoHold: 500, Pair: "vdi-nas", Node: "nas-b", Disk: "Outdated"},
	} {
		b, err := appendPacket(nil, &in, testKey)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := parsePacket(b, "vdi-nas", testKey); err != nil || *out != in {
			t.Fatalf("round trip: %+v, %v; want %+v", out, err, in)
		}
	}
	in := packet{Role: ha.Standby, HoldsVote: true, Path: 1, Boot: BootID{9, 8}, Seq: 42, Tick: 21, SentUnix: 1234567890,
		Epoch: 3, EchoBoot: BootID{7}, EchoSeq: 41, EchoHold: 500, Pair: "vdi-nas", Node: "nas-b", Disk: "Outdated"}
	b, err := appendPacket(nil, &in, testKey)
	if err != nil {
		t.Fatal(err)
	}
	out, err := parsePacket(b, "vdi-nas", testKey)
	if err != nil || *out != in {
		t.Fatalf("round trip: %+v, %v; want %+v", out, err, in)
	}
	// Flipping any single bit is never accepted.
	for i := range b {
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			if _, err := parsePacket(c, "vdi-nas", testKey); err == nil {
				t.Fatalf("bit %d of byte %d flipped and accepted", bit, i)
			}
		}
	}
	if _, err := parsePacket(b, "vdi-nas", otherKey); !errors.Is(err, errForged) {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := parsePacket(b, "other", testKey); !errors.Is(err, errWrongPair) {
		t.Errorf("wrong pair: %v", err)
	}
	for n := range len(b) {
		if _, err := parsePacket(b[:n], "vdi-nas", testKey); err == nil {
			t.Fatalf("truncated to %d bytes and accepted", n)
		}
	}
	if _, err := appendPacket(nil, &packet{Role: "boss", Pair: "p", Node: "n"}, testKey); err == nil {
		t.Errorf("unknown role encoded")
	}
	if len(b) > MaxPacket {
		t.Errorf("packet %d bytes > MaxPacket", len(b))
	}
}

func TestWindow(t *testing.T) {
	var w window
	steps := []struct {
		seq  uint64
		want bool
	}{
		{0, false}, {1, true}, {1, false}, {3, true}, {2, true}, {2, false}, {3, false},
		{windowSize + 10, true}, {10, false}, {11, true}, {11, false}, {windowSize + 9, true}, {windowSize + 10, false},
	}
	for i, s := range steps {
		if got := w.accept(s.seq); got != s.want {
			t.Errorf("step %d: accept(%d) = %v, want %v", i, s.seq, got, s.want)
		}
	}
	var list []BootID
	for i := range maxRetired + 3 {
		list = retire(list, BootID{byte(i)})
	}
	if len(list) != maxRetired || isRetired(list, BootID{0}) || !isRetired(list, BootID{maxRetired + 2}) {
		t.Errorf("retired list %v", list)
	}
}

func TestConfigErrors(t *testing.T) {
	good := Config{Pair: "p", Node: "a", Peer: "b", Key: testKey, Interval: time.Second, DeadTime: 3 * time.Second,
		Paths: []Path{{Name: "x", Local: netip.MustParseAddrPort("127.0.0.1:0"), Peer: netip.MustParseAddrPort("127.0.0.1:9")}}}
	e, err := Open(good)
	if err != nil {
		t.Fatalf("good config: %v", err)
	}
	e.closeConns()
	for name, mod := range map[string]func(*Config){
		"short key":       func(c *Config) { c.Key = c.Key[:31] },
		"same names":      func(c *Config) { c.Peer = "a" },
		"no path":         func(c *Config) { c.Paths = nil },
		"dead time short": func(c *Config) { c.DeadTime = 2 * time.Second },
		"no pair":         func(c *Config) { c.Pair = "" },
		"no peer port": func(c *Config) {
			c.Paths = []Path{{Local: c.Paths[0].Local, Peer: netip.MustParseAddrPort("127.0.0.1:0")}}
		},
		"bind fails": func(c *Config) {
			c.Paths = []Path{{Local: netip.MustParseAddrPort("192.0.2.1:0"), Peer: c.Paths[0].Peer}}
		},
	} {
		c := good
		mod(&c)
		if e, err := Open(c); err == nil {
			e.closeConns()
			t.Errorf("%s: no error", name)
		}
	}
}

func TestPathsFromSite(t *testing.T) {
	cfg, err := site.Load("../../configs/site.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := PathsFromSite(cfg, "nas-b")
	if err != nil {
		t.Fatal(err)
	}
	want := []Path{
		{Name: "replication", Local: netip.MustParseAddrPort("198.51.100.12:7790"), Peer: netip.MustParseAddrPort("198.51.100.11:7790")},
		{Name: "management", Local: netip.MustParseAddrPort("192.0.2.12:7790"), Peer: netip.MustParseAddrPort("192.0.2.11:7790")},
	}
	if len(paths) != 2 || paths[0] != want[0] || paths[1] != want[1] {
		t.Errorf("paths %v, want %v", paths, want)
	}
	if _, err := PathsFromSite(cfg, "nas-c"); err == nil {
		t.Errorf("no error for a node that is not in the pair")
	}
}

// gapEvent is one datagram from nas-b handed to the endpoint at a chosen
// time: the tests of the longest gap drive handle directly, so they own
// the clock.
type gapEvent struct {
	at   int // ms after the test's start
	path int
	boot byte // the peer's boot ID (its first byte)
	// kind: "" a fresh packet (the next sequence number of its boot,
	// echoing a packet of ours sent just now, so a new boot is proven);
	// "replay" a copy of this boot's previous packet; "unproven" a new
	// packet echoing nothing of ours.
	kind string
}

func TestLongestGap(t *testing.T) {
	ms := func(n int) Duration { return Duration(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name      string
		events    []gapEvent
		wantPaths [2]Duration
		wantPeer  Duration
		wantRx    [2]uint64 // packets accepted per path
		wantBoots int
	}{{
		name:      "one path, one late packet",
		events:    []gapEvent{{0, 0, 1, ""}, {500, 0, 1, ""}, {1000, 0, 1, ""}, {1620, 0, 1, ""}, {2100, 0, 1, ""}},
		wantPaths: [2]Duration{ms(620), 0}, wantPeer: ms(620), wantRx: [2]uint64{5, 0}, wantBoots: 1,
	}, {
		name: "two paths: each its own, the peer the gap on any",
		events: []gapEvent{{0, 0, 1, ""}, {10, 1, 1, ""}, {500, 0, 1, ""}, {510, 1, 1, ""}, {1000, 0, 1, ""},
			{2010, 1, 1, ""}},
		wantPaths: [2]Duration{ms(500), ms(1500)}, wantPeer: ms(1010), wantRx: [2]uint64{3, 3}, wantBoots: 1,
	}, {
		name:      "the silence before the first packet does not count",
		events:    []gapEvent{{5000, 0, 1, ""}, {5400, 0, 1, ""}, {9000, 1, 1, ""}},
		wantPaths: [2]Duration{ms(400), 0}, wantPeer: ms(3600), wantRx: [2]uint64{2, 1}, wantBoots: 1,
	}, {
		name: "a new boot of the peer starts afresh",
		events: []gapEvent{{0, 0, 1, ""}, {50, 1, 1, ""}, {150, 1, 1, ""}, {2000, 0, 1, ""},
			// Boot 2: neither the gap across the change (2000 to 2500 on
			// path 0, 150 to 4000 on path 1) nor boot 1's 2 s counts.
			{2500, 0, 2, ""}, {3000, 0, 2, ""}, {4000, 1, 2, ""}, {4300, 1, 2, ""}},
		wantPaths: [2]Duration{ms(500), ms(300)}, wantPeer: ms(1000), wantRx: [2]uint64{4, 4}, wantBoots: 2,
	}, {
		name: "replayed and unproven packets are not heard",
		events: []gapEvent{{0, 0, 1, ""}, {500, 0, 1, ""}, {1000, 0, 1, ""}, {1900, 0, 1, "replay"}, {2000, 0, 1, ""},
			{2500, 0, 3, "unproven"}, {2900, 0, 1, ""}},
		wantPaths: [2]Duration{ms(1000), 0}, wantPeer: ms(1000), wantRx: [2]uint64{5, 0}, wantBoots: 1,
	}, {
		// Path 1's receiver took its time at 590 but got the lock after
		// path 0's packet of 600: the peer's gap still runs from 600.
		name:      "packets handled out of order across paths",
		events:    []gapEvent{{0, 0, 1, ""}, {600, 0, 1, ""}, {590, 1, 1, ""}, {1200, 0, 1, ""}},
		wantPaths: [2]Duration{ms(600), 0}, wantPeer: ms(600), wantRx: [2]uint64{3, 1}, wantBoots: 1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7001"), netip.MustParseAddrPort("127.0.0.1:7002")}
			e, err := Open(cfgFor(t, "nas-a", "nas-b", peers, nil, 3*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer e.closeConns()
			start := time.Now()
			var ours uint64           // our newest sequence number, "sent" as needed
			seqs := map[byte]uint64{} // the peer's, per boot
			last := map[byte][]byte{} // the peer's newest packet, per boot
			tick := map[byte]uint64{} // the peer's send rounds, per boot
			for _, ev := range tt.events {
				now := start.Add(time.Duration(ev.at) * time.Millisecond)
				var b []byte
				switch ev.kind {
				case "replay":
					b = last[ev.boot]
				default:
					e.mu.Lock()
					e.roundLocked(now) // a send round of ours, just now
					ours = e.seq
					e.mu.Unlock()
					seqs[ev.boot]++
					tick[ev.boot]++
					b = craft(t, testKey, func(pk *packet) {
						pk.Boot, pk.Seq, pk.Tick, pk.Path = BootID{ev.boot}, seqs[ev.boot], tick[ev.boot], uint8(ev.path)
						if ev.kind == "" {
							pk.EchoBoot, pk.EchoSeq = e.BootID(), ours
						}
					})
					last[ev.boot] = b
				}
				e.handle(e.paths[ev.path], peers[ev.path], b, now)
			}
			s := e.Snapshot()
			if s.Peer == nil {
				t.Fatal("no peer accepted")
			}
			if s.Peer.Boots != tt.wantBoots {
				t.Errorf("boots %d, want %d", s.Peer.Boots, tt.wantBoots)
			}
			for i, ps := range s.Paths {
				if ps.Received != tt.wantRx[i] {
					t.Errorf("path %s: %d packets accepted, want %d", ps.Name, ps.Received, tt.wantRx[i])
				}
				if ps.LongestGap != tt.wantPaths[i] {
					t.Errorf("path %s: longest gap %v, want %v", ps.Name, time.Duration(ps.LongestGap), time.Duration(tt.wantPaths[i]))
				}
			}
			if s.Peer.LongestGap != tt.wantPeer {
				t.Errorf("peer: longest gap %v, want %v", time.Duration(s.Peer.LongestGap), time.Duration(tt.wantPeer))
			}
		})
	}
}

// The longest gaps are in the status JSON, and left out while there is
// none.
func TestLongestGapJSON(t *testing.T) {
	s := Snapshot{Peer: &PeerStatus{LongestGap: Duration(620 * time.Millisecond)},
		Paths: []PathStatus{{Name: "replication", LongestGap: Duration(1500 * time.Millisecond)}, {Name: "management"}}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Peer  map[string]any   `json:"peer"`
		Paths []map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if g := got.Peer["longest_gap"]; g != "620ms" {
		t.Errorf("peer longest_gap %v, want 620ms", g)
	}
	if g := got.Paths[0]["longest_gap"]; g != "1.5s" {
		t.Errorf("path longest_gap %v, want 1.5s", g)
	}
	if g, ok := got.Paths[1]["longest_gap"]; ok {
		t.Errorf("path without a gap has longest_gap %v", g)
	}
}

// The disk state goes on the wire as DRBD spells it: these bytes are
// what every release sends, whatever type holds the state in memory.
func TestPacketGolden(t *testing.T) {
	for d, word := range map[ha.DiskState]string{
		ha.Diskless: "Diskless", ha.Attaching: "Attaching", ha.Detaching: "Detaching", ha.Failed: "Failed",
		ha.Negotiating: "Negotiating", ha.Inconsistent: "Inconsistent", ha.Outdated: "Outdated",
		ha.DUnknown: "DUnknown", ha.Consistent: "Consistent", ha.UpToDate: "UpToDate",
	} {
		if string(d) != word {
			t.Errorf("disk state %q goes on the wire as %q", word, string(d))
		}
	}
	if len(ha.DiskStates) != 10 {
		t.Errorf("%d disk states; the table above has 10", len(ha.DiskStates))
	}
	st := State{Role: ha.Standby, Disk: ha.UpToDate, HoldsVote: true, Epoch: 3}
	in := packet{Role: st.Role, HoldsVote: st.HoldsVote, Path: 1, Boot: BootID{9, 8}, Seq: 42, Tick: 21, SentUnix: 1234567890,
		Epoch: st.Epoch, EchoBoot: BootID{7}, EchoSeq: 41, EchoHold: 500, Pair: "vdi-nas", Node: "nas-b", Disk: string(st.Disk)}
	b, err := appendPacket(nil, &in, testKey)
	if err != nil {
		t.Fatal(err)
	}
	const want = "544448420101010109080000000000000000000000000000000000000000002a000000000000001500000000499602d20000000000000003070000000000000000000000000000000000000000000029000001f4077664692d6e6173056e61732d62085570546f4461746520f4f6363d458da2f53383375df2b4f308f71fcf2e73b1492e3d156c8f257e2c"
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("packet bytes changed:\n got %s\nwant %s", got, want)
	}
}

// An attacker on one path holds back the peer's heartbeats and releases
// them after the peer died. Authentic and never seen before, they would
// pass the replay window; they must not keep the dead peer alive: the
// peer is dead within the dead time of its real death (plus a margin for
// the last round and scheduling), stays dead, and what was too old to
// prove anything is counted as stale.
func TestDelayedHeartbeatsDoNotKeepDeadPeerAlive(t *testing.T) {
	const (
		dead     = time.Second
		interval = 20 * time.Millisecond // cfgFor's
		margin   = dead / 4
	)
	tests := []struct {
		name     string
		withhold time.Duration // path 0 withholds nas-b's packets this long before it dies; 0: no attacker
		burst    bool          // release all at once, else one per interval
		stale    string        // how many released packets are stale: "none", "some", "all"
	}{
		{name: "no attacker", stale: "none"},
		// Released over 2D: all older than D when they arrive.
		{name: "withheld 2D, released one per interval", withhold: 2 * dead, stale: "all"},
		// Those sent in the last D before the death still prove
		// something, but nothing past the death.
		{name: "withheld 2D, released in one burst", withhold: 2 * dead, burst: true, stale: "some"},
		// All fresh enough to be accepted, yet the peer's death still
		// counts from its real last packet, not from their arrival.
		{name: "withheld D/2, released one per interval", withhold: dead / 2, stale: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, dead)
			await(t, p.a, "seeing nas-b on both paths", bothPathsAlive)
			await(t, p.b, "seeing nas-a on both paths", bothPathsAlive)
			r := p.relays[0]
			if tt.withhold > 0 {
				r.startWithholding()
				time.Sleep(tt.withhold)
				if s := p.a.Snapshot(); !s.Seen {
					t.Fatalf("nas-b not seen through path 1 while path 0 withholds")
				}
			}
			snap := p.a.Snapshot()
			before, beforeRx := snap.Dropped, snap.Paths[0].Received
			p.stop(p.b) // nas-b dies: no packet of it is sent after this
			died := time.Now()
			held := r.takeHeld()
			if tt.withhold > 0 && len(held) < int(tt.withhold/interval)/2 {
				t.Fatalf("only %d packets withheld in %v", len(held), tt.withhold)
			}

			released := make(chan struct{})
			go func() {
				defer close(released)
				tick := time.NewTicker(interval)
				defer tick.Stop()
				for _, b := range held {
					if !tt.burst {
						<-tick.C
					}
					r.injectToA(t, b)
				}
			}()

			s := await(t, p.a, "nas-b dead", func(s Snapshot) bool { return !s.Alive && !s.Seen })
			deadAfter := s.At.Sub(died)
			if took := deadAfter; took > dead+margin || took < dead/2 {
				t.Errorf("nas-b declared dead %v after it died; want the dead time %v (margin %v)", took, dead, margin)
			}
			// Stays dead while the rest is released, and a little after.
			for {
				ch := p.a.Changed()
				if s := p.a.Snapshot(); s.Alive || s.Seen {
					t.Fatalf("nas-b alive again %v after it died (alive %v, seen %v, last heard %v before its death)",
						s.At.Sub(died), s.Alive, s.Seen, died.Sub(s.Peer.LastHeard))
				}
				select {
				case <-ch:
					continue
				case <-released:
				}
				break
			}
			want := uint64(len(held))
			s = await(t, p.a, "every released packet judged", func(s Snapshot) bool {
				return s.Paths[0].Received-beforeRx+s.Dropped.Stale-before.Stale >= want
			})
			if s.Alive || s.Seen {
				t.Errorf("nas-b alive %v after it died", s.At.Sub(died))
			}
			stale := s.Dropped.Stale - before.Stale
			t.Logf("%d packets withheld; %d dropped as stale, %d accepted; dead %v after the death",
				len(held), stale, s.Paths[0].Received-beforeRx, deadAfter)
			switch {
			case tt.stale == "none" && stale != 0,
				tt.stale == "all" && stale != want,
				tt.stale == "some" && (stale == 0 || stale == want):
				t.Errorf("%d of %d released packets dropped as stale, want %s", stale, want, tt.stale)
			}
			if d := s.Dropped; d.Replayed != before.Replayed || d.Forged != before.Forged {
				t.Errorf("drops %+v, before %+v: the withheld packets are neither replays nor forged", d, before)
			}
		})
	}
}

// A peer that cannot hear us still proves its packets fresh through the
// hold of its old echo, so it stays alive (one-way contact), for many
// dead times; it is not seen, and it is dead a dead time after it stops.
func TestOneWayContactStaysAlive(t *testing.T) {
	const dead = 500 * time.Millisecond
	p := newPair(t, dead)
	await(t, p.a, "both paths", bothPathsAlive)
	await(t, p.b, "both paths", bothPathsAlive)

	p.relays[0].cut(true, false) // nas-a -> nas-b cut on both paths
	p.relays[1].cut(true, false)
	await(t, p.a, "nas-b deaf to nas-a", func(s Snapshot) bool { return !s.Seen && !s.HearsUs })
	await(t, p.b, "nas-a silent", func(s Snapshot) bool { return !s.Alive })
	until := time.Now().Add(4 * dead)
	for time.Now().Before(until) {
		ch := p.a.Changed()
		if s := p.a.Snapshot(); !s.Alive || s.Seen {
			t.Fatalf("one-way: nas-b alive %v, seen %v", s.Alive, s.Seen)
		}
		select {
		case <-ch:
		case <-time.After(time.Until(until)):
		}
	}
	if d := p.a.Snapshot().Dropped; d.Stale != 0 {
		t.Errorf("%d stale packets from a peer that only cannot hear us", d.Stale)
	}

	p.stop(p.b)
	died := time.Now()
	s := await(t, p.a, "nas-b dead", func(s Snapshot) bool { return !s.Alive })
	if took := s.At.Sub(died); took > dead+dead/2 {
		t.Errorf("one-way peer declared dead %v after it died, dead time %v", took, dead)
	}
}

// The proof arithmetic, on a clock the test owns: a packet of nas-b's
// current boot echoes one of our rounds (sent at sentAt ms) and says it
// held that echo for hold ms; it arrives at arrive ms. Dead time 1 s.
func TestFreshnessProof(t *testing.T) {
	const dead = time.Second
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name          string
		sentAt, hold  int // ms; sentAt < 0: echoes nothing of ours
		arrive        int // ms
		wantStale     bool
		wantLastHeard time.Duration // when accepted: the proven send time
	}{
		// The hold loses 0.1 % (a fast peer clock).
		{name: "prompt", sentAt: 1000, hold: 10, arrive: 1012, wantLastHeard: ms(1010) - 10*time.Microsecond},
		{name: "held long by the peer (one-way), still fresh", sentAt: 1000, hold: 60000, arrive: 61000, wantLastHeard: ms(1000 + 60000 - 60)},
		{name: "held back on the way past the dead time", sentAt: 1000, hold: 10, arrive: 2100, wantStale: true},
		{name: "just within the dead time", sentAt: 1000, hold: 0, arrive: 2000, wantLastHeard: ms(1000)},
		{name: "a hold beyond the arrival is capped", sentAt: 1000, hold: 5000, arrive: 1500, wantLastHeard: ms(1500)},
		{name: "echoes nothing of ours", sentAt: -1, arrive: 1000, wantStale: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7001"), netip.MustParseAddrPort("127.0.0.1:7002")}
			e, err := Open(cfgFor(t, "nas-a", "nas-b", peers, nil, dead))
			if err != nil {
				t.Fatal(err)
			}
			defer e.closeConns()
			start := time.Now()
			at := func(n int) time.Time { return start.Add(ms(n)) }
			round := func(n int) uint64 {
				e.mu.Lock()
				defer e.mu.Unlock()
				e.roundLocked(at(n))
				return e.seq
			}
			// nas-b's boot is accepted first, from a prompt packet at 0.
			first := round(0)
			e.handle(e.paths[0], peers[0], craft(t, testKey, func(pk *packet) {
				pk.Boot, pk.EchoBoot, pk.EchoSeq = BootID{2}, e.BootID(), first
			}), at(1))
			if s := e.Snapshot(); s.Peer == nil || s.Peer.Boot != (BootID{2}) {
				t.Fatal("nas-b's boot not accepted")
			}
			var echo uint64
			if tt.sentAt >= 0 {
				echo = round(tt.sentAt)
			}
			e.handle(e.paths[1], peers[1], craft(t, testKey, func(pk *packet) {
				pk.Boot, pk.Seq, pk.Tick = BootID{2}, 2, 2
				if echo != 0 {
					pk.EchoBoot, pk.EchoSeq, pk.EchoHold = e.BootID(), echo, uint32(ms(tt.hold).Microseconds())
				}
			}), at(tt.arrive))
			s := e.Snapshot()
			if got := s.Dropped.Stale; got != map[bool]uint64{true: 1}[tt.wantStale] {
				t.Errorf("stale %d, want stale %v", got, tt.wantStale)
			}
			if tt.wantStale {
				if s.Paths[1].Received != 0 || !s.Paths[1].LastHeard.IsZero() {
					t.Errorf("a stale packet counted as heard: %+v", s.Paths[1])
				}
				return
			}
			if got := s.Paths[1].LastHeard.Sub(start); got != tt.wantLastHeard {
				t.Errorf("path last heard at %v, want %v", got, tt.wantLastHeard)
			}
			if got := s.Peer.LastHeard.Sub(start); got != tt.wantLastHeard {
				t.Errorf("peer last heard at %v, want %v", got, tt.wantLastHeard)
			}
		})
	}
}

// The credit of our packets: the peer finds us alive at least until the
// credit plus the dead time, so our "hears us" must end by then too.
func TestHeardUsIsTheCredit(t *testing.T) {
	peers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7001")}
	e, err := Open(cfgFor(t, "nas-a", "nas-b", peers, nil, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer e.closeConns()
	start := time.Now()
	at := func(n int) time.Time { return start.Add(time.Duration(n) * time.Millisecond) }
	round := func(n int) uint64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.roundLocked(at(n))
		return e.seq
	}
	send := func(seq, echo uint64, holdMS, arrive int) {
		e.handle(e.paths[0], peers[0], craft(t, testKey, func(pk *packet) {
			pk.Boot, pk.Seq, pk.Tick = BootID{2}, seq, seq
			pk.EchoBoot, pk.EchoSeq, pk.EchoHold = e.BootID(), echo, uint32(holdMS*1000)
		}), at(arrive))
	}
	s0 := round(0)
	send(1, s0, 5, 10) // nas-b's boot accepted; proven sent at 5 ms (less 0.1 %)
	// Our round at 100 echoes that packet, held 90 ms: nas-b will prove
	// it sent at >= its own send of the echoed packet (>= our proof of
	// it) + 90 ms (less 0.1 %).
	s1 := round(100)
	send(2, s1, 3, 110)
	s := e.Snapshot()
	want := at(0).Add(discount(5 * time.Millisecond)).Add(discount(90 * time.Millisecond))
	if !s.Peer.HeardUs.Equal(want) {
		t.Errorf("heard us at %v, want the credit %v (our send time %v)", s.Peer.HeardUs.Sub(start), want.Sub(start), time.Duration(100*time.Millisecond))
	}
}
