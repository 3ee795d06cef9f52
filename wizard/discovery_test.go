package wizard

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func testBeacon(id string, port int, image string) Beacon {
	return Beacon{Magic: beaconMagic, V: beaconVersion, ID: id, Port: port, FP: strings.Repeat("ab", 32), Image: image}
}

// TestDiscovery: two heads on loopback find each other; the wizard
// address is the beacon's source with the beacon's port; what is not a
// well-formed beacon is ignored, and so is the head's own.
func TestDiscovery(t *testing.T) {
	port := freeUDPPort(t, "127.0.0.2")
	log := slog.New(slog.DiscardHandler)
	mk := func(ip, other, id string) *discovery {
		d, err := newDiscovery(Discovery{Listen: fmt.Sprintf("%s:%d", ip, port), AnnounceTo: []string{fmt.Sprintf("%s:%d", other, port), fmt.Sprintf("%s:%d", ip, port)}, Interval: 50 * time.Millisecond}, log)
		if err != nil {
			t.Fatal(err)
		}
		d.setSelf(testBeacon(id, 8443, testImage))
		return d
	}
	a := mk("127.0.0.2", "127.0.0.3", "aaaaaaaaaaaa")
	b := mk("127.0.0.3", "127.0.0.2", "bbbbbbbbbbbb")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.run(ctx)
	go b.run(ctx)
	waitFor(t, 5*time.Second, "a hears b", func() bool { return len(a.list()) == 1 })
	p := a.list()[0]
	if p.ID != "bbbbbbbbbbbb" || p.Addr != "127.0.0.3:8443" || p.Image != testImage || hex.EncodeToString(p.Fingerprint) != strings.Repeat("ab", 32) {
		t.Errorf("a's peer: %+v", p)
	}

	// Junk from a third sender on the same network.
	junk, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.4")}, &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	bad := []Beacon{
		{Magic: "other", V: 1, ID: "cccccccccccc", Port: 1, FP: strings.Repeat("ab", 32), Image: "x"},
		testBeacon("cccccccccccc", 0, testImage),
		testBeacon("CCCC", 443, testImage),
		testBeacon("cccccccccccc", 443, ""),
		testBeacon("cccccccccccc", 443, "bad\x00version"),
		func() Beacon { b := testBeacon("cccccccccccc", 443, testImage); b.FP = "abcd"; return b }(),
		func() Beacon { b := testBeacon("cccccccccccc", 443, testImage); b.V = 2; return b }(),
	}
	for _, bb := range bad {
		m, _ := json.Marshal(bb)
		junk.Write(m)
	}
	junk.Write([]byte("not json"))
	junk.Write(make([]byte, 2000))
	good, _ := json.Marshal(testBeacon("dddddddddddd", 443, "tandem 2027.01.1"))
	junk.Write(good)
	waitFor(t, 5*time.Second, "the good beacon", func() bool { return len(a.list()) == 2 })
	for _, p := range a.list() {
		if p.ID != "bbbbbbbbbbbb" && (p.ID != "dddddddddddd" || p.Addr != "127.0.0.4:443") {
			t.Errorf("accepted %+v", p)
		}
	}

	// A head that is being paired stops announcing; its entry ages out.
	b.setEnabled(false)
	waitFor(t, 5*time.Second, "b to age out", func() bool {
		_, ok := a.lookup("bbbbbbbbbbbb")
		return !ok
	})
}

// TestDiscoveryPeerCap: a flood of head IDs does not grow the table
// past its cap.
func TestDiscoveryPeerCap(t *testing.T) {
	d := &discovery{interval: time.Hour, now: time.Now, peers: map[string]Peer{}}
	d.self.ID = "aaaaaaaaaaaa"
	src := mustAddrPort("127.0.0.9:7793")
	for i := range 3 * maxPeers {
		m, _ := json.Marshal(testBeacon(fmt.Sprintf("%012x", i+1), 443, testImage))
		d.receive(m, src)
	}
	if n := len(d.list()); n != maxPeers {
		t.Errorf("%d peers, want the cap %d", n, maxPeers)
	}
	own, _ := json.Marshal(testBeacon("aaaaaaaaaaaa", 443, testImage))
	d.peers = map[string]Peer{}
	d.receive(own, src)
	if len(d.list()) != 0 {
		t.Error("the head's own beacon was listed")
	}
}
