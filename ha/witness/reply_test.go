package witness

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"tandem.dev/tandem/internal/netnstest"
)

// TestAnswerFromTheAddressAskedOf: a witness host with two addresses on
// the heads' subnet answers from the one a head asked, not from its
// primary one: a head's socket is connected to the witness address and
// drops anything else. Played on loopback, in a private namespace (the
// witness binds the wildcard), where 127.0.0.2 is the second address.
func TestAnswerFromTheAddressAskedOf(t *testing.T) {
	if !netnstest.Inside(t) {
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, nw := range []string{"udp4"} {
		t.Run(nw, func(t *testing.T) {
			conn, err := net.ListenPacket(nw, ":0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go serveDatagrams(ctx, conn, func(b []byte, from string) []byte { return append([]byte("re: "), b...) }, slog.New(slog.DiscardHandler))
			port := conn.LocalAddr().(*net.UDPAddr).Port
			for _, to := range []string{"127.0.0.1", "127.0.0.2"} {
				c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.UDPAddr{IP: net.ParseIP(to), Port: port})
				if err != nil {
					t.Fatal(err)
				}
				c.Write([]byte("vote?"))
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 64)
				n, err := c.Read(buf)
				c.Close()
				if err != nil || string(buf[:n]) != "re: vote?" {
					t.Errorf("asked %s: %q, %v", to, buf[:n], err)
				}
			}
		})
	}
}
