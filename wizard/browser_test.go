package wizard

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"tandem.dev/tandem/internal/browsertest"
	"tandem.dev/tandem/site"
)

func spkiHash(id *Identity) string { return browsertest.SPKIHash(id.Cert.Leaf) }

// TestBrowserWalkthrough drives Debian's headless chromium through the
// whole wizard on head A, with B found by discovery: the certificate
// check, A's code, the peer list, B's code, the hardware page (a disk
// with data chosen, refused until its destruction is confirmed), the
// site form (a VIP outside the subnet, refused in tandem validate's
// words next to the field, then corrected), create, progress and the
// summary. It screenshots every page.
func TestBrowserWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser")
	}
	p := newPair(t, nil, nil)
	ctx := browsertest.New(t, 3*time.Minute, spkiHash(p.a.w.id))
	pg := browsertest.Page{T: t, Ctx: ctx, Shots: browsertest.NewScreenshots(t)}
	shots, do, submit, text, body := pg.Shots, pg.Do, pg.Submit, pg.Text, pg.Body
	base := p.a.url()

	// The certificate the browser sees is the one the console shows.
	do("open A's wizard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#code")))
	cert, err := chromedp.Call(ctx, network.GetCertificate, network.GetCertificateParams{Origin: base})
	if err != nil || len(cert.TableNames) == 0 {
		t.Fatalf("the page's certificate: %v", err)
	}
	der, _ := base64.StdEncoding.DecodeString(cert.TableNames[0])
	if got, want := FormatFingerprint(certFingerprint(der)), p.a.w.Console().Fingerprint; got != want {
		t.Fatalf("the browser sees certificate %s, the console shows %s", got, want)
	}
	shots.Take(ctx, "sign-in")

	submit("sign in", chromedp.SetValue(chromedp.CSS("#code"), p.a.code()), chromedp.Submit(chromedp.CSS("#code")))
	if !strings.Contains(body(), "Find the other head") {
		t.Fatalf("after the code:\n%s", body())
	}
	peerBtn := chromedp.CSS(`input[name=peer][value="` + p.b.w.id.ID + `"]`)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(body(), short(p.b.w.id.ID)) {
		if time.Now().After(deadline) {
			shots.Take(ctx, "failed")
			t.Fatal("B never showed up in A's peer list")
		}
		time.Sleep(300 * time.Millisecond)
		do("refresh the peer list", chromedp.Reload())
	}
	shots.Take(ctx, "peers")
	submit("choose B", chromedp.Submit(peerBtn))
	if !strings.Contains(body(), FormatFingerprint(p.b.w.id.Fingerprint)) {
		t.Errorf("the peer code page does not show B's fingerprint:\n%s", body())
	}
	do("type B's code", chromedp.SetValue(chromedp.CSS("#code"), p.b.code()[:4]+" "+p.b.code()[4:]))
	shots.Take(ctx, "peer-code")
	submit("pair", chromedp.Submit(chromedp.CSS("#code")))
	if !strings.Contains(body(), "Network interfaces") {
		t.Fatalf("after B's code:\n%s", body())
	}
	// Never pre-selected: B's disk that holds data.
	dataDisk := "WD-WCC7K2HX4TZ"
	checked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('input[name=disk1][value="`+dataDisk+`"]').checked`))
	if err != nil || checked {
		t.Fatalf("B's disk with data is pre-selected (%v, %v)", checked, err)
	}
	shots.Take(ctx, "hardware")

	// Use it instead of a blank one, without confirming: refused.
	do("choose the disk with data", chromedp.Click(chromedp.CSS(`input[name=disk1][value="S455NY0M200004"]`)), chromedp.Click(chromedp.CSS(`input[name=disk1][value="`+dataDisk+`"]`)))
	submit("hardware", chromedp.Submit(chromedp.CSS(`input[name=mgmt0]`)))
	if got := body(); !strings.Contains(got, `holds data (xfs): tick "Destroy the data on `+dataDisk+`" to use it`) {
		t.Fatalf("a disk with data was accepted without the confirmation:\n%s", got)
	}
	shots.Take(ctx, "hardware-confirm")
	do("confirm", chromedp.Click(chromedp.CSS(`input[name=destroy1][value="`+dataDisk+`"]`)))
	submit("hardware", chromedp.Submit(chromedp.CSS(`input[name=mgmt0]`)))
	if !strings.Contains(body(), "Site settings") {
		t.Fatalf("after the hardware:\n%s", body())
	}

	// A VIP outside the management subnet: refused next to the field,
	// in the site package's words.
	badVIP := "10.9.0.10/24"
	do("fill the site form",
		chromedp.SetValue(chromedp.CSS("#vip"), badVIP),
		chromedp.SetValue(chromedp.CSS("#witness_addr"), "10.0.0.2:7791"))
	submit("site", chromedp.Submit(chromedp.CSS("#vip")))
	got := strings.TrimPrefix(text("#vip-err"), "⚠ ")
	want := vipError(t, p, badVIP)
	if got != want {
		t.Fatalf("the VIP's error: %q, tandem validate says %q", got, want)
	}
	do("scroll to the error", chromedp.ScrollIntoView(chromedp.CSS("#vip")))
	shots.Take(ctx, "site-error")
	do("correct the VIP", chromedp.SetValue(chromedp.CSS("#vip"), "10.0.0.10/24"))
	submit("site", chromedp.Submit(chromedp.CSS("#vip")))
	if !strings.Contains(body(), "Review and create the pair") {
		t.Fatalf("after the correction:\n%s", body())
	}
	shots.Take(ctx, "review")

	submit("create", chromedp.Submit(chromedp.CSS(`form[action="/create"] button`)))
	do("wait for the pair", chromedp.WaitVisible(chromedp.CSS(`#done a`)))
	shots.Take(ctx, "progress")
	submit("summary", chromedp.Click(chromedp.CSS(`#done a`)))
	if !strings.Contains(body(), "is set up") {
		t.Fatalf("summary:\n%s", body())
	}
	shots.Take(ctx, "summary")

	ra, rb := p.a.result(5*time.Second), p.b.result(5*time.Second)
	if ra == nil || rb == nil || !bytes.Equal(ra.Config, rb.Config) {
		t.Fatal("the heads did not commit the same config")
	}
	if len(rb.Destroy) != 1 || rb.Destroy[0] != "serial:"+dataDisk || len(ra.Destroy) != 0 {
		t.Errorf("disks to overwrite: A %v, B %v", ra.Destroy, rb.Destroy)
	}
	if n := rb.Site.Node(rb.Node); n == nil || !contains(n.Disks, "serial:"+dataDisk) || contains(n.Disks, "serial:S455NY0M200004") {
		t.Errorf("B's disks: %+v", n)
	}
	// After the setup the code form is gone.
	do("open the wizard again", chromedp.Navigate(base+"/login"))
	if b := body(); !strings.Contains(b, "This head is configured") && !strings.Contains(b, "is set up") {
		t.Errorf("after the setup:\n%s", b)
	}
}

// vipError is what the site package says about the VIP in the config
// the wizard built with it: the words `tandem validate` prints.
func vipError(t *testing.T, p *pair, vip string) string {
	t.Helper()
	p.a.w.mu.Lock()
	in := p.a.w.ini.in
	key := p.a.w.ini.pairKey
	p.a.w.mu.Unlock()
	in.VIP = vip
	cfg, err := in.build(key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = site.Parse(configName, cfg)
	var verrs site.ValidationErrors
	if !errors.As(err, &verrs) {
		t.Fatalf("the config with VIP %s validates: %v", vip, err)
	}
	var msgs []string
	for _, e := range verrs {
		if e.Path == "vip.address" {
			msgs = append(msgs, e.Msg)
		}
	}
	if msgs == nil {
		t.Fatalf("no error for vip.address in %v", err)
	}
	return strings.Join(msgs, "\n")
}
