package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Hub is the lab's shared management/service segment: a learning switch
// on one UDP socket on 127.0.0.1. Each member VM's NIC is a UDP socket
// netdev sending to the hub from its own port; one datagram is one
// Ethernet frame. UDP multicast netdevs would do without a hub, but they
// are not confined to loopback.
type Hub struct {
	conn    *net.UDPConn
	members map[netip.AddrPort]string // port → VM name
	log     *slog.Logger

	mu   sync.Mutex
	macs map[[6]byte]netip.AddrPort

	// dhcp, when set, sees every frame and its replies enter the hub as
	// if from one more port (see SetDHCP).
	dhcp *DHCPServer

	// tap, when set, sees a copy of every frame a member sends.
	tap atomic.Pointer[func([]byte)]
	// filter, when set, decides which members get a frame (see SetFilter).
	filter atomic.Pointer[func(frame []byte, from, to string) bool]

	Forwarded, Flooded, Dropped atomic.Uint64
	// Filtered counts the deliveries the filter refused: one per frame
	// and member it kept the frame from.
	Filtered atomic.Uint64

	running atomic.Bool
	done    chan struct{}
}

// SetDHCP puts a DHCP server on the segment; call it before Run.
func (h *Hub) SetDHCP(s *DHCPServer) { h.dhcp = s }

// DHCP is the segment's DHCP server, nil if it has none.
func (h *Hub) DHCP() *DHCPServer { return h.dhcp }

// SetTap makes f see a copy of every frame a member sends from now on
// (nil: none), as a mirror port would: for a test that captures traffic.
// f runs on the hub's goroutine and must not block.
func (h *Hub) SetTap(f func(frame []byte)) {
	if f == nil {
		h.tap.Store(nil)
		return
	}
	h.tap.Store(&f)
}

// SetFilter makes the hub deliver a frame from member from to member to
// only while f returns true (nil: deliver everything), as a managed
// switch's port ACL would: for a test that cuts some paths across the
// segment and keeps others, e.g. a partition between two members that
// both still reach a third. from is "" for a frame of Inject or the DHCP
// server. f runs on the hub's goroutine for every delivery and must not
// block; the deliveries it refuses are counted in Filtered.
func (h *Hub) SetFilter(f func(frame []byte, from, to string) bool) {
	if f == nil {
		h.filter.Store(nil)
		return
	}
	h.filter.Store(&f)
}

// Inject puts a frame on the segment as if from a host outside the lab
// (a test's attacker): it is switched like any other frame.
func (h *Hub) Inject(frame []byte) {
	if len(frame) < 14 {
		return
	}
	h.forward(frame, netip.AddrPort{})
}

// NewHub listens on 127.0.0.1:port for the members (name → their
// netdev's localaddr port). Frames from anyone else are dropped.
func NewHub(port int, members map[string]int, log *slog.Logger) (*Hub, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("qemu: hub: %w", err)
	}
	h := &Hub{conn: conn, members: map[netip.AddrPort]string{}, macs: map[[6]byte]netip.AddrPort{}, log: log, done: make(chan struct{})}
	for name, p := range members {
		h.members[netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(p))] = name
	}
	return h, nil
}

// Addr is the hub's address, for the members' udp= option.
func (h *Hub) Addr() netip.AddrPort { return h.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Run forwards frames until ctx ends or Close.
func (h *Hub) Run(ctx context.Context) {
	h.running.Store(true)
	defer close(h.done)
	stop := context.AfterFunc(ctx, func() { h.conn.Close() })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, from, err := h.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				h.log.Warn("hub stopped", "err", err)
			}
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if _, ok := h.members[from]; !ok || n < 14 {
			h.Dropped.Add(1)
			continue
		}
		if tap := h.tap.Load(); tap != nil {
			(*tap)(bytes.Clone(buf[:n]))
		}
		h.forward(buf[:n], from)
		if h.dhcp != nil {
			if reply := h.dhcp.Handle(buf[:n]); reply != nil {
				h.forward(reply, netip.AddrPort{}) // from no member port, so no member is skipped
			}
		}
	}
}

func (h *Hub) forward(frame []byte, from netip.AddrPort) {
	var dst, src [6]byte
	copy(dst[:], frame[0:6])
	copy(src[:], frame[6:12])
	h.mu.Lock()
	if src[0]&1 == 0 && from.IsValid() { // the DHCP server has no port to learn
		h.macs[src] = from
	}
	to, known := h.macs[dst]
	h.mu.Unlock()
	if known && dst[0]&1 == 0 {
		if to != from && h.allowed(frame, from, to) {
			h.send(frame, to)
			h.Forwarded.Add(1)
		}
		return
	}
	for m := range h.members { // broadcast, multicast, or not yet learned
		if m != from && h.allowed(frame, from, m) {
			h.send(frame, m)
		}
	}
	h.Flooded.Add(1)
}

// allowed asks the filter, if any, whether the frame from goes to to.
func (h *Hub) allowed(frame []byte, from, to netip.AddrPort) bool {
	f := h.filter.Load()
	if f == nil || (*f)(frame, h.members[from], h.members[to]) {
		return true
	}
	h.Filtered.Add(1)
	return false
}

func (h *Hub) send(frame []byte, to netip.AddrPort) {
	// A member that is down just loses the frame, as on a real switch.
	if _, err := h.conn.WriteToUDPAddrPort(frame, to); err != nil {
		h.Dropped.Add(1)
	}
}

// Close stops the hub and waits for a running Run to return.
func (h *Hub) Close() {
	h.conn.Close()
	if h.running.Load() {
		<-h.done
	}
}
