package qemu

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const (
	fpA = "60AA F090 17B2 DE86 3441 A683 B44A 7CB8 D798 3613 2683 9F96 1EF2 21B6 C8F6 6BA4"
	fpB = "0123 4567 89AB CDEF 0123 4567 89AB CDEF FEDC BA98 7654 3210 FEDC BA98 7654 3210"
)

// block renders a console block as PID 1 prints it (wizard.Console.Lines
// behind "tandem: ").
func block(state, url, code, until, fp string) string {
	l := []string{"Tandem: this head is " + state}
	if url != "" {
		l = append(l, "  setup wizard:  "+url)
	}
	if code != "" {
		l = append(l, "  setup code:    "+code+"   (valid until "+until+")")
	}
	if fp != "" {
		l = append(l, "  certificate:   SHA-256 "+fp[:39], "                         "+fp[40:])
	}
	return "tandem: " + strings.Join(l, "\ntandem: ") + "\n"
}

func TestParseWizardConsole(t *testing.T) {
	first := block("not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA)
	tests := []struct {
		name string
		text string
		want []WizardBlock // every block, in order
	}{
		{"none", "tandem: PID 1 starting\n[    1.2] kernel\n", nil},
		{"one block", "tandem: early boot done\n" + first + "tandem: time=... msg=serving\n",
			[]WizardBlock{{"not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA}}},
		{"CRLF, as a serial console gives it", strings.ReplaceAll(first, "\n", "\r\n"),
			[]WizardBlock{{"not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA}}},
		{"no prefix", strings.ReplaceAll(first, "tandem: ", ""),
			[]WizardBlock{{"not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA}}},
		{"kernel lines between the block's lines",
			strings.Replace(strings.Replace(first, "\ntandem:   setup code", "\n[   12.345678] e1000: eth0 NIC Link is Up\ntandem:   setup code", 1),
				"\ntandem:                 ", "\n[   12.4] random: crng init done\ntandem:                 ", 1),
			[]WizardBlock{{"not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA}}},
		{"a burnt code, then a new block", first + "tandem: level=WARN msg=\"wrong setup code\"\n" +
			block("not configured", "https://10.0.0.100/", "9876 5432", "23:51", fpA),
			[]WizardBlock{
				{"not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA},
				{"not configured", "https://10.0.0.100/", "9876 5432", "23:51", fpA},
			}},
		{"being paired: no code", first + block("being paired", "https://10.0.0.100/", "", "", fpA),
			[]WizardBlock{
				{"not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA},
				{"being paired", "https://10.0.0.100/", "", "", fpA},
			}},
		{"link-local, another port", block("not configured", "https://169.254.10.11:8443/", "0000 0001", "00:05", fpB),
			[]WizardBlock{{"not configured", "https://169.254.10.11:8443/", "0000 0001", "00:05", fpB}}},
		{"half a block so far", first[:strings.Index(first, "tandem:                ")],
			[]WizardBlock{{"not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA[:39]}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ends := ParseWizardConsole(tt.text)
			if len(got) != len(tt.want) || len(ends) != len(got) {
				t.Fatalf("%d blocks (%d ends), want %d: %+v", len(got), len(ends), len(tt.want), got)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("block %d:\n got %+v\nwant %+v", i, got[i], tt.want[i])
				}
				if i > 0 && ends[i] <= ends[i-1] || ends[i] > len(tt.text) {
					t.Errorf("block %d ends at %d (before: %v, text %d bytes)", i, ends[i], ends[:i], len(tt.text))
				}
			}
			if n := len(got); n > 0 && got[n-1].Complete() && !strings.Contains(tt.text[:ends[n-1]], got[n-1].Fingerprint[40:]) {
				t.Errorf("the last block ends at %d, before its certificate's second line", ends[n-1])
			}
		})
	}
}

func TestWizardBlockCompleteAndAddr(t *testing.T) {
	tests := []struct {
		b        WizardBlock
		complete bool
		addr     string // "" when the URL is refused
	}{
		{WizardBlock{URL: "https://10.0.0.100/", Fingerprint: fpA}, true, "10.0.0.100:443"},
		{WizardBlock{URL: "https://10.0.0.100:8443/", Fingerprint: fpA[:39]}, false, "10.0.0.100:8443"},
		{WizardBlock{URL: "https://[fe80::1]/"}, false, "[fe80::1]:443"},
		{WizardBlock{URL: "http://10.0.0.100/"}, false, ""},
		{WizardBlock{URL: "https://head-a/"}, false, ""},
		{WizardBlock{}, false, ""},
	}
	for _, tt := range tests {
		if got := tt.b.Complete(); got != tt.complete {
			t.Errorf("%+v: Complete %v, want %v", tt.b, got, tt.complete)
		}
		ap, err := tt.b.AddrPort()
		switch {
		case tt.addr == "" && err == nil:
			t.Errorf("%q: AddrPort %s, want an error", tt.b.URL, ap)
		case tt.addr != "" && (err != nil || ap.String() != tt.addr):
			t.Errorf("%q: AddrPort %s, %v, want %s", tt.b.URL, ap, err, tt.addr)
		}
	}
}

// WaitWizardBlock returns the newest complete block after the mark, and
// waits for the next one past it.
func TestConsoleWaitWizardBlock(t *testing.T) {
	c, err := newConsole(t.TempDir()+"/console.log", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := block("not configured", "https://10.0.0.100/", "5144 0256", "23:36", fpA)
	c.Write([]byte("tandem: PID 1 starting\n" + first[:60]))
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.Write([]byte(first[60:]))
	}()
	b, end, err := c.WaitWizardBlock(ctx, 0)
	if err != nil || b.Code != "5144 0256" || !b.Complete() {
		t.Fatalf("first block: %+v, %v", b, err)
	}
	second := block("not configured", "https://10.0.0.100/", "9876 5432", "23:51", fpA)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.Write([]byte(second[:100]))
		time.Sleep(50 * time.Millisecond)
		c.Write([]byte(second[100:]))
	}()
	b, end2, err := c.WaitWizardBlock(ctx, end)
	if err != nil || b.Code != "9876 5432" || end2 <= end {
		t.Fatalf("second block: %+v ends at %d (first %d), %v", b, end2, end, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if b, _, err := c.WaitWizardBlock(short, end2); err == nil {
		t.Fatalf("no new block, got %+v", b)
	}
	c.closeWith(context.Canceled)
	if _, _, err := c.WaitWizardBlock(ctx, end2); err == nil {
		t.Fatal("a closed console: no error")
	}
}

// The default DHCP pool of an unconfigured lab leaves the host port its
// default address and stays clear of the client's and the lab site's.
func TestWizardDHCPClearOfTheLab(t *testing.T) {
	c := WizardDHCP()
	srv, err := NewDHCPServer(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	host, err := hostNICAddr(netip.Prefix{}, srv, nil)
	if err != nil {
		t.Fatalf("the host port with the wizard's DHCP: %v", err)
	}
	for _, a := range []netip.Addr{defaultClientAddr.Addr(), host.Addr(), srv.Config().ServerID,
		netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")} {
		if !a.Less(c.PoolFirst) && !c.PoolLast.Less(a) {
			t.Errorf("%s is in the pool %s-%s", a, c.PoolFirst, c.PoolLast)
		}
	}
	if c.Lease < 10*time.Minute {
		t.Errorf("lease %s: shorter than a setup code lives", c.Lease)
	}
}
