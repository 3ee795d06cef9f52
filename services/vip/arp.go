package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ARP constants (RFC 826; Linux if_arp.h, if_ether.h).
const (
	etherTypeARP   = 0x0806
	etherTypeIPv4  = 0x0800
	hwEthernet     = 1
	hwInfiniBand   = 32 // ARPHRD_INFINIBAND: IPoIB, RFC 4391
	arpRequest     = 1
	arpReply       = 2
	ethHeaderLen   = 14
	minEthFrameLen = 60 // without FCS; some drivers do not pad short frames
	ipoibHWLen     = 20 // QPN + GID
)

var (
	ethBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ethZero      = net.HardwareAddr{0, 0, 0, 0, 0, 0}
)

// arpPayload encodes an ARP packet for IPv4 over hardware type htype.
func arpPayload(htype uint16, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	hl := len(sha)
	b := make([]byte, 8, 8+2*hl+8)
	binary.BigEndian.PutUint16(b[0:], htype)
	binary.BigEndian.PutUint16(b[2:], etherTypeIPv4)
	b[4], b[5] = byte(hl), 4
	binary.BigEndian.PutUint16(b[6:], op)
	s4, t4 := spa.As4(), tpa.As4()
	b = append(b, sha...)
	b = append(b, s4[:]...)
	b = append(b, tha...)
	b = append(b, t4[:]...)
	return b
}

// garpEthernet returns the two gratuitous ARP frames for ip on an Ethernet
// link with address mac, each a whole broadcast frame padded to 60 bytes:
//
//   - a request (op 1) whose sender and target IP are both the VIP and
//     whose target MAC is zero, which hosts and switches that ignore
//     unsolicited replies still learn from (RFC 5227 "ARP announcement");
//   - a reply (op 2) with sender and target IP the VIP and target MAC
//     broadcast, for stacks that update their caches only from replies.
func garpEthernet(mac net.HardwareAddr, ip netip.Addr) [][]byte {
	frame := func(op uint16, tha net.HardwareAddr) []byte {
		f := make([]byte, 0, minEthFrameLen)
		f = append(f, ethBroadcast...)
		f = append(f, mac...)
		f = binary.BigEndian.AppendUint16(f, etherTypeARP)
		f = append(f, arpPayload(hwEthernet, op, mac, ip, tha, ip)...)
		return append(f, make([]byte, minEthFrameLen-len(f))...)
	}
	return [][]byte{frame(arpRequest, ethZero), frame(arpReply, ethBroadcast)}
}

// garpIPoIB returns the two gratuitous ARP payloads for an IPoIB link. The
// IPoIB driver adds the 4-byte encapsulation header itself, so these go
// out through a SOCK_DGRAM packet socket to the link's broadcast address;
// hardware addresses are the 20-byte IPoIB ones.
func garpIPoIB(hw net.HardwareAddr, ip netip.Addr) [][]byte {
	zero := make(net.HardwareAddr, ipoibHWLen)
	return [][]byte{
		arpPayload(hwInfiniBand, arpRequest, hw, ip, zero, ip),
		arpPayload(hwInfiniBand, arpReply, hw, ip, hw, ip),
	}
}

// Announcer tells the segment that ip now lives at this link. The
// Ethernet and IPoIB ways differ; boards pick by the link's type.
type Announcer interface {
	Announce(l Link, ip netip.Addr) error
}

// packetAnnouncer sends gratuitous ARP through an AF_PACKET socket.
type packetAnnouncer struct{}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (packetAnnouncer) Announce(l Link, ip netip.Addr) error {
	if !ip.Is4() {
		// IPv6 would need an unsolicited neighbour advertisement.
		return fmt.Errorf("gratuitous ARP is IPv4 only (%s)", ip)
	}
	var (
		frames [][]byte
		typ    = unix.SOCK_RAW
		dst    net.HardwareAddr
	)
	switch {
	case l.IPoIB:
		if len(l.HW) != ipoibHWLen || len(l.Broadcast) != ipoibHWLen {
			return fmt.Errorf("%s: IPoIB link without 20-byte addresses", l.Name)
		}
		frames, typ, dst = garpIPoIB(l.HW, ip), unix.SOCK_DGRAM, l.Broadcast
	case len(l.HW) == 6:
		frames, dst = garpEthernet(l.HW, ip), ethBroadcast
	default:
		return fmt.Errorf("%s: no Ethernet or IPoIB address (%v)", l.Name, l.HW)
	}
	fd, err := unix.Socket(unix.AF_PACKET, typ|unix.SOCK_CLOEXEC, int(htons(etherTypeARP)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	sa := sockaddrLL(l.Index, etherTypeARP, dst)
	var errs []error
	for _, f := range frames {
		if err := sendto(fd, f, sa); err != nil {
			errs = append(errs, fmt.Errorf("send on %s: %w", l.Name, err))
		}
	}
	return errors.Join(errs...)
}

// sockaddrLL encodes a struct sockaddr_ll whose address may be longer than
// its 8-byte sll_addr field: the kernel reads sll_halen bytes as long as
// the name length covers them, which IPoIB's 20-byte addresses need and
// unix.SockaddrLinklayer cannot express.
func sockaddrLL(ifindex int, proto uint16, addr net.HardwareAddr) []byte {
	b := make([]byte, 12+max(8, len(addr)))
	binary.NativeEndian.PutUint16(b[0:], unix.AF_PACKET)
	binary.BigEndian.PutUint16(b[2:], proto)
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(ifindex)))
	// b[8:10] hatype and b[10] pkttype stay zero on send.
	b[11] = byte(len(addr))
	copy(b[12:], addr)
	return b
}

func sendto(fd int, p, sa []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0,
		uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if e != 0 {
		return e
	}
	return nil
}
