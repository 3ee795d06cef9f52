package qemu

import (
	"net"
	"sync"
	"testing"
)

// A filter partitions the segment: frames between a and b stop, in both
// directions, broadcast and unicast, while both still reach c; without
// the filter everything flows again.
func TestHubFilter(t *testing.T) {
	a, b, c := udp(t), udp(t), udp(t)
	h, hub := testHub(t, a, b, c)

	// Learn every member's MAC first, so that unicast is switched, not flooded.
	for _, m := range []struct {
		conn *net.UDPConn
		mac  byte
	}{{a, 0xa0}, {b, 0xb0}, {c, 0xc0}} {
		m.conn.WriteToUDP(frame(0xff, m.mac, "hello"), hub)
	}
	for _, m := range []*net.UDPConn{a, b, c} {
		for recv(m) != "" {
		}
	}

	type seen struct{ from, to string }
	var (
		mu   sync.Mutex
		last seen
	)
	h.SetFilter(func(_ []byte, from, to string) bool {
		mu.Lock()
		last = seen{from, to}
		mu.Unlock()
		return !(from == "a" && to == "b" || from == "b" && to == "a")
	})
	a.WriteToUDP(frame(0xff, 0xa0, "a to all"), hub)
	if got := recv(c); got != "a to all" {
		t.Errorf("c got %q, want a's broadcast", got)
	}
	if got := recv(b); got != "" {
		t.Errorf("b got a's broadcast %q across the partition", got)
	}
	b.WriteToUDP(frame(0xa0, 0xb0, "b to a"), hub)
	if got := recv(a); got != "" {
		t.Errorf("a got b's unicast %q across the partition", got)
	}
	a.WriteToUDP(frame(0xc0, 0xa0, "a to c"), hub)
	if got := recv(c); got != "a to c" {
		t.Errorf("c got %q, want a's unicast", got)
	}
	c.WriteToUDP(frame(0xb0, 0xc0, "c to b"), hub)
	if got := recv(b); got != "c to b" {
		t.Errorf("b got %q, want c's unicast", got)
	}
	h.Inject(frame(0xa0, 0xee, "injected"))
	if got := recv(a); got != "injected" {
		t.Errorf("a got %q, want the injected frame", got)
	}
	if n := h.Filtered.Load(); n != 2 {
		t.Errorf("Filtered = %d, want 2 (a's broadcast to b, b's unicast to a)", n)
	}
	mu.Lock()
	if want := (seen{"", "a"}); last != want {
		t.Errorf("the filter was last asked about %+v, want %+v (Inject has no member)", last, want)
	}
	mu.Unlock()

	h.SetFilter(nil)
	b.WriteToUDP(frame(0xa0, 0xb0, "b to a again"), hub)
	if got := recv(a); got != "b to a again" {
		t.Errorf("a got %q after the filter was lifted", got)
	}
}
