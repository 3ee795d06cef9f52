package qemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DHCPConfig configures the DHCP server the lab's hub can run on the
// management segment, so that a head's `dhcp = true` runs for real. The
// server exists only inside the hub: it reads the frames members send and
// injects its answers into the hub, never into a host network.
type DHCPConfig struct {
	// Subnet gives the mask (option 1); default 10.0.0.0/24.
	Subnet netip.Prefix
	// ServerID is the server's address (option 54, the replies' IP
	// source); default: Subnet's first host.
	ServerID netip.Addr
	Router   netip.Addr   // option 3; none when zero
	DNS      []netip.Addr // option 6
	// Lease is the lease time (option 51); default 60 s, short so that a
	// scenario sees renewals (clients renew at half of it).
	Lease time.Duration
	// Static maps a MAC (any case) to its fixed address.
	Static map[string]netip.Addr
	// PoolFirst..PoolLast serve the MACs that Static does not name; no
	// pool when zero.
	PoolFirst, PoolLast netip.Addr
}

// DHCPEvent is one thing the server did, for the lease log and for tests.
type DHCPEvent struct {
	Time     time.Time
	Kind     string // offer, ack, nak, release, decline
	MAC      string
	Addr     netip.Addr
	Hostname string
	// Renewal marks an ACK for a client that already uses the address
	// (RENEWING or REBINDING: the request carries it in ciaddr).
	Renewal bool
	Reason  string // why a NAK
}

func (e DHCPEvent) String() string {
	s := fmt.Sprintf("%s %s %s", e.Kind, e.MAC, e.Addr)
	if e.Renewal {
		s += " (renewal)"
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// DHCPServer answers DHCPv4 DISCOVER and REQUEST frames (RFC 2131, no
// relays) with a static map or a pool. It is pure frame logic: Handle takes
// a frame and returns the reply frame.
type DHCPServer struct {
	cfg    DHCPConfig
	static map[[6]byte]netip.Addr
	mac    [6]byte // the server's own Ethernet address
	log    *slog.Logger
	now    func() time.Time

	mu     sync.Mutex
	leases map[[6]byte]dhcpLease // pool bindings and offers
	events []DHCPEvent
	ipID   uint16
}

type dhcpLease struct {
	addr    netip.Addr
	expires time.Time
}

// dhcpServerMAC is the server's address on the segment: QEMU's OUI and the
// lab's 52:54:00:1a prefix, with a VM byte no lab VM uses.
var dhcpServerMAC = [6]byte{0x52, 0x54, 0x00, 0x1a, 0xff, 0x00}

// NewDHCPServer checks c, fills in its defaults and returns the server.
func NewDHCPServer(c DHCPConfig, log *slog.Logger) (*DHCPServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !c.Subnet.IsValid() {
		c.Subnet = netip.MustParsePrefix("10.0.0.0/24")
	}
	c.Subnet = c.Subnet.Masked()
	if !c.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("qemu: dhcp: subnet %s is not IPv4", c.Subnet)
	}
	if !c.ServerID.IsValid() {
		c.ServerID = c.Subnet.Addr().Next()
	}
	if c.Lease == 0 {
		c.Lease = 60 * time.Second
	}
	if c.Lease < 2*time.Second {
		return nil, fmt.Errorf("qemu: dhcp: lease %s is under 2 s", c.Lease)
	}
	in := func(what string, a netip.Addr) error {
		if a.IsValid() && !c.Subnet.Contains(a) {
			return fmt.Errorf("qemu: dhcp: %s %s is not in %s", what, a, c.Subnet)
		}
		return nil
	}
	errs := []error{in("server id", c.ServerID), in("router", c.Router), in("pool start", c.PoolFirst), in("pool end", c.PoolLast)}
	if c.PoolFirst.IsValid() != c.PoolLast.IsValid() || c.PoolFirst.IsValid() && c.PoolLast.Less(c.PoolFirst) {
		errs = append(errs, fmt.Errorf("qemu: dhcp: pool %s-%s is not a range", c.PoolFirst, c.PoolLast))
	}
	s := &DHCPServer{cfg: c, static: map[[6]byte]netip.Addr{}, mac: dhcpServerMAC, log: log, now: time.Now,
		leases: map[[6]byte]dhcpLease{}}
	for m, a := range c.Static {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			errs = append(errs, fmt.Errorf("qemu: dhcp: static %q: not a MAC", m))
			continue
		}
		errs = append(errs, in("static address", a))
		s.static[[6]byte(hw)] = a
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// Config is the configuration in use, defaults filled in.
func (s *DHCPServer) Config() DHCPConfig { return s.cfg }

// Events returns the lease log so far.
func (s *DHCPServer) Events() []DHCPEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// Handle answers one frame: a DHCP request from a client gives the reply
// frame to deliver, anything else nil. frame is not kept.
func (s *DHCPServer) Handle(frame []byte) []byte {
	req, ok := parseDHCPFrame(frame)
	if !ok || req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil
	}
	mac := [6]byte(req.ClientHWAddr)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(req, mac)
	case dhcpv4.MessageTypeRequest:
		return s.request(req, mac)
	case dhcpv4.MessageTypeRelease:
		if s.ours(req) {
			delete(s.leases, mac)
			s.record(DHCPEvent{Kind: "release", MAC: macString(mac), Addr: addr4(req.ClientIPAddr)})
		}
	case dhcpv4.MessageTypeDecline:
		if s.ours(req) {
			s.record(DHCPEvent{Kind: "decline", MAC: macString(mac), Addr: addr4(req.RequestedIPAddress())})
		}
	}
	return nil
}

// ours: the request names this server (or none, which only RENEWING,
// REBINDING and INIT-REBOOT requests may do).
func (s *DHCPServer) ours(req *dhcpv4.DHCPv4) bool {
	id := req.ServerIdentifier()
	return id == nil || addr4(id) == s.cfg.ServerID
}

func (s *DHCPServer) discover(req *dhcpv4.DHCPv4, mac [6]byte) []byte {
	a, ok := s.addrFor(mac, addr4(req.RequestedIPAddress()))
	if !ok {
		s.log.Warn("dhcp: no address to offer", "mac", macString(mac))
		return nil
	}
	// Hold the address for the offer while the client chooses.
	if _, static := s.static[mac]; !static {
		s.leases[mac] = dhcpLease{a, s.now().Add(time.Minute)}
	}
	s.record(DHCPEvent{Kind: "offer", MAC: macString(mac), Addr: a, Hostname: req.HostName()})
	return s.reply(req, dhcpv4.MessageTypeOffer, a, "")
}

func (s *DHCPServer) request(req *dhcpv4.DHCPv4, mac [6]byte) []byte {
	id := req.ServerIdentifier()
	if id != nil && addr4(id) != s.cfg.ServerID {
		// SELECTING another server's offer: ours is void.
		delete(s.leases, mac)
		return nil
	}
	ciaddr := addr4(req.ClientIPAddr)
	want := addr4(req.RequestedIPAddress()) // SELECTING, INIT-REBOOT
	renewal := false
	if !want.IsValid() && ciaddr.IsValid() && !ciaddr.IsUnspecified() {
		want, renewal = ciaddr, true // RENEWING, REBINDING
	}
	if !want.IsValid() {
		return s.nak(req, mac, want, "no requested address")
	}
	a, ok := s.addrFor(mac, want)
	if !ok || a != want {
		return s.nak(req, mac, want, fmt.Sprintf("%s is not this client's address", want))
	}
	if _, static := s.static[mac]; !static {
		s.leases[mac] = dhcpLease{a, s.now().Add(s.cfg.Lease)}
	}
	s.record(DHCPEvent{Kind: "ack", MAC: macString(mac), Addr: a, Hostname: req.HostName(), Renewal: renewal})
	return s.reply(req, dhcpv4.MessageTypeAck, a, "")
}

func (s *DHCPServer) nak(req *dhcpv4.DHCPv4, mac [6]byte, want netip.Addr, why string) []byte {
	s.record(DHCPEvent{Kind: "nak", MAC: macString(mac), Addr: want, Hostname: req.HostName(), Reason: why})
	return s.reply(req, dhcpv4.MessageTypeNak, netip.Addr{}, why)
}

// addrFor is the address mac gets: its static one; else its current
// binding; else prefer, if free in the pool; else the pool's first free one.
func (s *DHCPServer) addrFor(mac [6]byte, prefer netip.Addr) (netip.Addr, bool) {
	if a, ok := s.static[mac]; ok {
		return a, true
	}
	now := s.now()
	if l, ok := s.leases[mac]; ok && now.Before(l.expires) {
		return l.addr, true
	}
	if !s.cfg.PoolFirst.IsValid() {
		return netip.Addr{}, false
	}
	free := func(a netip.Addr) bool {
		if a.Less(s.cfg.PoolFirst) || s.cfg.PoolLast.Less(a) || a == s.cfg.ServerID || a == s.cfg.Router {
			return false
		}
		for _, st := range s.static {
			if st == a {
				return false
			}
		}
		for m, l := range s.leases {
			if m != mac && l.addr == a && now.Before(l.expires) {
				return false
			}
		}
		return true
	}
	if prefer.IsValid() && free(prefer) {
		return prefer, true
	}
	for a := s.cfg.PoolFirst; a.IsValid() && !s.cfg.PoolLast.Less(a); a = a.Next() {
		if free(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (s *DHCPServer) record(e DHCPEvent) {
	e.Time = s.now()
	s.events = append(s.events, e)
	args := []any{"mac", e.MAC, "addr", e.Addr}
	if e.Hostname != "" {
		args = append(args, "hostname", e.Hostname)
	}
	if e.Kind == "ack" {
		args = append(args, "lease", s.cfg.Lease, "renewal", e.Renewal)
	}
	if e.Reason != "" {
		args = append(args, "reason", e.Reason)
	}
	s.log.Info("dhcp: "+e.Kind, args...)
}

// reply builds the answer frame, addressed as RFC 2131 4.1 says for a
// client on the server's own segment (no relay agent).
func (s *DHCPServer) reply(req *dhcpv4.DHCPv4, t dhcpv4.MessageType, yiaddr netip.Addr, msg string) []byte {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerID.AsSlice())),
	}
	if t == dhcpv4.MessageTypeNak {
		if msg != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptMessage(msg)))
		}
	} else {
		mods = append(mods,
			dhcpv4.WithYourIP(yiaddr.AsSlice()),
			dhcpv4.WithNetmask(net.CIDRMask(s.cfg.Subnet.Bits(), 32)),
			dhcpv4.WithLeaseTime(uint32(s.cfg.Lease/time.Second)))
		if s.cfg.Router.IsValid() {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(s.cfg.Router.AsSlice())))
		}
		if len(s.cfg.DNS) > 0 {
			var ips []net.IP
			for _, d := range s.cfg.DNS {
				ips = append(ips, d.AsSlice())
			}
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(ips...)))
		}
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		s.log.Warn("dhcp: reply", "err", err)
		return nil
	}
	bcast := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	dstIP, dstMAC := bcast, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ciaddr := addr4(req.ClientIPAddr)
	switch {
	case t == dhcpv4.MessageTypeNak:
	case ciaddr.IsValid() && !ciaddr.IsUnspecified():
		dstIP, dstMAC = ciaddr, [6]byte(req.ClientHWAddr)
	case req.IsBroadcast():
	default:
		dstIP, dstMAC = yiaddr, [6]byte(req.ClientHWAddr)
	}
	s.ipID++
	return udpFrame(dstMAC, s.mac, s.cfg.ServerID, dstIP, dhcpv4.ServerPort, dhcpv4.ClientPort, s.ipID, resp.ToBytes())
}

// Ethernet, IPv4 and UDP header sizes and the fields used here.
const (
	ethHeaderLen  = 14
	etherTypeIPv4 = 0x0800
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
	protoUDP      = 17
)

// parseDHCPFrame returns the DHCP message of an Ethernet frame carrying an
// unfragmented IPv4 UDP datagram to port 67, broadcast or to any address.
func parseDHCPFrame(frame []byte) (*dhcpv4.DHCPv4, bool) {
	if len(frame) < ethHeaderLen+ipv4HeaderLen+udpHeaderLen ||
		binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv4 {
		return nil, false
	}
	ip := frame[ethHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ihl < ipv4HeaderLen || total < ihl+udpHeaderLen || total > len(ip) ||
		ip[9] != protoUDP || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 || // MF or an offset: a fragment
		checksum(ip[:ihl], 0) != 0 {
		return nil, false
	}
	udp := ip[ihl:total]
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if binary.BigEndian.Uint16(udp[2:4]) != dhcpv4.ServerPort || ulen < udpHeaderLen || ulen > len(udp) {
		return nil, false
	}
	m, err := dhcpv4.FromBytes(udp[udpHeaderLen:ulen])
	if err != nil {
		return nil, false
	}
	return m, true
}

// udpFrame builds an Ethernet frame with an IPv4 UDP datagram.
func udpFrame(dstMAC, srcMAC [6]byte, src, dst netip.Addr, sport, dport int, id uint16, payload []byte) []byte {
	f := make([]byte, ethHeaderLen+ipv4HeaderLen+udpHeaderLen+len(payload))
	copy(f[0:6], dstMAC[:])
	copy(f[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv4)

	ip := f[ethHeaderLen : ethHeaderLen+ipv4HeaderLen]
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(f)-ethHeaderLen))
	binary.BigEndian.PutUint16(ip[4:6], id)
	ip[8] = 64 // TTL
	ip[9] = protoUDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip, 0))

	udp := f[ethHeaderLen+ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:2], uint16(sport))
	binary.BigEndian.PutUint16(udp[2:4], uint16(dport))
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	copy(udp[udpHeaderLen:], payload)
	// The pseudo-header: addresses, protocol, UDP length.
	pseudo := uint32(protoUDP) + uint32(len(udp))
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(ip[i : i+2]))
	}
	sum := checksum(udp, pseudo)
	if sum == 0 {
		sum = 0xffff // zero means "no checksum" in UDP over IPv4
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return f
}

// checksum is the Internet checksum (RFC 1071) of b, starting from the
// partial sum initial. Over a header that holds its own checksum it is 0.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i : i+2]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func addr4(ip net.IP) netip.Addr {
	if ip4 := ip.To4(); ip4 != nil {
		return netip.AddrFrom4([4]byte(ip4))
	}
	return netip.Addr{}
}

func macString(m [6]byte) string { return strings.ToLower(net.HardwareAddr(m[:]).String()) }
