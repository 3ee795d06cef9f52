package vip

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/internal/hosttool"
)

// TestTickleResetsOrphanedClient is the failover the tickle exists for,
// on the real kernel: a client's request sits acknowledged but
// unanswered on the old head, which then dies without a word; the new
// head takes the address over and listens. Without a tickle the client
// would wait for its reply until its own timeout (60 s for NFS); with
// one, its connection is reset at once and it can reconnect.
//
// Three network namespaces on a bridge play old head, new head and
// client (ip-netns(8)); the test binary re-runs itself inside them.
// It needs root and ip; with TANDEM_LOOP_TESTS=1 (as in CI) a missing
// piece is a failure, otherwise a skip.
func TestTickleResetsOrphanedClient(t *testing.T) {
	switch os.Getenv("TANDEM_TICKLE_ROLE") {
	case "server":
		tickleServer()
		return
	case "client":
		tickleClient()
		return
	case "tickle":
		err := sendTickles([]Conn{{Local: netip.MustParseAddrPort(os.Getenv("TANDEM_TICKLE_LOCAL")), Client: netip.MustParseAddrPort(os.Getenv("TANDEM_TICKLE_CLIENT"))}})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	hosttool.RequireRootKernel(t, "network namespaces")
	ipCmd := hosttool.Require(t, "ip", "iproute2")
	// The old head either dies, or releases the address the way a
	// switchover does; the client must hear nothing from it either way.
	for i, how := range []string{"dies", "releases"} {
		t.Run(how, func(t *testing.T) { orphanAndTickle(t, ipCmd, how, i) })
	}
}

func orphanAndTickle(t *testing.T, ipCmd, how string, run int) {
	sfx := fmt.Sprintf("%d-%d", os.Getpid(), run)
	ns := map[string]string{"old": "tkold" + sfx, "new": "tknew" + sfx, "client": "tkcli" + sfx, "br": "tkbr" + sfx}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipCmd, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, n := range ns {
		ip("netns", "add", n)
		t.Cleanup(func() { exec.Command(ipCmd, "netns", "del", n).Run() })
	}
	ip("-n", ns["br"], "link", "add", "br0", "type", "bridge")
	ip("-n", ns["br"], "link", "set", "br0", "up")
	addrs := map[string]string{"old": "10.9.0.11/24", "new": "10.9.0.12/24", "client": "10.9.0.2/24"}
	for i, role := range []string{"old", "new", "client"} {
		e, p := fmt.Sprintf("tke%d", i), fmt.Sprintf("tkp%d", i)
		ip("link", "add", e, "netns", ns[role], "type", "veth", "peer", "name", p, "netns", ns["br"])
		ip("-n", ns["br"], "link", "set", p, "master", "br0")
		ip("-n", ns["br"], "link", "set", p, "up")
		ip("-n", ns[role], "link", "set", e, "up")
		ip("-n", ns[role], "addr", "add", addrs[role], "dev", e)
	}
	inNS := func(n, role string, env ...string) *exec.Cmd {
		c := exec.Command(ipCmd, "netns", "exec", n, os.Args[0], "-test.run=^TestTickleResetsOrphanedClient$/^dies$")
		c.Env = append(append(os.Environ(), "TANDEM_TICKLE_ROLE="+role), env...)
		return c
	}

	// The old head serves; the client connects and sends a request the
	// old head reads but never answers.
	srv := inNS(ns["old"], "server", "TANDEM_TICKLE_LINK=tke0")
	srvOut, _ := srv.StdoutPipe()
	srvIn, _ := srv.StdinPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	if line := readLine(t, srvOut); line != "listening" {
		t.Fatalf("server: %q", line)
	}
	cli := inNS(ns["client"], "client")
	cliOut, _ := cli.StdoutPipe()
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer cli.Process.Kill()
	local := readLine(t, cliOut) // "sent from 10.9.0.2:NNNN"
	clientAddr, ok := strings.CutPrefix(local, "sent from ")
	if !ok {
		t.Fatalf("client: %q", local)
	}
	if line := readLine(t, srvOut); line != "got request" {
		t.Fatalf("server: %q", line)
	}

	switch how {
	case "dies": // silently: its link goes, then its namespace
		ip("-n", ns["old"], "link", "set", "tke0", "down")
		srv.Process.Kill()
		srv.Wait()
		ip("netns", "del", ns["old"])
	case "releases": // VIP stop, then the server exits and its sockets close
		fmt.Fprintln(srvIn, "release")
		if line := readLine(t, srvOut); line != "released <nil>" {
			t.Fatalf("old head: %q", line)
		}
		srv.Wait()
	}

	// The new head takes the address and listens, then tickles.
	srv2 := inNS(ns["new"], "server", "TANDEM_TICKLE_LINK=tke1")
	srv2Out, _ := srv2.StdoutPipe()
	if err := srv2.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv2.Process.Kill()
	if line := readLine(t, srv2Out); line != "listening" {
		t.Fatalf("new server: %q", line)
	}
	// The client still believes in its connection.
	select {
	case line := <-lines(cliOut):
		t.Fatalf("the client noticed before any tickle: %q", line)
	case <-time.After(time.Second):
	}
	tk := inNS(ns["new"], "tickle", "TANDEM_TICKLE_LOCAL=10.9.0.10:2049", "TANDEM_TICKLE_CLIENT="+clientAddr)
	sent := time.Now()
	if out, err := tk.CombinedOutput(); err != nil {
		t.Fatalf("tickle: %v: %s", err, out)
	}
	select {
	case line := <-lines(cliOut):
		if !strings.Contains(line, "reset") {
			t.Fatalf("client: %q, want its connection reset", line)
		}
		t.Logf("client: %s, %.2f s after the tickle", line, time.Since(sent).Seconds())
	case <-time.After(10 * time.Second):
		t.Fatal("the client's orphaned connection was not reset within 10 s of the tickle")
	}
}

func readLine(t *testing.T, r io.Reader) string {
	t.Helper()
	select {
	case l := <-lines(r):
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no line within 10 s")
		return ""
	}
}

var lineChans = map[io.Reader]chan string{}

// lines turns r into a channel of lines, once per reader.
func lines(r io.Reader) <-chan string {
	if c, ok := lineChans[r]; ok {
		return c
	}
	c := make(chan string, 16)
	lineChans[r] = c
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c <- sc.Text()
		}
	}()
	return c
}

// tickleServer holds the address with the VIP resource (on link tke*),
// answers nothing, and on "release" from stdin stops the VIP and exits,
// closing its sockets as a stopping file server does.
func tickleServer() {
	link := os.Getenv("TANDEM_TICKLE_LINK")
	r, err := New(Config{Address: netip.MustParsePrefix("10.9.0.10/24"), Link: link, ARPCount: 1}, Options{Log: slog.New(slog.DiscardHandler)})
	if err == nil {
		err = r.Start(context.Background())
	}
	if err != nil {
		fmt.Println("vip:", err)
		return
	}
	l, err := net.Listen("tcp", "10.9.0.10:2049")
	if err != nil {
		fmt.Println("listen:", err)
		return
	}
	fmt.Println("listening")
	go func() {
		if sc := bufio.NewScanner(os.Stdin); sc.Scan() && sc.Text() == "release" {
			err := r.Stop(context.Background())
			fmt.Println("released", err)
			os.Exit(0) // the kernel closes the connection: a FIN, unless silenced
		}
	}()
	c, err := l.Accept()
	if err != nil {
		return
	}
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err == nil {
		fmt.Println("got request")
	}
	time.Sleep(time.Hour) // never answer
}

func tickleClient() {
	c, err := net.Dial("tcp", "10.9.0.10:2049")
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	c.Write([]byte("request"))
	fmt.Println("sent from", c.LocalAddr())
	_, err = c.Read(make([]byte, 64))
	if err != nil && strings.Contains(err.Error(), "reset") {
		fmt.Println("connection reset")
		return
	}
	fmt.Println("read:", err)
}
