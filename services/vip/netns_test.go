package vip

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/internal/netnstest"
)

// TestVethNetns runs the real netlink and AF_PACKET paths against a veth
// pair in a throw-away network namespace: the test binary re-runs itself
// under `unshare -n`, so the host's interfaces are never touched. It
// skips where namespaces are not allowed (not root, no unshare).
func TestVethNetns(t *testing.T) {
	if !netnstest.Inside(t) {
		return
	}

	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vA"}, PeerName: "vB"}); err != nil {
		t.Fatal(err)
	}
	a, _ := netlink.LinkByName("vA")
	b, _ := netlink.LinkByName("vB")
	for _, l := range []netlink.Link{a, b} {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherTypeARP)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherTypeARP), Ifindex: b.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})

	deadline := time.Now().Add(3 * time.Second)
	for {
		l, err := netlinkOps{}.Link("vA")
		if err == nil && l.Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vA never came up: %+v %v", l, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r, err := New(Config{Address: netip.MustParsePrefix("10.9.0.10/24"), Link: "vA", ARPCount: 3, ARPInterval: 20 * time.Millisecond},
		Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	want := garpEthernet(a.Attrs().HardwareAddr, netip.MustParseAddr("10.9.0.10"))
	buf := make([]byte, 1500)
	for i := 0; i < 2*3; i++ {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		for err == unix.EINTR { // the Go runtime's preemption signals
			n, _, err = unix.Recvfrom(fd, buf, 0)
		}
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f := buf[:n]; !bytes.Equal(f, want[0]) && !bytes.Equal(f, want[1]) {
			t.Errorf("frame %d on the wire: %x", i, f)
		}
	}
	if err := r.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Monitor(ctx); err == nil {
		t.Fatal("healthy after stop")
	}
	if err := r.Start(ctx); err != nil { // again, after a stop
		t.Fatal(err)
	}
	if err := netlink.LinkSetDown(a); err != nil {
		t.Fatal(err)
	}
	if err := r.Monitor(ctx); err == nil {
		t.Fatal("healthy on a down link")
	}
}
