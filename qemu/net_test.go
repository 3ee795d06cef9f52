package qemu

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestCheckBackend(t *testing.T) {
	tests := []struct {
		backend string
		ok      bool
	}{
		{"socket,udp=127.0.0.1:2001,localaddr=127.0.0.1:2000", true},
		{"socket,udp=10.0.0.1:2001,localaddr=127.0.0.1:2000", false},
		{"socket,udp=127.0.0.1:2001,localaddr=0.0.0.0:2000", false},
		{"socket,mcast=230.0.0.1:1234", false},
		{"socket,listen=:5000", false},
		{"user", false},
		{"tap,ifname=tap0", false},
	}
	for _, tc := range tests {
		if err := checkBackend(tc.backend); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.backend, err, tc.ok)
		}
	}
}

// Two reservations never share a port, and a block's ports are free.
func TestReservePorts(t *testing.T) {
	a, err := ReservePorts()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := ReservePorts()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if a.Base == b.Base {
		t.Fatalf("both labs got block %d", a.Base)
	}
	seen := map[int]bool{}
	for _, blk := range []*PortBlock{a, b} {
		for i := 0; i < blockSize; i++ {
			p, err := blk.Next()
			if err != nil {
				t.Fatal(err)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
		if _, err := blk.Next(); err == nil {
			t.Error("block not exhausted after blockSize ports")
		}
	}
}

// testHub runs a hub whose members a, b and c are these sockets, until
// the test ends, and returns it with its address.
func testHub(t *testing.T, a, b, c *net.UDPConn) (*Hub, *net.UDPAddr) {
	t.Helper()
	port := func(u *net.UDPConn) int { return u.LocalAddr().(*net.UDPAddr).Port }
	probe := udp(t)
	hubPort := port(probe)
	probe.Close()
	h, err := NewHub(hubPort, map[string]int{"a": port(a), "b": port(b), "c": port(c)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go h.Run(ctx)
	t.Cleanup(h.Close)
	return h, net.UDPAddrFromAddrPort(h.Addr())
}

func udp(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// frame is an Ethernet frame to dst:dst:..., from src:src:... (0xff: broadcast).
func frame(dst, src byte, payload string) []byte {
	f := make([]byte, 14, 14+len(payload))
	for i := 0; i < 6; i++ {
		f[i], f[6+i] = dst, src
	}
	return append(f, payload...)
}

func recv(c *net.UDPConn) string {
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil {
		return ""
	}
	return string(b[14:n])
}

// The hub floods broadcasts and unknown destinations, then forwards
// unicast only to the member that owns the MAC, and ignores strangers.
func TestHub(t *testing.T) {
	a, b, c, stranger := udp(t), udp(t), udp(t), udp(t)
	h, hub := testHub(t, a, b, c)

	a.WriteToUDP(frame(0xff, 0xa0, "hello all"), hub)
	if got := recv(b); got != "hello all" {
		t.Errorf("b got %q", got)
	}
	if got := recv(c); got != "hello all" {
		t.Errorf("c got %q", got)
	}
	if got := recv(a); got != "" {
		t.Errorf("sender got its own broadcast %q", got)
	}
	b.WriteToUDP(frame(0xa0, 0xb0, "to a"), hub) // a's MAC is learned
	if got := recv(a); got != "to a" {
		t.Errorf("a got %q", got)
	}
	if got := recv(c); got != "" {
		t.Errorf("c overheard unicast %q", got)
	}
	stranger.WriteToUDP(frame(0xff, 0xee, "intruder"), hub)
	if got := recv(a); got != "" {
		t.Errorf("a got a stranger's frame %q", got)
	}
	if h.Dropped.Load() == 0 {
		t.Error("stranger's frame not counted as dropped")
	}
}

// The x86 BCJ + LZMA2 decoder agrees with xz(1) on x86 code.
func TestUnxzBCJ(t *testing.T) {
	xz, err := exec.LookPath("xz")
	if err != nil {
		t.Skip("xz not installed")
	}
	exe, err := os.Executable() // plenty of CALL/JMP: BCJ really rewrites it
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	raw = raw[:min(len(raw), 1<<20)]
	for _, args := range [][]string{
		{"--format=xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB"},
		{"--format=xz", "--check=crc32", "--lzma2=preset=6"},
	} {
		t.Run(args[len(args)-1], func(t *testing.T) {
			cmd := exec.Command(xz, append(args, "-c")...)
			cmd.Stdin = bytes.NewReader(raw)
			comp, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			got, err := unxzBCJ(comp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("decoded %d bytes differ from the %d input bytes", len(got), len(raw))
			}
		})
	}
}

func TestSocketPathTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), string(bytes.Repeat([]byte("d"), 100)))
	_, err := Start(context.Background(), Config{Name: "vm", Dir: dir, Kernel: "/dev/null"})
	if err == nil {
		t.Fatal("Start accepted a socket path over " + strconv.Itoa(maxSocketPath) + " bytes")
	}
}
