package supervisor

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/heartbeat"
	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/services/supervise"
)

// outdatePeer answers DRBD's fence-peer handler: only a head holding the
// witness vote gets "outdated", and the witness then records it as the
// writer and refuses the peer the vote.
func TestOutdatePeer(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	srv, err := witness.NewServer(witness.Config{Pair: "lab", Key: key, Quiet: -1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go srv.Serve(ctx, conn)
	client := func(node string) *witness.Client {
		c, err := witness.NewClient(witness.ClientConfig{Pair: "lab", Node: node, Key: key, Addr: conn.LocalAddr().String(), Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := client("head-a"), client("head-b")
	ha := &Supervisor{clock: supervise.RealClock, log: slog.New(slog.DiscardHandler), peer: "head-b", wc: a}
	hb := &Supervisor{clock: supervise.RealClock, log: slog.New(slog.DiscardHandler), peer: "head-a", wc: b}

	if says, err := ha.outdatePeer(ctx, "test", time.Now()); err == nil {
		t.Fatalf("without the vote: %q, want an error (I/O stays frozen)", says)
	}
	if granted, _, _, err := a.Request(ctx); !granted || err != nil {
		t.Fatalf("head-a's request: granted %v, %v", granted, err)
	}
	if says, err := ha.outdatePeer(ctx, "test", time.Now()); says != "outdated" || err != nil {
		t.Fatalf("with the vote: %q, %v; want outdated", says, err)
	}
	if w := srv.Status().Writer; w != "head-a" {
		t.Errorf("the witness records writer %q, want head-a", w)
	}
	if !a.Vote().Writer {
		t.Error("head-a's client does not know it is the writer")
	}
	// head-b cannot outdate head-a, nor get the vote, even once head-a lets it go.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if says, err := hb.outdatePeer(ctx, "test", time.Now()); err == nil {
		t.Errorf("head-b outdated the writer: %q", says)
	}
	if granted, _, _, err := b.Request(ctx); granted || err != nil || !b.Vote().Outdated {
		t.Errorf("head-b's request past the writer: granted %v, outdated %v, %v", granted, b.Vote().Outdated, err)
	}
	// After the resync head-a lifts the record, and head-b may hold the vote.
	if err := a.ClearWriter(ctx); err != nil {
		t.Fatal(err)
	}
	if granted, _, _, err := b.Request(ctx); !granted || err != nil {
		t.Errorf("head-b after the record was lifted: granted %v, %v", granted, err)
	}

	// No tiebreaker at all: frozen.
	none := &Supervisor{clock: supervise.RealClock, log: slog.New(slog.DiscardHandler), peer: "head-b"}
	if says, err := none.outdatePeer(ctx, "test", time.Now()); err == nil {
		t.Errorf("no tiebreaker: %q", says)
	}
}

// A peer still heard over another path that has marked its own disk
// Outdated in DRBD's metadata lets the frozen head write on, with no
// witness at all; until it says so, nothing does.
func TestOutdatePeerByThePeersOwnMark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ports := make([]netip.AddrPort, 2)
	for i := range ports {
		l, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.LocalAddr().(*net.UDPAddr).AddrPort()
		l.Close()
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	endpoint := func(node, peer string, local, remote netip.AddrPort) *heartbeat.Endpoint {
		e, err := heartbeat.Open(heartbeat.Config{Pair: "lab", Node: node, Peer: peer, Key: key,
			Paths:    []heartbeat.Path{{Name: "management", Local: local, Peer: remote}},
			Interval: 50 * time.Millisecond, DeadTime: time.Second, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		go e.Run(ctx)
		return e
	}
	a := endpoint("head-a", "head-b", ports[0], ports[1])
	b := endpoint("head-b", "head-a", ports[1], ports[0])
	h := &Supervisor{clock: supervise.RealClock, log: slog.New(slog.DiscardHandler), peer: "head-b", hb: a}
	await := func(what string, cond func(heartbeat.Snapshot) bool) {
		t.Helper()
		for !cond(a.Snapshot()) {
			if ctx.Err() != nil {
				t.Fatalf("head-a never saw %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	for _, tc := range []struct {
		name  string
		state heartbeat.State
		want  string // "": an error, I/O stays frozen
	}{
		{"peer up to date", heartbeat.State{Role: ha.Standby, Disk: ha.UpToDate}, ""},
		// Disk Outdated alone may be the peer's own caution (replicaWatch),
		// which a reboot forgets: not enough.
		{"peer counts itself outdated, not marked", heartbeat.State{Role: ha.Standby, Disk: ha.Outdated}, ""},
		{"peer marked outdated in DRBD", heartbeat.State{Role: ha.Standby, Disk: ha.Outdated, Outdated: true}, "outdated"},
	} {
		b.SetState(tc.state)
		await(tc.name, func(s heartbeat.Snapshot) bool { return s.Seen && s.Peer != nil && s.Peer.State == tc.state })
		says, err := h.outdatePeer(ctx, "test", time.Now())
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%s: %q, want an error (I/O stays frozen)", tc.name, says)
		case tc.want != "" && (err != nil || says != tc.want):
			t.Errorf("%s: %q, %v; want %q", tc.name, says, err, tc.want)
		}
	}
	// A mark the peer announced before this head's DRBD lost it may
	// predate a resync that cleared it: not enough.
	if says, err := h.outdatePeer(ctx, "test", time.Now().Add(time.Hour)); err == nil {
		t.Errorf("a mark announced before the loss: %q, want an error", says)
	}
	// A peer no longer seen proves nothing now.
	cancel()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	for a.Snapshot().Seen {
		if ctx2.Err() != nil {
			t.Fatal("head-a still sees head-b")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if says, err := h.outdatePeer(ctx2, "test", time.Now()); err == nil {
		t.Errorf("peer gone: %q, want an error", says)
	}
}
