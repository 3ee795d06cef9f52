package wizard

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/internal/fakeclock"
)

const testImage = "tandem 2026.05.1"

// fakeHardware is a head with a system disk, four blank data disks and
// one that holds an XFS filesystem; n (1 or 2) makes its names unique.
func fakeHardware(n int) Hardware {
	s := strconv.Itoa(n)
	return Hardware{
		NICs: []NIC{
			{Name: "eno1", MAC: "3c:ec:ef:00:0" + s + ":01", Link: true, SpeedMbps: 1000, Addrs: []string{"10.0.0.1" + s + "/24"}, Wizard: true},
			{Name: "enp65s0f0", MAC: "b8:ce:f6:00:0" + s + ":10", Link: true, SpeedMbps: 25000},
			{Name: "enp65s0f1", MAC: "b8:ce:f6:00:0" + s + ":11", Link: true, SpeedMbps: 25000},
			{Name: "eno2", MAC: "3c:ec:ef:00:0" + s + ":02", Link: false, SpeedMbps: 1000},
		},
		Disks: []Disk{
			{Model: "SAMSUNG MZ7LH240HAHQ", Serial: "S45RNA0M" + s + "00001", SizeBytes: 240057409536, Signature: "gpt", System: true},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00001", SizeBytes: 1920383410176},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00002", SizeBytes: 1920383410176},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00003", SizeBytes: 1920383410176},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00004", SizeBytes: 1920383410176},
			{Model: "WDC WD40EFRX-68N32N0", Serial: "WD-WCC7K" + s + "HX4TZ", SizeBytes: 4000787030016, Signature: "xfs"},
		},
		Gateway: "10.0.0.1",
	}
}

func inventoryOf(hw Hardware) Inventory {
	return func(context.Context) (Hardware, error) { return hw, nil }
}

type clock = fakeclock.Clock

func newClock() *clock { return fakeclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)) }

// freeUDPPort finds a UDP port free on ip (both test heads use it, each
// on its own loopback address, as broadcast would reach both).
func freeUDPPort(t *testing.T, ip string) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// testHead is one head's wizard on a loopback address.
type testHead struct {
	t   *testing.T
	w   *Wizard
	dir string
	ip  string

	mu       sync.Mutex
	consoles []Console

	res  chan *Result
	stop context.CancelFunc
}

type headConfig struct {
	ip      string
	dir     string // "" = a new t.TempDir
	hw      Hardware
	image   string
	peers   []string // loopback IPs whose discovery ports get beacons
	port    int      // discovery port, 0 = discovery off
	clock   *clock
	opts    func(*Options)
	noStart bool
}

func startHead(t *testing.T, hc headConfig) *testHead {
	t.Helper()
	if hc.dir == "" {
		hc.dir = t.TempDir()
	}
	if hc.image == "" {
		hc.image = testImage
	}
	h := &testHead{t: t, dir: hc.dir, ip: hc.ip, res: make(chan *Result, 1)}
	opts := Options{
		StateDir:     hc.dir,
		Listen:       hc.ip + ":0",
		ImageVersion: hc.image,
		Inventory:    inventoryOf(hc.hw),
		Console: func(c Console) {
			h.mu.Lock()
			h.consoles = append(h.consoles, c)
			h.mu.Unlock()
		},
		Discovery: Discovery{Listen: "off"},
		Log:       slog.New(slog.DiscardHandler),
	}
	if testing.Verbose() {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if hc.port != 0 {
		opts.Discovery = Discovery{Listen: fmt.Sprintf("%s:%d", hc.ip, hc.port), Interval: 200 * time.Millisecond}
		for _, p := range hc.peers {
			opts.Discovery.AnnounceTo = append(opts.Discovery.AnnounceTo, fmt.Sprintf("%s:%d", p, hc.port))
		}
	}
	if hc.clock != nil {
		opts.Now = hc.clock.Now
	}
	if hc.opts != nil {
		hc.opts(&opts)
	}
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	t.Cleanup(func() { h.close() })
	if !hc.noStart {
		h.run()
	}
	return h
}

func (h *testHead) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	started := make(chan struct{})
	go func() {
		close(started)
		res, err := h.w.Run(ctx)
		if err == nil {
			h.res <- res
		}
	}()
	<-started
	if h.w.Addr() == nil {
		return // configured: serves nothing
	}
	// Run starts serving at once; wait until the port answers.
	for range 100 {
		c, err := net.Dial("tcp", h.w.Addr().String())
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *testHead) close() {
	if h.stop != nil {
		h.stop()
	}
	h.w.Close()
}

// code is the setup code the console shows now.
func (h *testHead) code() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.consoles) - 1; i >= 0; i-- {
		if c := h.consoles[i].Code; c != "" {
			return strings.ReplaceAll(c, " ", "")
		}
	}
	h.t.Fatal("no code on the console")
	return ""
}

func (h *testHead) url() string { return "https://" + h.w.Addr().String() }

// result waits for Run to return.
func (h *testHead) result(d time.Duration) *Result {
	select {
	case r := <-h.res:
		h.res <- r
		return r
	case <-time.After(d):
		return nil
	}
}

// browser is an operator's browser, as far as HTTP goes: cookies, and
// the CSRF token of the last page.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
	csrf string
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, Transport: tr, Timeout: 60 * time.Second}}
}

func (b *browser) do(req *http.Request) (int, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := csrfRE.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return resp.StatusCode, string(body)
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.do(req)
}

// post sends a form with the last page's CSRF token unless the form
// has its own.
func (b *browser) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (b *browser) signIn(code string) {
	b.t.Helper()
	b.get("/login")
	st, body := b.post("/login", url.Values{"code": {code}})
	if st != http.StatusOK || !strings.Contains(body, "Find the other head") {
		b.t.Fatalf("sign in: %d\n%s", st, body)
	}
}

// waitFor polls until f is true.
func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
