package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/pairing"
	"tandem.dev/tandem/wizard"
)

const pairTestImage = "tandem 2026.05.1"

// pairTestHardware is a head with a system disk, four blank data disks
// and one that holds XFS; n (1 or 2) makes its names unique.
func pairTestHardware(n int) wizard.Hardware {
	s := strconv.Itoa(n)
	return wizard.Hardware{
		NICs: []wizard.NIC{
			{Name: "eno1", MAC: "3c:ec:ef:00:0" + s + ":01", Link: true, SpeedMbps: 1000, Addrs: []string{"10.0.0.1" + s + "/24"}, Wizard: true},
			{Name: "enp65s0f0", MAC: "b8:ce:f6:00:0" + s + ":10", Link: true, SpeedMbps: 25000},
			{Name: "enp65s0f1", MAC: "b8:ce:f6:00:0" + s + ":11", Link: true, SpeedMbps: 25000},
		},
		Disks: []wizard.Disk{
			{Model: "SAMSUNG MZ7LH240HAHQ", Serial: "S45RNA0M" + s + "00001", SizeBytes: 240057409536, Signature: "gpt", System: true},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00001", SizeBytes: 1920383410176},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00002", SizeBytes: 1920383410176},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00003", SizeBytes: 1920383410176},
			{Model: "SAMSUNG MZ7LH1T9HMLT", Serial: "S455NY0M" + s + "00004", SizeBytes: 1920383410176},
			{Model: "WDC WD40EFRX-68N32N0", Serial: "WD-WCC7K" + s + "HX4TZ", SizeBytes: 4000787030016, Signature: "xfs"},
		},
	}
}

// pairTestSite is a site.toml for the two test heads, without the key.
const pairTestSite = `# The pair for tandem pair's tests.
version = 1

[pair]
name = "nas"

[[node]]
name = "nas-a"
disks = ["serial:S455NY0M100001", "serial:S455NY0M100002", "serial:S455NY0M100003", "serial:S455NY0M100004"]
[node.management]
interface = "eno1"
address = "10.0.0.11/24"
gateway = "10.0.0.1"
[node.replication]
links = ["enp65s0f0", "b8:ce:f6:00:01:11"]
address = "192.168.255.1/24"

[[node]]
name = "nas-b"
disks = ["serial:S455NY0M200001", "serial:S455NY0M200002", "serial:S455NY0M200003", "serial:S455NY0M200004"]
[node.management]
interface = "eno1"
address = "10.0.0.12/24"
gateway = "10.0.0.1"
[node.replication]
links = ["enp65s0f0", "enp65s0f1"]
address = "192.168.255.2/24"

[storage.raid]
create_if_blank = true
[storage.filesystem]
mkfs_if_blank = true

[services.nfs]
enabled = true
[[services.nfs.export]]
path = "/srv/tandem/share"
clients = ["10.0.0.0/24"]
fsid = 1

[vip]
address = "10.0.0.10/24"

[witness]
address = "10.0.0.2:7791"
`

// pairTestHead is an unconfigured head's wizard on a loopback address.
type pairTestHead struct {
	w   *wizard.Wizard
	dir string

	mu    sync.Mutex
	codes []string // every code its console showed
	res   chan *wizard.Result
	logs  lockedBuffer // what the head logged
}

func startPairTestHead(t *testing.T, ip string, n int, image string, maxAttempts int) *pairTestHead {
	t.Helper()
	h := &pairTestHead{dir: t.TempDir(), res: make(chan *wizard.Result, 1)}
	w, err := wizard.New(wizard.Options{
		StateDir:     h.dir,
		Listen:       ip + ":0",
		ImageVersion: image,
		Inventory: func(context.Context) (wizard.Hardware, error) {
			return pairTestHardware(n), nil
		},
		Console: func(c wizard.Console) {
			h.mu.Lock()
			defer h.mu.Unlock()
			code := strings.ReplaceAll(c.Code, " ", "")
			if code != "" && (len(h.codes) == 0 || h.codes[len(h.codes)-1] != code) {
				h.codes = append(h.codes, code)
			}
		},
		Discovery: wizard.Discovery{Listen: "off"},
		Codes:     pairing.CodeOptions{MaxAttempts: maxAttempts},
		Log:       slog.New(slog.NewTextHandler(&h.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if res, err := w.Run(ctx); err == nil {
			h.res <- res
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-ran // Close after Run started: Run sets up what Close stops
		w.Close()
	})
	return h
}

// lockedBuffer is a log both heads' goroutines write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (h *pairTestHead) code() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.codes[len(h.codes)-1]
}

func (h *pairTestHead) codesShown() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.codes)
}

func (h *pairTestHead) fp() string { return wizard.FormatFingerprint(h.w.Identity().Fingerprint) }

// wrongCode is a valid code that is not the head's.
func wrongCode(code string) string {
	n, _ := strconv.Atoi(code)
	return fmt.Sprintf("%08d", (n+1)%100000000)
}

// unconfigured: nothing committed, nothing staged, and the head is free
// to pair again.
func (h *pairTestHead) unconfigured(t *testing.T, name string) {
	t.Helper()
	for _, f := range []string{wizard.SiteFile, wizard.SiteFile + ".staged"} {
		if _, err := os.Stat(filepath.Join(h.dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("head %s has %s: %v", name, f, err)
		}
	}
	if st := h.w.Console().State; st != "not configured" {
		t.Errorf("head %s is %q", name, st)
	}
}

// TestPair: tandem pair drives two in-process heads on loopback through
// the whole pairing, and each way it can go wrong says why and leaves
// both heads unconfigured, with nothing staged, and free to pair again.
func TestPair(t *testing.T) {
	lineOf := func(text, s string) int {
		i := strings.Index(text, s)
		if i < 0 {
			t.Fatalf("%q is not in the site config", s)
		}
		return strings.Count(text[:i], "\n") + 1
	}
	tests := []struct {
		name         string
		imageB       string
		maxA, maxB   int // attempts that burn a code; 0 = 5
		site         func(string) string
		opts         func(o *pairOptions, a, b *pairTestHead)
		want         string // in the error; "" = success
		wantOut      []string
		codesA       int // codes head A's console showed by the end; 0 = 1
		codesB       int
		destroyLine  string // success: a disk confirmed for overwriting
		thenSucceeds bool   // a run with the right settings pairs the same heads afterwards
	}{
		{name: "success",
			wantOut: []string{"site.toml: ok: pair nas, node nas-a on head A", "[1/5]", "signed in: head", "[2/5]", "paired with head",
				"head B disks: serial:S45RNA0M200001 240 GB system disk", "[4/5]", "node nas-b on head B: 4 data disks",
				"Stage the config on the other head   done", "Commit on this head                  done",
				"Pair nas is set up", "tandem witness-key -o witness.toml", "tandem witness --config witness.toml --init"}},
		{name: "a disk with data, confirmed",
			site: func(s string) string {
				return strings.Replace(s, "serial:S455NY0M200004", "serial:WD-WCC7K2HX4TZ", 1)
			},
			opts:        func(o *pairOptions, a, b *pairTestHead) { o.destroy = listFlag{"serial:WD-WCC7K2HX4TZ"} },
			wantOut:     []string{"node nas-b on head B: 4 data disks, overwriting the data on serial:WD-WCC7K2HX4TZ"},
			destroyLine: "# tandem-wizard: destroy data on node nas-b disk serial:WD-WCC7K2HX4TZ"},
		{name: "wrong head code",
			opts: func(o *pairOptions, a, b *pairTestHead) { o.code = wrongCode(a.code()) },
			want: "head A refused the setup code: wrong code; 4 more wrong codes burn it", thenSucceeds: true},
		{name: "wrong head code, the last one", maxA: 1,
			opts:   func(o *pairOptions, a, b *pairTestHead) { o.code = wrongCode(a.code()) },
			want:   "wrong code, and that burned it; its console shows a new one",
			codesA: 2, thenSucceeds: true},
		{name: "wrong peer code",
			opts:         func(o *pairOptions, a, b *pairTestHead) { o.peerCode = wrongCode(b.code()) },
			want:         "head B: The other head did not accept that code",
			thenSucceeds: true},
		{name: "head A's fingerprint mismatch: the code is not sent", maxA: 1,
			opts: func(o *pairOptions, a, b *pairTestHead) {
				o.fingerprint, o.code = b.fp(), wrongCode(a.code()) // sent, it would burn the code
			},
			want: "not the one --fingerprint gives", thenSucceeds: true},
		{name: "head B's fingerprint mismatch: its code is not sent", maxB: 1,
			opts: func(o *pairOptions, a, b *pairTestHead) {
				o.peerFingerprint, o.peerCode = a.fp(), wrongCode(b.code())
			},
			want: "not the one --peer-fingerprint gives. Compare with head B's console. Head B's setup code was not sent", thenSucceeds: true},
		{name: "head B's fingerprint given and right",
			opts:    func(o *pairOptions, a, b *pairTestHead) { o.peerFingerprint = strings.ToLower(b.fp()) },
			wantOut: []string{"Pair nas is set up"}},
		{name: "invalid site config: refused here, with its place", maxA: 1, maxB: 1,
			site: func(s string) string {
				return strings.Replace(s, `address = "10.0.0.10/24"`, `address = "10.9.0.10/24"`, 1)
			},
			opts: func(o *pairOptions, a, b *pairTestHead) {
				o.code, o.peerCode = wrongCode(a.code()), wrongCode(b.code())
			},
			want: "site.toml:" + strconv.Itoa(lineOf(pairTestSite, `address = "10.0.0.10/24"`)) + ":1: vip.address: "},
		{name: "the pair key in the site config: refused here",
			site: func(s string) string {
				return strings.Replace(s, `name = "nas"`, `name = "nas"`+"\nkey = \""+strings.Repeat("ab", 32)+`"`, 1)
			},
			want: "site.toml:" + strconv.Itoa(lineOf(pairTestSite, `name = "nas"`)+1) + ":1: pair.key: leave the pair key out"},
		{name: "invalid site config: a disk head B does not have, refused by head A with its place",
			site: func(s string) string {
				return strings.Replace(s, "serial:S455NY0M200004", "serial:S455NY0M299999", 1)
			},
			want:         "site.toml:" + strconv.Itoa(lineOf(pairTestSite, "serial:S455NY0M200004")) + ":" + strconv.Itoa(1+strings.Index(strings.Split(pairTestSite, "\n")[lineOf(pairTestSite, "serial:S455NY0M200004")-1], `"serial:S455NY0M200004"`)) + `: node[1].disks[3]: head B (`,
			wantOut:      []string{"gave up the pairing: both heads are unconfigured and free again"},
			codesB:       2, // B's code paired it, and was given up
			thenSucceeds: true},
		{name: "a disk with data, not confirmed",
			site: func(s string) string {
				return strings.Replace(s, "serial:S455NY0M200004", "serial:WD-WCC7K2HX4TZ", 1)
			},
			want:   "node[1].disks[3]: serial:WD-WCC7K2HX4TZ on head B (",
			codesB: 2},
		{name: "peer with another image version", imageB: "tandem 2026.06.0",
			want: "head B: The other head runs image tandem 2026.06.0; this head runs tandem 2026.05.1. Flash the same image onto both heads"},
		{name: "peer unreachable",
			opts: func(o *pairOptions, a, b *pairTestHead) { o.peer = "127.0.0.3:1" },
			want: "head A cannot reach head B: no Tandem head answers at 127.0.0.3:1"},
		{name: "no --fingerprint",
			opts: func(o *pairOptions, a, b *pairTestHead) { o.fingerprint = "" },
			want: "--fingerprint is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			imageB := tc.imageB
			if imageB == "" {
				imageB = pairTestImage
			}
			a := startPairTestHead(t, "127.0.0.2", 1, pairTestImage, tc.maxA)
			b := startPairTestHead(t, "127.0.0.3", 2, imageB, tc.maxB)
			text := pairTestSite
			if tc.site != nil {
				text = tc.site(text)
			}
			path := filepath.Join(t.TempDir(), "site.toml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			options := func() pairOptions {
				return pairOptions{head: a.w.Addr().String(), fingerprint: a.fp(), code: a.code(),
					peer: b.w.Addr().String(), peerCode: b.code(), site: path, timeout: time.Minute, poll: 20 * time.Millisecond}
			}
			o := options()
			if tc.opts != nil {
				tc.opts(&o, a, b)
			}
			var out bytes.Buffer
			err := pair(context.Background(), &out, o)
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("the output lacks %q:\n%s", w, out.String())
				}
			}
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v\nwant %q; output:\n%s", err, tc.want, out.String())
				}
				a.unconfigured(t, "A")
				b.unconfigured(t, "B")
				if n, want := a.codesShown(), max(tc.codesA, 1); n != want {
					t.Errorf("head A's console showed %d codes, want %d", n, want)
				}
				if n, want := b.codesShown(), max(tc.codesB, 1); n != want {
					t.Errorf("head B's console showed %d codes, want %d", n, want)
				}
				if !tc.thenSucceeds {
					return
				}
				if err := os.WriteFile(path, []byte(pairTestSite), 0o600); err != nil {
					t.Fatal(err)
				}
				out.Reset()
				o, text = options(), pairTestSite
				if err = pair(context.Background(), &out, o); err != nil {
					t.Fatalf("the run after: %v\n%s", err, out.String())
				}
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			pairedWith(t, a, b, text, tc.destroyLine)
		})
	}
}

// pairedWith checks both heads committed the same config: the
// operator's text with the pair key in and the wizard's lines after it,
// and Run returned it on both.
func pairedWith(t *testing.T, a, b *pairTestHead, text, destroyLine string) {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(a.dir, wizard.SiteFile))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := os.ReadFile(filepath.Join(b.dir, wizard.SiteFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, cb) {
		t.Fatalf("the heads committed different configs:\n%s\n---\n%s", ca, cb)
	}
	keyLine := regexp.MustCompile(`(?m)^key = "[0-9a-f]{64}"\n`)
	if n := len(keyLine.FindAll(ca, -1)); n != 1 {
		t.Fatalf("%d pair key lines in\n%s", n, ca)
	}
	if rest := keyLine.ReplaceAllString(string(ca), ""); !strings.HasPrefix(rest, text) {
		t.Errorf("the committed config is not the operator's text with the key in:\n%s", ca)
	}
	for _, l := range []string{
		"# tandem-wizard: head " + a.w.Identity().ID + " is node nas-a with certificate " + fmt.Sprintf("%x", a.w.Identity().Fingerprint),
		"# tandem-wizard: head " + b.w.Identity().ID + " is node nas-b with certificate " + fmt.Sprintf("%x", b.w.Identity().Fingerprint),
		destroyLine,
	} {
		if !strings.Contains(string(ca), l) {
			t.Errorf("the committed config lacks %q:\n%s", l, ca)
		}
	}
	for _, h := range []struct {
		head       *pairTestHead
		node, role string
	}{{a, "nas-a", "initiator"}, {b, "nas-b", "responder"}} {
		select {
		case res := <-h.head.res:
			if !bytes.Equal(res.Config, ca) || res.Node != h.node || res.Role != h.role {
				t.Errorf("Run on %s: node %s, role %s, same config %v", h.node, res.Node, res.Role, bytes.Equal(res.Config, ca))
			}
			if key, err := res.Site.PairKey(); err != nil || len(key) != 32 {
				t.Errorf("pair key on %s: %v", h.node, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Run did not return on %s", h.node)
		}
	}
}
