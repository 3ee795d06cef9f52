package scenarios_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

var (
	staticMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x1a, 0x0a, 0x00}
	poolMAC1  = net.HardwareAddr{0x52, 0x54, 0x00, 0x1a, 0x0b, 0x00}
	poolMAC2  = net.HardwareAddr{0x52, 0x54, 0x00, 0x1a, 0x0c, 0x00}
	poolMAC3  = net.HardwareAddr{0x52, 0x54, 0x00, 0x1a, 0x0d, 0x00}
	bcastMAC  = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	serverID  = netip.MustParseAddr("10.0.0.1")
)

func testDHCPConfig() qemu.DHCPConfig {
	return qemu.DHCPConfig{
		Subnet: netip.MustParsePrefix("10.0.0.0/24"), ServerID: serverID,
		Router: netip.MustParseAddr("10.0.0.254"), DNS: []netip.Addr{netip.MustParseAddr("10.0.0.53")},
		Lease:  60 * time.Second,
		Static: map[string]netip.Addr{"52:54:00:1A:0A:00": netip.MustParseAddr("10.0.0.51")},
		// 10.0.0.51 lies in the pool too: the static client owns it.
		PoolFirst: netip.MustParseAddr("10.0.0.50"), PoolLast: netip.MustParseAddr("10.0.0.52"),
	}
}

// clientFrame wraps a DHCP message as a client sends it: from 0.0.0.0:68
// to the broadcast address, port 67.
func clientFrame(t *testing.T, m *dhcpv4.DHCPv4) []byte {
	t.Helper()
	return ipUDPFrame(bcastMAC, m.ClientHWAddr, [4]byte{}, [4]byte{255, 255, 255, 255}, 68, 67, m.ToBytes())
}

// ipUDPFrame builds Ethernet+IPv4+UDP independently of the server's code.
func ipUDPFrame(dst, src net.HardwareAddr, sip, dip [4]byte, sport, dport uint16, payload []byte) []byte {
	var b bytes.Buffer
	b.Write(dst)
	b.Write(src)
	binary.Write(&b, binary.BigEndian, uint16(0x0800))
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	copy(ip[12:], sip[:])
	copy(ip[16:], dip[:])
	binary.BigEndian.PutUint16(ip[10:], inetSum(ip))
	b.Write(ip)
	binary.Write(&b, binary.BigEndian, []uint16{sport, dport, uint16(8 + len(payload)), 0}) // no UDP checksum
	b.Write(payload)
	return b.Bytes()
}

// inetSum is the RFC 1071 checksum; 0 over a header carrying a right one.
func inetSum(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// sentReply is a server reply taken apart, its checksums checked.
type sentReply struct {
	dstMAC, srcMAC net.HardwareAddr
	srcIP, dstIP   netip.Addr
	msg            *dhcpv4.DHCPv4
}

func parseReply(t *testing.T, f []byte) sentReply {
	t.Helper()
	if len(f) < 14+20+8 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		t.Fatalf("reply is not an IPv4 frame: % x", f)
	}
	ip := f[14:34]
	if ip[0] != 0x45 || ip[9] != 17 || int(binary.BigEndian.Uint16(ip[2:])) != len(f)-14 {
		t.Fatalf("bad IPv4 header % x (frame %d bytes)", ip, len(f))
	}
	if s := inetSum(ip); s != 0 {
		t.Errorf("IPv4 header checksum does not verify (sum %#x)", s)
	}
	udp := f[34:]
	if binary.BigEndian.Uint16(udp[0:]) != 67 || binary.BigEndian.Uint16(udp[2:]) != 68 || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Fatalf("bad UDP header % x", udp[:8])
	}
	// The UDP checksum over the pseudo-header verifies to 0 as well.
	pseudo := append(append(append([]byte{}, ip[12:20]...), 0, 17), udp[4:6]...)
	if s := inetSum(append(pseudo, udp...)); binary.BigEndian.Uint16(udp[6:]) != 0 && s != 0 {
		t.Errorf("UDP checksum does not verify (sum %#x)", s)
	}
	m, err := dhcpv4.FromBytes(udp[8:])
	if err != nil {
		t.Fatalf("reply payload: %v", err)
	}
	return sentReply{dstMAC: net.HardwareAddr(f[0:6]), srcMAC: net.HardwareAddr(f[6:12]),
		srcIP: netip.AddrFrom4([4]byte(ip[12:16])), dstIP: netip.AddrFrom4([4]byte(ip[16:20])), msg: m}
}

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac, append([]dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptHostName("head-a"))}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func request(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func selecting(addr string) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(addr))),
	}
}

func TestDHCPServer(t *testing.T) {
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	bcast := ip("255.255.255.255")
	type want struct {
		typ      dhcpv4.MessageType
		yiaddr   netip.Addr
		dstMAC   net.HardwareAddr
		dstIP    netip.Addr
		event    string // the lease log's last entry
		renewal  bool
		noreply  bool
		hostname string
	}
	type exchange struct {
		name  string
		frame func(t *testing.T) []byte
		want  want
	}
	msg := func(m func(t *testing.T) *dhcpv4.DHCPv4) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return clientFrame(t, m(t)) }
	}
	tests := []struct {
		name string
		edit func(*qemu.DHCPConfig) // of testDHCPConfig
		// Each exchange runs on the same server, in order.
		steps []exchange
	}{
		{"static: discover, offer, request, ack, renew", nil, []exchange{
			{"discover→offer", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, staticMAC) }),
				want{typ: dhcpv4.MessageTypeOffer, yiaddr: ip("10.0.0.51"), dstMAC: staticMAC, dstIP: ip("10.0.0.51"), event: "offer 52:54:00:1a:0a:00 10.0.0.51", hostname: "head-a"}},
			{"request→ack", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, staticMAC, selecting("10.0.0.51")...) }),
				want{typ: dhcpv4.MessageTypeAck, yiaddr: ip("10.0.0.51"), dstMAC: staticMAC, dstIP: ip("10.0.0.51"), event: "ack 52:54:00:1a:0a:00 10.0.0.51"}},
			{"renew→ack to ciaddr", msg(func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, staticMAC, dhcpv4.WithClientIP(net.ParseIP("10.0.0.51")))
			}), want{typ: dhcpv4.MessageTypeAck, yiaddr: ip("10.0.0.51"), dstMAC: staticMAC, dstIP: ip("10.0.0.51"), event: "ack 52:54:00:1a:0a:00 10.0.0.51 (renewal)", renewal: true}},
			{"init-reboot→ack", msg(func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, staticMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.51"))))
			}), want{typ: dhcpv4.MessageTypeAck, yiaddr: ip("10.0.0.51"), dstMAC: staticMAC, dstIP: ip("10.0.0.51"), event: "ack 52:54:00:1a:0a:00 10.0.0.51"}},
		}},
		{"broadcast flag: the offer is broadcast", nil, []exchange{
			{"discover→offer", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, staticMAC, dhcpv4.WithBroadcast(true)) }),
				want{typ: dhcpv4.MessageTypeOffer, yiaddr: ip("10.0.0.51"), dstMAC: bcastMAC, dstIP: bcast, event: "offer 52:54:00:1a:0a:00 10.0.0.51", hostname: "head-a"}},
		}},
		{"wrong address: nak", nil, []exchange{
			{"request→nak", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, staticMAC, selecting("10.0.0.99")...) }),
				want{typ: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcast, event: "nak 52:54:00:1a:0a:00 10.0.0.99: 10.0.0.99 is not this client's address"}},
			{"renew of another address→nak", msg(func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, staticMAC, dhcpv4.WithClientIP(net.ParseIP("10.0.0.7")))
			}), want{typ: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcast, event: "nak 52:54:00:1a:0a:00 10.0.0.7: 10.0.0.7 is not this client's address"}},
			{"request for another server: silence", msg(func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, staticMAC, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.0.0.2"))),
					dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.0.51"))))
			}), want{noreply: true}},
		}},
		{"pool: first free addresses, static one skipped, release frees", nil, []exchange{
			{"first client", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, poolMAC1) }),
				want{typ: dhcpv4.MessageTypeOffer, yiaddr: ip("10.0.0.50"), dstMAC: poolMAC1, dstIP: ip("10.0.0.50"), event: "offer 52:54:00:1a:0b:00 10.0.0.50", hostname: "head-a"}},
			{"first client takes it", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, poolMAC1, selecting("10.0.0.50")...) }),
				want{typ: dhcpv4.MessageTypeAck, yiaddr: ip("10.0.0.50"), dstMAC: poolMAC1, dstIP: ip("10.0.0.50"), event: "ack 52:54:00:1a:0b:00 10.0.0.50"}},
			{"second client skips the static address", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, poolMAC2) }),
				want{typ: dhcpv4.MessageTypeOffer, yiaddr: ip("10.0.0.52"), dstMAC: poolMAC2, dstIP: ip("10.0.0.52"), event: "offer 52:54:00:1a:0c:00 10.0.0.52", hostname: "head-a"}},
			{"second client cannot take the first one's", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, poolMAC2, selecting("10.0.0.50")...) }),
				want{typ: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcast, event: "nak 52:54:00:1a:0c:00 10.0.0.50: 10.0.0.50 is not this client's address"}},
			{"first client releases", msg(func(t *testing.T) *dhcpv4.DHCPv4 {
				m, err := dhcpv4.New(dhcpv4.WithHwAddr(poolMAC1), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
					dhcpv4.WithClientIP(net.ParseIP("10.0.0.50")), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID.AsSlice())))
				if err != nil {
					t.Fatal(err)
				}
				return m
			}), want{noreply: true, event: "release 52:54:00:1a:0b:00 10.0.0.50"}},
			{"a third client gets the freed address", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, poolMAC3) }),
				want{typ: dhcpv4.MessageTypeOffer, yiaddr: ip("10.0.0.50"), dstMAC: poolMAC3, dstIP: ip("10.0.0.50"), event: "offer 52:54:00:1a:0d:00 10.0.0.50", hostname: "head-a"}},
			{"the pool is full", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, poolMAC1) }), want{noreply: true}},
		}},
		{"not DHCP requests: ignored", nil, []exchange{
			{"ARP", func(t *testing.T) []byte {
				f := ipUDPFrame(bcastMAC, staticMAC, [4]byte{}, [4]byte{}, 68, 67, discover(t, staticMAC).ToBytes())
				f[12], f[13] = 0x08, 0x06
				return f
			}, want{noreply: true}},
			{"UDP to port 53", func(t *testing.T) []byte {
				return ipUDPFrame(bcastMAC, staticMAC, [4]byte{}, [4]byte{255, 255, 255, 255}, 68, 53, discover(t, staticMAC).ToBytes())
			}, want{noreply: true}},
			{"TCP", func(t *testing.T) []byte {
				f := clientFrame(t, discover(t, staticMAC))
				f[14+9] = 6
				binary.BigEndian.PutUint16(f[14+10:], 0)
				binary.BigEndian.PutUint16(f[14+10:], inetSum(f[14:34]))
				return f
			}, want{noreply: true}},
			{"bad IPv4 checksum", func(t *testing.T) []byte {
				f := clientFrame(t, discover(t, staticMAC))
				f[14+10] ^= 0xff
				return f
			}, want{noreply: true}},
			{"fragment", func(t *testing.T) []byte {
				f := clientFrame(t, discover(t, staticMAC))
				f[14+6] = 0x20 // more fragments
				binary.BigEndian.PutUint16(f[14+10:], 0)
				binary.BigEndian.PutUint16(f[14+10:], inetSum(f[14:34]))
				return f
			}, want{noreply: true}},
			{"truncated", func(t *testing.T) []byte { return clientFrame(t, discover(t, staticMAC))[:60] }, want{noreply: true}},
			{"a server's reply", msg(func(t *testing.T) *dhcpv4.DHCPv4 {
				m := discover(t, staticMAC)
				m.OpCode = dhcpv4.OpcodeBootReply
				return m
			}), want{noreply: true}},
			{"garbage to port 67", func(t *testing.T) []byte {
				return ipUDPFrame(bcastMAC, staticMAC, [4]byte{}, [4]byte{255, 255, 255, 255}, 68, 67, []byte("hello"))
			}, want{noreply: true}},
		}},
		{"no pool: a stranger gets nothing", func(c *qemu.DHCPConfig) { c.PoolFirst, c.PoolLast = netip.Addr{}, netip.Addr{} }, []exchange{
			{"discover", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, poolMAC1) }), want{noreply: true}},
			{"request", msg(func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, poolMAC1, selecting("10.0.0.50")...) }),
				want{typ: dhcpv4.MessageTypeNak, dstMAC: bcastMAC, dstIP: bcast, event: "nak 52:54:00:1a:0b:00 10.0.0.50: 10.0.0.50 is not this client's address"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testDHCPConfig()
			if tt.edit != nil {
				tt.edit(&c)
			}
			srv, err := qemu.NewDHCPServer(c, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, ex := range tt.steps {
				before := len(srv.Events())
				f := ex.frame(t)
				reply := srv.Handle(f)
				events := srv.Events()
				if ex.want.event != "" {
					if len(events) != before+1 {
						t.Fatalf("%s: lease log %v, want one new entry %q", ex.name, events, ex.want.event)
					}
					if got := events[len(events)-1]; got.String() != ex.want.event || got.Renewal != ex.want.renewal {
						t.Errorf("%s: lease log entry %q (renewal %v), want %q", ex.name, got, got.Renewal, ex.want.event)
					}
				} else if len(events) != before {
					t.Errorf("%s: lease log grew: %v", ex.name, events[before:])
				}
				if ex.want.noreply {
					if reply != nil {
						t.Errorf("%s: got a %d-byte reply, want none", ex.name, len(reply))
					}
					continue
				}
				if reply == nil {
					t.Fatalf("%s: no reply", ex.name)
				}
				r := parseReply(t, reply)
				m := r.msg
				if m.OpCode != dhcpv4.OpcodeBootReply || m.MessageType() != ex.want.typ {
					t.Fatalf("%s: reply %s %s, want %s", ex.name, m.OpCode, m.MessageType(), ex.want.typ)
				}
				req, _ := dhcpv4.FromBytes(f[42:])
				if m.TransactionID != req.TransactionID || !bytes.Equal(m.ClientHWAddr, req.ClientHWAddr) {
					t.Errorf("%s: xid %s chaddr %s, want the request's %s %s", ex.name, m.TransactionID, m.ClientHWAddr, req.TransactionID, req.ClientHWAddr)
				}
				if r.dstMAC.String() != ex.want.dstMAC.String() || r.dstIP != ex.want.dstIP || r.srcIP != serverID {
					t.Errorf("%s: sent %s→%s / %s→%s, want %s→%s / %s→%s", ex.name, r.srcMAC, r.dstMAC, r.srcIP, r.dstIP,
						"server", ex.want.dstMAC, serverID, ex.want.dstIP)
				}
				if id := m.ServerIdentifier(); !id.Equal(serverID.AsSlice()) {
					t.Errorf("%s: server id %s", ex.name, id)
				}
				if ex.want.typ == dhcpv4.MessageTypeNak {
					if !m.YourIPAddr.IsUnspecified() || m.Message() == "" {
						t.Errorf("%s: nak with yiaddr %s, message %q", ex.name, m.YourIPAddr, m.Message())
					}
					continue
				}
				if got := netip.AddrFrom4([4]byte(m.YourIPAddr.To4())); got != ex.want.yiaddr {
					t.Errorf("%s: yiaddr %s, want %s", ex.name, got, ex.want.yiaddr)
				}
				mask, _ := m.SubnetMask().Size()
				if mask != 24 || m.IPAddressLeaseTime(0) != time.Minute ||
					len(m.Router()) != 1 || m.Router()[0].String() != "10.0.0.254" ||
					len(m.DNS()) != 1 || m.DNS()[0].String() != "10.0.0.53" {
					t.Errorf("%s: mask /%d lease %s router %v dns %v", ex.name, mask, m.IPAddressLeaseTime(0), m.Router(), m.DNS())
				}
				if ex.want.hostname != "" && events[len(events)-1].Hostname != ex.want.hostname {
					t.Errorf("%s: lease log hostname %q", ex.name, events[len(events)-1].Hostname)
				}
			}
		})
	}
}

func TestDHCPConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*qemu.DHCPConfig)
		want string
	}{
		{"bad MAC", func(c *qemu.DHCPConfig) { c.Static = map[string]netip.Addr{"52:54": netip.MustParseAddr("10.0.0.9")} }, "not a MAC"},
		{"static outside subnet", func(c *qemu.DHCPConfig) { c.Static["52:54:00:1a:0a:00"] = netip.MustParseAddr("10.1.0.9") }, "not in 10.0.0.0/24"},
		{"reversed pool", func(c *qemu.DHCPConfig) { c.PoolFirst, c.PoolLast = c.PoolLast, c.PoolFirst }, "not a range"},
		{"half a pool", func(c *qemu.DHCPConfig) { c.PoolLast = netip.Addr{} }, "not a range"},
		{"short lease", func(c *qemu.DHCPConfig) { c.Lease = time.Second }, "under 2 s"},
		{"IPv6", func(c *qemu.DHCPConfig) { c.Subnet = netip.MustParsePrefix("fd00::/64") }, "not IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testDHCPConfig()
			c.Static = map[string]netip.Addr{"52:54:00:1a:0a:00": netip.MustParseAddr("10.0.0.51")}
			tt.edit(&c)
			if _, err := qemu.NewDHCPServer(c, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	// Defaults: 10.0.0.0/24, server 10.0.0.1, 60 s.
	s, err := qemu.NewDHCPServer(qemu.DHCPConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Config(); c.Subnet.String() != "10.0.0.0/24" || c.ServerID != serverID || c.Lease != time.Minute {
		t.Errorf("defaults: %+v", c)
	}
}

// dhcpSite is the lab's site config with head-a's management address
// taken from DHCP.
func dhcpSite(t *testing.T) []byte {
	t.Helper()
	good := labSite(t)
	static := []byte("interface = \"eth0\"\naddress = \"10.0.0.11/24\"\n")
	if !bytes.Contains(good, static) {
		t.Fatalf("site.lab.toml changed: no %q", static)
	}
	b := bytes.Replace(good, static, []byte("interface = \"eth0\"\ndhcp = true\n"), 1)
	c, err := site.Parse(site.OnConfigPartition, b)
	if err != nil {
		t.Fatalf("the DHCP site config does not parse: %v", err)
	}
	if nd := c.Node(nodeName); nd == nil || !nd.Management.DHCP {
		t.Fatalf("head-a's management is not DHCP: %+v", nd)
	}
	return b
}

// One head of the default image takes its management address from the
// lab hub's DHCP server (`dhcp = true`), reaches ready with it, renews the
// lease, and releases it when powered off.
func TestNodeDHCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const (
		mgmtMAC = "52:54:00:1a:0a:00" // head-a's mgmt NIC in every lab
		lease   = 20 * time.Second    // clients renew at half of it
	)
	leased := netip.MustParseAddr("10.0.0.51")
	start := time.Now()
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Node, SiteTOML: dhcpSite(t), DataDiskSize: 64 << 20,
		DHCP: &qemu.DHCPConfig{
			Subnet: netip.MustParsePrefix("10.0.0.0/24"), ServerID: serverID, Router: serverID,
			DNS: []netip.Addr{serverID}, Lease: lease, Static: map[string]netip.Addr{mgmtMAC: leased},
		}})
	srv := lab.Hub.DHCP()
	vm := lab.VM(nodeName)
	line, err := vm.Console.WaitFor(ctx, readyRE)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready %.1fs after the lab started: %s", time.Since(start).Seconds(), line)
	acks := func(renewal bool) []qemu.DHCPEvent {
		var out []qemu.DHCPEvent
		for _, e := range srv.Events() {
			if e.Kind == "ack" && e.MAC == mgmtMAC && e.Addr == leased && e.Renewal == renewal {
				out = append(out, e)
			}
		}
		return out
	}
	first := acks(false)
	if len(first) == 0 {
		t.Fatalf("no lease for head-a in the hub's log: %v", srv.Events())
	}
	if first[0].Hostname != nodeName {
		t.Errorf("DHCP hostname %q, want %s", first[0].Hostname, nodeName)
	}

	// The lease is on the management NIC, with its route and DNS.
	if err := vm.WaitAgentPort(ctx); err != nil {
		t.Fatal(err)
	}
	dev := ifaceByMAC(t, ctx, vm, mgmtMAC)
	if out := guest(t, ctx, vm, "ip", "-4", "addr", "show", "dev", dev); !strings.Contains(out, "inet "+leased.String()+"/24 ") {
		t.Errorf("%s does not carry %s/24:\n%s", dev, leased, out)
	}
	if out := guest(t, ctx, vm, "ip", "-4", "route", "show", "default"); !strings.Contains(out, "via "+serverID.String()+" dev "+dev) {
		t.Errorf("default route: %q, want via %s dev %s", out, serverID, dev)
	}
	if out := guest(t, ctx, vm, "busybox", "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver "+serverID.String()) {
		t.Errorf("resolv.conf:\n%s", out)
	}
	st := nodeStatus(t, ctx, vm)
	if st.State != status.Ready {
		t.Errorf("status: %s (%s)", st.State, st.Reason)
	}
	for _, s := range st.Services {
		if s.Name == "mgmt" && (s.State != "running" || s.Detail != leased.String()+"/24") {
			t.Errorf("mgmt service: %s %q", s.State, s.Detail)
		}
	}

	// A renewal: the node asks again at half the lease, unicast state
	// (ciaddr set), and says so in its log.
	renewed := time.Now()
	rctx, rcancel := context.WithTimeout(ctx, 2*lease)
	defer rcancel()
	for len(acks(true)) == 0 {
		select {
		case <-rctx.Done():
			t.Fatalf("no renewal within %s of ready; lease log: %v", 2*lease, srv.Events())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("renewed %.1fs after the checks began; lease log: %v", time.Since(renewed).Seconds(), srv.Events())
	if _, err := vm.Console.WaitFor(rctx, regexp.MustCompile(`mgmt: dhcp lease renewed .*addr=`+regexp.QuoteMeta(leased.String()))); err != nil {
		t.Errorf("the node did not log the renewal: %v", err)
	}
	if out := guest(t, ctx, vm, "ip", "-4", "addr", "show", "dev", dev); !strings.Contains(out, "inet "+leased.String()+"/24 ") {
		t.Errorf("after the renewal %s does not carry %s/24:\n%s", dev, leased, out)
	}

	// Poweroff stops mgmt, which gives the lease back.
	if err := vm.Powerdown(); err != nil {
		t.Fatal(err)
	}
	waitExit(t, ctx, vm)
	released := false
	for _, e := range srv.Events() {
		released = released || e.Kind == "release" && e.MAC == mgmtMAC && e.Addr == leased
	}
	if !released {
		t.Errorf("no release in the lease log after poweroff: %v", srv.Events())
	}
	for _, e := range srv.Events() {
		if e.Kind == "nak" {
			t.Errorf("the server refused the node: %s", e)
		}
	}
}
