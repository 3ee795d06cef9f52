package vip

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGARPEthernetBytes(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	frames := garpEthernet(mac, netip.MustParseAddr("10.0.0.10"))
	pad := strings.Repeat("00", 18)
	want := []string{
		// dst broadcast | src | ethertype ARP
		"ffffffffffff 525400123456 0806" +
			// htype 1 | ptype IPv4 | hlen 6 | plen 4 | op 1 (request)
			" 0001 0800 06 04 0001" +
			// sender MAC | sender IP 10.0.0.10 | target MAC zero | target IP 10.0.0.10
			" 525400123456 0a00000a 000000000000 0a00000a" + pad,
		"ffffffffffff 525400123456 0806" +
			" 0001 0800 06 04 0002" + // op 2 (reply)
			" 525400123456 0a00000a ffffffffffff 0a00000a" + pad,
	}
	if len(frames) != len(want) {
		t.Fatalf("%d frames", len(frames))
	}
	for i, f := range frames {
		if len(f) != 60 {
			t.Errorf("frame %d is %d bytes, want 60", i, len(f))
		}
		if w := unhex(t, want[i]); !bytes.Equal(f, w) {
			t.Errorf("frame %d\n got %x\nwant %x", i, f, w)
		}
	}
}

func TestGARPIPoIBBytes(t *testing.T) {
	hw, err := net.ParseMAC("80:00:04:04:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de")
	if err != nil {
		t.Fatal(err)
	}
	p := garpIPoIB(hw, netip.MustParseAddr("192.168.7.1"))
	hwHex := "80000404fe8000000000000000 02c903000abcde"
	want := []string{
		// htype 32 | ptype IPv4 | hlen 20 | plen 4 | op 1
		"0020 0800 14 04 0001 " + hwHex + " c0a80701 " + strings.Repeat("00", 20) + " c0a80701",
		"0020 0800 14 04 0002 " + hwHex + " c0a80701 " + hwHex + " c0a80701",
	}
	for i := range want {
		if w := unhex(t, want[i]); !bytes.Equal(p[i], w) {
			t.Errorf("payload %d\n got %x\nwant %x", i, p[i], w)
		}
	}
}

func TestSockaddrLL(t *testing.T) {
	sa := sockaddrLL(7, etherTypeARP, ethBroadcast)
	if len(sa) != 20 || sa[2] != 0x08 || sa[3] != 0x06 || sa[11] != 6 || !bytes.Equal(sa[12:18], ethBroadcast) {
		t.Errorf("ethernet sockaddr_ll %x", sa)
	}
	long := sockaddrLL(7, etherTypeARP, make(net.HardwareAddr, 20))
	if len(long) != 32 || long[11] != 20 {
		t.Errorf("IPoIB sockaddr_ll %x", long)
	}
}
