package pid1

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"tandem.dev/tandem/ha/witness"
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
	ha := &haSup{log: slog.New(slog.DiscardHandler), peer: "head-b", wc: a}
	hb := &haSup{log: slog.New(slog.DiscardHandler), peer: "head-a", wc: b}

	if says, err := ha.outdatePeer(ctx, "test"); err == nil {
		t.Fatalf("without the vote: %q, want an error (I/O stays frozen)", says)
	}
	if granted, _, _, err := a.Request(ctx); !granted || err != nil {
		t.Fatalf("head-a's request: granted %v, %v", granted, err)
	}
	if says, err := ha.outdatePeer(ctx, "test"); says != "outdated" || err != nil {
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
	if says, err := hb.outdatePeer(ctx, "test"); err == nil {
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
	none := &haSup{log: slog.New(slog.DiscardHandler), peer: "head-b"}
	if says, err := none.outdatePeer(ctx, "test"); err == nil {
		t.Errorf("no tiebreaker: %q", says)
	}
}
