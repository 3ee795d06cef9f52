package heartbeat

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/witness"
	"tandem.dev/tandem/site"
)

// An attacker on the witness host holds what that host is given (the
// witness config witness.FromSite builds) and sees head-a's heartbeats.
// Whether it runs an endpoint with that key or seals packets with it
// directly, echoing head-a's newest packet so that only the key can fail
// them, head-a counts them forged and never sees a peer. The real head-b,
// with the pair key, is seen: the test can tell the two apart.
func TestWitnessHostCannotForgeHeartbeats(t *testing.T) {
	lab, err := site.Load("../../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	pairKey, err := lab.PairKey()
	if err != nil {
		t.Fatal(err)
	}
	wcfg, _, err := witness.FromSite(lab, "")
	if err != nil {
		t.Fatal(err)
	}

	// head-b's address: reserved, so head-a can name it before it exists.
	bConn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	bAddr := bConn.LocalAddr().(*net.UDPAddr).AddrPort()
	cfg := func(node, peer string, key []byte, local, remote netip.AddrPort) Config {
		return Config{Pair: lab.Pair.Name, Node: node, Peer: peer, Key: key, Paths: []Path{{Name: "management", Local: local, Peer: remote}},
			Interval: 20 * time.Millisecond, DeadTime: 200 * time.Millisecond, Log: testLog(t).With("node", node)}
	}
	p := &pair{cancel: map[*Endpoint]context.CancelFunc{}, done: map[*Endpoint]chan struct{}{}}
	a := p.start(t, cfg("head-a", "head-b", pairKey, netip.MustParseAddrPort("127.0.0.1:0"), bAddr))

	// 1. Sealed by hand with the witness key, echoing head-a's newest
	// packet (its boot and sequence number travel in the clear).
	buf := make([]byte, MaxPacket)
	for i := range 10 {
		bConn.SetReadDeadline(time.Now().Add(waitFor))
		n, err := bConn.Read(buf)
		if err != nil || n < fixedLen {
			t.Fatalf("no heartbeat from head-a: %v", err)
		}
		pk := packet{Role: ha.Active, Boot: BootID{0xee}, Seq: uint64(i + 1), Tick: uint64(i + 1), Pair: lab.Pair.Name, Node: "head-b",
			Disk: string(ha.UpToDate), EchoSeq: binary.BigEndian.Uint64(buf[24:32])}
		copy(pk.EchoBoot[:], buf[8:24])
		b, err := appendPacket(nil, &pk, wcfg.Key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bConn.WriteToUDPAddrPort(b, a.LocalAddr(0)); err != nil {
			t.Fatal(err)
		}
	}
	s := await(t, a, "10 packets judged", func(s Snapshot) bool { return s.Seen || s.Dropped.Forged >= 10 })
	if s.Seen || s.Dropped.Forged != 10 {
		t.Errorf("sealed with the witness key: head-a sees a peer %v, forged %d of 10", s.Seen, s.Dropped.Forged)
	}
	bConn.Close()

	// 2. An endpoint run with the witness key as its key.
	evil := p.start(t, cfg("head-b", "head-a", wcfg.Key, bAddr, a.LocalAddr(0)))
	evil.SetState(State{Role: ha.Active, Disk: ha.UpToDate})
	s = await(t, a, "the endpoint's packets judged", func(s Snapshot) bool { return s.Seen || s.Dropped.Forged >= 30 })
	if s.Seen || s.Peer != nil {
		t.Errorf("an endpoint with the witness key: head-a sees a peer: %+v", s.Peer)
	}
	p.stop(evil)

	// 3. The real head-b, with the pair key, is seen.
	p.start(t, cfg("head-b", "head-a", pairKey, bAddr, a.LocalAddr(0)))
	await(t, a, "the real head-b seen", func(s Snapshot) bool { return s.Seen })
}
