package vip

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/internal/atomicfile"
)

// Tickle ACKs. When the VIP moves, a client may have a request in flight
// that the old head acknowledged at TCP level but never answered: the
// old head's FIN could not leave once the address was gone, so the
// client waits out its RPC timeout (60 s for NFS over TCP) before it
// retransmits. The active head therefore keeps a list of the clients
// connected to the VIP on the replicated filesystem, and the new head,
// once the address is up, sends each one an ACK that fits no window
// (seq 0, ack 0). The client answers with a challenge ACK carrying its
// real sequence numbers; the new head's stack knows no such connection
// and resets it; the client reconnects and retransmits at once. CTDB
// does the same for its public addresses.

// Conn is one client connection to the VIP.
type Conn struct {
	Local  netip.AddrPort `json:"local"`  // VIP:port
	Client netip.AddrPort `json:"client"` // client address:port
}

// parseProcNetTCP returns the established IPv4 connections to vip on
// one of ports, from /proc/net/tcp.
func parseProcNetTCP(r io.Reader, vip netip.Addr, ports []uint16) ([]Conn, error) {
	var out []Conn
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		local, err1 := parseHexAddrPort(f[1])
		remote, err2 := parseHexAddrPort(f[2])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/net/tcp: malformed line %q", sc.Text())
		}
		if local.Addr() == vip && slices.Contains(ports, local.Port()) {
			out = append(out, Conn{Local: local, Client: remote})
		}
	}
	return out, sc.Err()
}

// parseHexAddrPort parses "0A00000A:0801": the address as the kernel
// stores it (network order read as a little-endian word), the port in hex.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || len(a) != 8 {
		return netip.AddrPort{}, fmt.Errorf("%q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{raw[3], raw[2], raw[1], raw[0]}), uint16(port)), nil
}

// tickleSegment is a bare TCP ACK from src to dst with seq and ack 0,
// its checksum over the IPv4 pseudo-header.
func tickleSegment(src, dst netip.AddrPort) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	// seq (4:8) and ack (8:12) stay 0: outside any window.
	b[12] = 5 << 4 // data offset: 5 words, no options
	b[13] = 0x10   // ACK
	binary.BigEndian.PutUint16(b[14:], 1234)
	binary.BigEndian.PutUint16(b[16:], tcpChecksum(src.Addr(), dst.Addr(), b))
	return b
}

func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	s, d := src.As4(), dst.As4()
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, unix.IPPROTO_TCP, byte(len(seg)>>8), byte(len(seg)))
	var sum uint32
	for _, part := range [][]byte{pseudo, seg} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(part[i:]))
		}
		if len(part)%2 == 1 {
			sum += uint32(part[len(part)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sendTickles sends one tickle ACK to each connection's client from a
// raw socket bound to the VIP (the kernel adds the IP header).
func sendTickles(conns []Conn) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	if len(conns) == 0 {
		return nil
	}
	// The source must be the VIP, not the link's primary address: the
	// client matches the segment to its connection by both ends, and
	// the checksum covers them.
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: conns[0].Local.Addr().As4()}); err != nil {
		return fmt.Errorf("bind the raw socket to %s: %w", conns[0].Local.Addr(), err)
	}
	var errs []string
	for _, c := range conns {
		to := &unix.SockaddrInet4{Addr: c.Client.Addr().As4()}
		if err := unix.Sendto(fd, tickleSegment(c.Local, c.Client), 0, to); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", c.Client, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("tickle: %s", strings.Join(errs, "; "))
	}
	return nil
}

// saveConns writes the list atomically and durably; it is small.
func saveConns(path string, conns []Conn) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(conns)
	if err != nil {
		return err
	}
	// Durable, not just atomic: after a power pull the next head reads
	// what reached the replicated disk, and an empty list means no
	// tickles and clients waiting out their timeouts.
	return atomicfile.Write(path, b, 0o644)
}

func loadConns(path string) ([]Conn, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Conn
	return out, json.Unmarshal(b, &out)
}
