package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// peerMAC is head-a's management MAC: the test's second namespace plays
// head-a's NIC.
var peerMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x1a, 0x0a, 0x00}

// segmentLab is a lab without VMs: a hub with a DHCP server and two
// members that are namespaces of this process, the host port and a peer
// that plays head-a (static DHCP address 10.0.0.20). It is closed when the
// test ends.
func segmentLab(t *testing.T) (*Lab, *segNS) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and TAP devices")
	}
	ports, err := ReservePorts()
	if err != nil {
		t.Fatal(err)
	}
	hubPort, _ := ports.Next()
	hostPort, _ := ports.Next()
	peerPort, _ := ports.Next()
	hub, err := NewHub(hubPort, map[string]int{HostMember: hostPort, "head-a": peerPort}, nil)
	if err != nil {
		ports.Release()
		t.Fatal(err)
	}
	srv, err := NewDHCPServer(DHCPConfig{
		Static:    map[string]netip.Addr{strings.ToUpper(peerMAC.String()): netip.MustParseAddr("10.0.0.20")},
		PoolFirst: netip.MustParseAddr("10.0.0.50"), PoolLast: netip.MustParseAddr("10.0.0.52"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hub.SetDHCP(srv)
	ctx, cancel := context.WithCancel(context.Background())
	go hub.Run(ctx)
	l := &Lab{Dir: t.TempDir(), Hub: hub, ctx: ctx, ports: ports, log: slog.New(slog.DiscardHandler),
		state: LabState{VMs: []VMState{{Name: "head-a", NICs: []NIC{{ID: "mgmt", MAC: peerMAC.String()}}}}}}
	t.Cleanup(func() { cancel(); l.Close() })

	addr, err := hostNICAddr(netip.Prefix{}, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.host, err = newSegNS(HostMember, hub.Addr(), hostPort, hostNICMAC, addr, nil); err != nil {
		t.Fatal(err)
	}
	peer, err := newSegNS("head-a", hub.Addr(), peerPort, peerMAC, netip.MustParsePrefix("10.0.0.20/24"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(peer.Close)
	return l, peer
}

// serveWhoami answers each line on ln with the client's address and the line.
func serveWhoami(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "%s %s", host, line)
			}()
		}
	}()
}

// ask sends line to addr (from the host's namespace) and returns the answer.
func ask(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\n", line)
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(got), err
}

// The host reaches a server on the management segment only through the
// lab: a loopback forward whose connections start in the lab's namespace
// and cross the hub (the server sees the host port's address), while the
// host's own namespace gets no link, address or route of the segment.
// Requests from another process (tandem lab forward) land on the same
// forward; the DHCP server answers the host port; Close ends it all.
func TestHostNICForward(t *testing.T) {
	l, peer := segmentLab(t)
	hostAddr := l.HostNIC().Addr()
	if want := netip.MustParsePrefix("10.0.0.253/24"); l.HostNIC() != want {
		t.Errorf("host port address %s, want %s", l.HostNIC(), want)
	}
	ln, err := peer.Listen("tcp4", "10.0.0.20:443")
	if err != nil {
		t.Fatal(err)
	}
	serveWhoami(t, ln)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fwd, err := l.Forward(ctx, netip.MustParseAddrPort("10.0.0.20:443"))
	if err != nil {
		t.Fatal(err)
	}
	if ap, err := netip.ParseAddrPort(fwd); err != nil || !ap.Addr().IsLoopback() {
		t.Fatalf("forward listens on %q, want a loopback address", fwd)
	}
	for i := range 3 {
		got, err := ask(fwd, fmt.Sprint("ping ", i))
		if want := fmt.Sprintf("%s ping %d", hostAddr, i); got != want || err != nil {
			t.Fatalf("through %s: got %q, %v; want %q", fwd, got, err, want)
		}
	}
	if l.Hub.Forwarded.Load() == 0 {
		t.Error("the hub switched no frame: the connection did not cross the segment")
	}

	t.Run("DialContext", func(t *testing.T) {
		c, err := l.DialContext(ctx, "tcp4", "10.0.0.20:443")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintln(c, "direct")
		got, _ := bufio.NewReader(c).ReadString('\n')
		if want := hostAddr.String() + " direct\n"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		if _, err := l.DialContext(ctx, "tcp4", "head-a:443"); err == nil {
			t.Error("dialled a host name, which the host's resolver would look up")
		}
	})

	t.Run("off the segment", func(t *testing.T) {
		if _, err := l.Forward(ctx, netip.MustParseAddrPort("192.0.2.1:443")); err == nil {
			t.Error("forwarded to an address off the segment")
		}
	})

	t.Run("host namespace untouched", func(t *testing.T) {
		// No dial to 10.0.0.20 from here: on a host with a default route
		// it would leave the machine. What must not exist is checked instead.
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, lk := range links {
			a := lk.Attrs()
			if a.Name == "tap0" || a.HardwareAddr.String() == hostNICMAC.String() || a.HardwareAddr.String() == peerMAC.String() {
				t.Errorf("the host's namespace has the lab's link %s (%s)", a.Name, a.HardwareAddr)
			}
			addrs, _ := netlink.AddrList(lk, netlink.FAMILY_V4)
			for _, ad := range addrs {
				if ip, _ := netip.AddrFromSlice(ad.IP); ip.Unmap() == hostAddr || ip.Unmap() == netip.MustParseAddr("10.0.0.20") {
					t.Errorf("the host's %s has the lab's address %s", a.Name, ip)
				}
			}
		}
		routes, err := netlink.RouteGet(net.ParseIP("10.0.0.20"))
		if err == nil {
			for _, r := range routes {
				if src, _ := netip.AddrFromSlice(r.Src); src.Unmap() == hostAddr {
					t.Errorf("the host routes 10.0.0.20 from the lab's address: %+v", r)
				}
			}
		}
	})

	t.Run("requests from another process", func(t *testing.T) {
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		go l.ServeForwards(sctx, nil)
		addr, to, err := RequestForward(ctx, l.Dir, "head-a") // static DHCP address, port 443
		if err != nil {
			t.Fatal(err)
		}
		if to != "10.0.0.20:443" || addr != fwd {
			t.Errorf("request for head-a: %s → %s, want the existing %s → 10.0.0.20:443", addr, to, fwd)
		}
		if _, _, err := RequestForward(ctx, l.Dir, "head-z:443"); err == nil || !strings.Contains(err.Error(), "no VM") {
			t.Errorf("request for an unknown VM: %v", err)
		}
		b, err := os.ReadFile(filepath.Join(l.Dir, StateFile))
		if err != nil {
			t.Fatal(err)
		}
		var st LabState
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Forwards) != 1 || st.Forwards[0] != (ForwardState{Addr: fwd, To: "10.0.0.20:443"}) {
			t.Errorf("state file forwards %+v", st.Forwards)
		}
	})

	t.Run("DHCP answers the host port", func(t *testing.T) {
		pc, err := l.ListenPacket("udp4", "0.0.0.0:68")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		rc, _ := pc.(*net.UDPConn).SyscallConn()
		rc.Control(func(fd uintptr) {
			// The namespace has no default route, so 255.255.255.255 needs the link named.
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "tap0")
		})
		disc, err := dhcpv4.NewDiscovery(hostNICMAC, dhcpv4.WithBroadcast(true))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(disc.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("no DHCP offer: %v", err)
			}
			m, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || m.TransactionID != disc.TransactionID {
				continue
			}
			if m.MessageType() != dhcpv4.MessageTypeOffer || !m.YourIPAddr.Equal(net.ParseIP("10.0.0.50")) {
				t.Errorf("got %s for %s, want an offer of 10.0.0.50", m.MessageType(), m.YourIPAddr)
			}
			return
		}
	})

	l.Close()
	if _, err := ask(fwd, "after close"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("the forward still answers after Close: %v", err)
	}
	if _, err := l.DialContext(ctx, "tcp4", "10.0.0.20:443"); err == nil {
		t.Error("dialled into the namespace after Close")
	}
}

// The host port's address: the segment's second-to-last, unless the
// DHCP server or the site gives it to someone else.
func TestHostNICAddr(t *testing.T) {
	dhcp := func(c DHCPConfig) *DHCPServer {
		s, err := NewDHCPServer(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// siteWith is the lab's site config with some text replaced.
	siteWith := func(oldnew ...string) []byte {
		b, err := os.ReadFile("../configs/site.lab.toml")
		if err != nil {
			t.Fatal(err)
		}
		return []byte(strings.NewReplacer(oldnew...).Replace(string(b)))
	}
	tests := []struct {
		name string
		want netip.Prefix
		dhcp *DHCPServer
		site []byte
		got  string // or the error's words
	}{
		{"default segment", netip.Prefix{}, nil, nil, "10.0.0.253/24"},
		{"DHCP subnet", netip.Prefix{}, dhcp(DHCPConfig{Subnet: netip.MustParsePrefix("192.168.7.0/24")}), nil, "192.168.7.253/24"},
		{"site subnet", netip.Prefix{}, nil, siteWith("10.0.0.", "172.16.0.", "/24", "/16"), "172.16.255.253/16"},
		{"site's lab config", netip.Prefix{}, nil, siteWith(), "10.0.0.253/24"},
		{"chosen", netip.MustParsePrefix("10.0.0.99/24"), nil, nil, "10.0.0.99/24"},
		{"DHCP router", netip.Prefix{}, dhcp(DHCPConfig{Router: netip.MustParseAddr("10.0.0.253")}), nil, "DHCP router"},
		{"DHCP pool", netip.Prefix{}, dhcp(DHCPConfig{PoolFirst: netip.MustParseAddr("10.0.0.100"), PoolLast: netip.MustParseAddr("10.0.0.253")}), nil, "DHCP pool"},
		{"DHCP static", netip.Prefix{}, dhcp(DHCPConfig{Static: map[string]netip.Addr{"52:54:00:1a:0c:00": netip.MustParseAddr("10.0.0.253")}}), nil, "static"},
		{"a head", netip.Prefix{}, nil, siteWith("10.0.0.11/", "10.0.0.253/"), "node head-a"},
		{"the VIP", netip.MustParsePrefix("10.0.0.10/24"), nil, siteWith(), "VIP"},
		{"other subnet", netip.MustParsePrefix("10.1.0.5/24"), nil, nil, "not on the management segment"},
		{"other prefix length", netip.MustParsePrefix("10.0.0.5/16"), nil, nil, "not on the management segment"},
		{"tiny segment", netip.Prefix{}, dhcp(DHCPConfig{Subnet: netip.MustParsePrefix("10.0.0.0/30")}), nil, "8 addresses"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := hostNICAddr(tc.want, tc.dhcp, tc.site)
			got := a.String()
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.got) || (err == nil) != strings.Contains(tc.got, "/") {
				t.Errorf("got %q, want %q", got, tc.got)
			}
		})
	}
}

// Without root NewLab refuses a host port, saying why, before it starts
// any VM (the image does not even exist).
func TestHostNICNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		asNobody(t)
		return
	}
	_, err := NewLab(context.Background(), LabConfig{Image: filepath.Join(t.TempDir(), "none.img"), Topology: Node, UEFI: true, HostNIC: true})
	if err == nil || !strings.Contains(err.Error(), "host port") || !strings.Contains(err.Error(), "root") {
		t.Errorf("NewLab without root: %v, want an error about the host port needing root", err)
	}
	t.Log(err)
}

// A thread that joined the lab's namespace goes back to the host's and
// on serving goroutines: had it ended instead, a QEMU started from it
// (Pdeathsig) would have died with it, as whole lab VMs once did.
func TestHostNICThreadsLive(t *testing.T) {
	l, _ := segmentLab(t)
	done := make(chan *exec.Cmd)
	go func() {
		// The child and the namespace work share this thread.
		runtime.LockOSThread()
		child := exec.Command("sleep", "30")
		child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := child.Start(); err != nil {
			t.Error(err)
		}
		if err := onThread(func() error { return unix.Setns(l.host.nsfd, unix.CLONE_NEWNET) }); err != nil {
			t.Error(err)
		}
		runtime.UnlockOSThread()
		done <- child
	}()
	child := <-done
	defer child.Process.Kill()
	// Dials and listens in the namespace, on whatever threads.
	for range 20 {
		if c, err := l.host.DialContext(context.Background(), "tcp4", "10.0.0.20:1"); err == nil {
			c.Close()
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := child.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the child of the thread that joined the namespace died: %v", err)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	for _, task := range mustTasks(t) {
		if ns, _ := os.Readlink("/proc/self/task/" + task + "/ns/net"); ns != self {
			t.Errorf("thread %s is left in namespace %s", task, ns)
		}
	}
}

func mustTasks(t *testing.T) []string {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	return ids
}

// asNobody runs t again, alone, in a copy of the test binary as user
// nobody (65534), and reports its outcome: a root CI still checks what a
// user without root is told.
func asNobody(t *testing.T) {
	t.Helper()
	dir, err := os.MkdirTemp("", "tandem-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "test")
	raw, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, raw, 0o755)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	tmp := filepath.Join(dir, "tmp") // nobody's own
	if err == nil {
		err = os.Mkdir(tmp, 0o700)
	}
	if err == nil {
		err = os.Chown(tmp, 65534, 65534)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Dir = tmp
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + tmp, "TMPDIR=" + tmp}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	t.Logf("as nobody:\n%s", out)
}
