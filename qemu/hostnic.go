package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The lab's host port: the host reaches the management segment (a head's
// web wizard, say) only through a network namespace of the lab process's
// own, whose one link besides lo is a TAP device bridged to the hub as
// the member "host". The host's own namespace gets no interface, address
// or route on the segment, so nothing the host runs can send there by
// mistake; it connects through Lab.Forward's loopback ports, and Go code
// in the lab process through Lab.DialContext.

// HostMember is the hub member name of the lab's host port (see
// Hub.SetFilter).
const HostMember = "host"

// hostNICMAC is the host port's MAC: the lab's 52:54:00:1a prefix with
// a VM byte no lab VM uses (the DHCP server has ff).
var hostNICMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x1a, 0xfe, 0x00}

// segNS is a network namespace whose only links are lo and a TAP device,
// the TAP being one member of a hub: frames cross between the TAP's fd
// and a UDP socket on 127.0.0.1 in the host's namespace.
type segNS struct {
	name string
	addr netip.Prefix
	log  *slog.Logger

	tap  *os.File     // the TAP's fd, non-blocking: Close ends its reads
	conn *net.UDPConn // the member's socket, in the host's namespace
	hub  netip.AddrPort

	mu     sync.Mutex
	nsfd   int // /proc/thread-self/ns/net of the thread that made it; -1 once closed
	conns  map[io.Closer]bool
	closed bool
}

// newSegNS makes the namespace with a TAP of that MAC and address, and
// bridges the TAP to the hub at hub from 127.0.0.1:port (a member the hub
// must know). It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and
// /dev/net/tun.
func newSegNS(name string, hub netip.AddrPort, port int, mac net.HardwareAddr, addr netip.Prefix, log *slog.Logger) (*segNS, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !addr.Addr().Is4() {
		return nil, fmt.Errorf("qemu: %s port: address %s is not IPv4", name, addr)
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("qemu: %s port: %w", name, err)
	}
	s := &segNS{name: name, addr: addr, log: log, conn: conn, hub: hub, nsfd: -1, conns: map[io.Closer]bool{}}
	type made struct {
		nsfd int
		tap  *os.File
		err  error
	}
	ch := make(chan made, 1)
	go func() {
		var m made
		err := onThread(func() error {
			m.nsfd, m.tap, m.err = makeTapNS(mac, addr)
			return nil
		})
		if m.err == nil {
			m.err = err
		}
		ch <- m
	}()
	m := <-ch
	if m.err != nil {
		conn.Close()
		return nil, fmt.Errorf("qemu: %s port: %w", name, m.err)
	}
	s.nsfd, s.tap = m.nsfd, m.tap
	go s.tapToHub()
	go s.hubToTap()
	log.Info("lab host port up", "member", name, "addr", addr, "mac", mac.String(), "udp", conn.LocalAddr().String())
	return s, nil
}

// onThread runs f on a locked OS thread that f may move into another
// network namespace, and moves the thread back before it serves other
// goroutines. A thread must not just end instead: QEMU runs with
// Pdeathsig, which the kernel sends when the *thread* that started it
// exits, and Go starts children from whatever thread it is on. Only if
// the way back fails does the thread end (locked) with its goroutine.
func onThread(f func() error) error {
	runtime.LockOSThread()
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("this thread's network namespace: %w", err)
	}
	defer unix.Close(home)
	ferr := f()
	if err := unix.Setns(home, unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}

// makeTapNS runs on a locked thread that it moves into a new network
// namespace, and returns the namespace's fd and the TAP's.
func makeTapNS(mac net.HardwareAddr, addr netip.Prefix) (nsfd int, tap *os.File, err error) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return -1, nil, fmt.Errorf("no TAP devices here: %w", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return -1, nil, fmt.Errorf("new network namespace (CAP_SYS_ADMIN): %w", err)
	}
	if nsfd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return -1, nil, fmt.Errorf("network namespace fd: %w", err)
	}
	defer func() {
		if err != nil {
			unix.Close(nsfd)
			nsfd = -1
		}
	}()
	// No IPv6 on the TAP: its router solicitations, MLD reports and DAD
	// probes would land on the segment that scenarios watch. Net sysctls
	// are those of the opening thread's namespace. Best effort: a kernel
	// without IPv6 has nothing to say anyway.
	for _, k := range []string{"all", "default"} {
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq("tap0")
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err == nil {
		err = unix.SetNonblock(fd, true) // so that os.File reads go through the poller and Close ends them
	}
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("TAP device: %w", err)
	}
	tap = os.NewFile(uintptr(fd), "tap0")
	if err := configureTap(mac, addr); err != nil {
		tap.Close()
		return -1, nil, err
	}
	return nsfd, tap, nil
}

// configureTap brings lo and tap0 up, tap0 with its MAC and address (the
// kernel adds the subnet's route); on the namespace's locked thread.
func configureTap(mac net.HardwareAddr, addr netip.Prefix) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE) // in the thread's namespace
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Delete()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	tap, err := h.LinkByName("tap0")
	if err != nil {
		return fmt.Errorf("tap0: %w", err)
	}
	if err := h.LinkSetHardwareAddr(tap, mac); err != nil {
		return fmt.Errorf("tap0 mac %s: %w", mac, err)
	}
	ipnet := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	if err := h.AddrAdd(tap, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("tap0 address %s: %w", addr, err)
	}
	if err := h.LinkSetUp(tap); err != nil {
		return fmt.Errorf("tap0 up: %w", err)
	}
	return nil
}

func (s *segNS) tapToHub() {
	buf := make([]byte, 65536)
	for {
		n, err := s.tap.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				s.log.Warn("lab host port: tap read", "member", s.name, "err", err)
			}
			return
		}
		if n >= 14 {
			s.conn.WriteToUDPAddrPort(buf[:n], s.hub) // a lost frame is a lost frame
		}
	}
}

func (s *segNS) hubToTap() {
	buf := make([]byte, 65536)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("lab host port: udp read", "member", s.name, "err", err)
			}
			return
		}
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != s.hub {
			continue // only the hub speaks to a member
		}
		if _, err := s.tap.Write(buf[:n]); err != nil && errors.Is(err, os.ErrClosed) {
			return
		}
	}
}

// inside runs f on a fresh thread that has joined the namespace; the
// thread ends with f's goroutine. Sockets f makes stay in the namespace.
func (s *segNS) inside(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		errc <- onThread(func() error {
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return fmt.Errorf("qemu: %s port: %w", s.name, net.ErrClosed)
			}
			err := unix.Setns(s.nsfd, unix.CLONE_NEWNET)
			s.mu.Unlock()
			if err != nil {
				return fmt.Errorf("qemu: %s port: join namespace: %w", s.name, err)
			}
			return f()
		})
	}()
	return <-errc
}

// segmentAddr refuses host names: resolving one would go to the host's
// resolver from a thread of the host's namespace.
func segmentAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%q: give an IP address on the segment, not a name", addr)
	}
	return nil
}

// DialContext dials addr (an IP literal and port) from inside the
// namespace.
func (s *segNS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := segmentAddr(addr); err != nil {
		return nil, fmt.Errorf("qemu: %s port: dial: %w", s.name, err)
	}
	var c net.Conn
	err := s.inside(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr inside the namespace (for a test's server).
func (s *segNS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := s.inside(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket listens on addr inside the namespace.
func (s *segNS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := s.inside(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// forwardDialTimeout bounds one forwarded connection's dial on the segment.
const forwardDialTimeout = 10 * time.Second

// forward accepts on ln (in the host's namespace) until ctx ends, ln is
// closed or s closes, and splices each connection to to, dialled inside.
func (s *segNS) forward(ctx context.Context, ln net.Listener, to netip.AddrPort) {
	if !s.track(ln) {
		ln.Close()
		return
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.untrack(ln)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			dctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
			up, err := s.DialContext(dctx, "tcp", to.String())
			cancel()
			if err != nil {
				s.log.Warn("lab forward: dial", "to", to, "err", err)
				c.Close()
				return
			}
			s.splice(c, up)
		}()
	}
}

// splice copies both ways until both directions end (half-closes pass
// through) or s closes.
func (s *segNS) splice(a, b net.Conn) {
	if !s.track(a) || !s.track(b) {
		a.Close()
		b.Close()
		return
	}
	defer s.untrack(a)
	defer s.untrack(b)
	var wg sync.WaitGroup
	one := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go one(a, b)
	go one(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

func (s *segNS) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = true
	return true
}

func (s *segNS) untrack(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// Close ends the bridge, the forwards and their connections; the
// namespace goes with its last socket.
func (s *segNS) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := s.conns
	s.conns = nil
	unix.Close(s.nsfd)
	s.nsfd = -1
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	s.tap.Close()
	s.conn.Close()
}
