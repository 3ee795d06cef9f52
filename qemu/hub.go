package qemu

import (
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

	Forwarded, Flooded, Dropped atomic.Uint64
	running                     atomic.Bool
	done                        chan struct{}
}

// SetDHCP puts a DHCP server on the segment; call it before Run.
func (h *Hub) SetDHCP(s *DHCPServer) { h.dhcp = s }

// DHCP is the segment's DHCP server, nil if it has none.
func (h *Hub) DHCP() *DHCPServer { return h.dhcp }

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
		if to != from {
			h.send(frame, to)
			h.Forwarded.Add(1)
		}
		return
	}
	for m := range h.members { // broadcast, multicast, or not yet learned
		if m != from {
			h.send(frame, m)
		}
	}
	h.Flooded.Add(1)
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
