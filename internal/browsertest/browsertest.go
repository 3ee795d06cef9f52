// Package browsertest drives Debian's headless chromium from Go tests
// (chromedp): the wizard's page tests and the lab's end-to-end pairing.
// It never lets chromedp look for, or fetch, another browser.
package browsertest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is Debian's chromium (scripts/setup installs it).
const ChromiumPath = "/usr/bin/chromium"

// SPKIHash is what chromium's ignore-certificate-errors-spki-list takes:
// base64 of the SHA-256 of the certificate's public key info.
func SPKIHash(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(h[:])
}

// New starts headless chromium with a user data directory of its own,
// trusting exactly the certificates whose SPKIHash is given (what an
// operator does by comparing the fingerprint and accepting it). The
// browser lives until the test ends or timeout.
func New(t testing.TB, timeout time.Duration, spki ...string) context.Context {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		t.Fatalf("chromium is missing (%v): scripts/setup installs Debian's chromium", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(spki, ",")),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelT()
		cancelC()
		cancelA()
	})
	return ctx
}

// Screenshots keeps a test's pages: in TANDEM_SCREENSHOTS if set (kept),
// else in a temporary directory kept only when the test fails.
type Screenshots struct {
	t    testing.TB
	Dir  string
	keep bool
	n    int
}

// NewScreenshots makes the directory; the test's end keeps or removes it.
func NewScreenshots(t testing.TB) *Screenshots {
	s := &Screenshots{t: t}
	if d := os.Getenv("TANDEM_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		s.Dir, s.keep = d, true
	} else {
		d, err := os.MkdirTemp("", "tandem-screenshots-")
		if err != nil {
			t.Fatal(err)
		}
		s.Dir = d
	}
	t.Cleanup(func() {
		switch {
		case t.Failed() || s.keep:
			t.Logf("screenshots of every page: %s", s.Dir)
		default:
			os.RemoveAll(s.Dir)
		}
	})
	return s
}

// Take saves the whole page as NN-name.png.
func (s *Screenshots) Take(ctx context.Context, name string) {
	s.t.Helper()
	s.n++
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(s.Dir, fmt.Sprintf("%02d-%s.png", s.n, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		s.t.Error(err)
	}
}

// Page wraps a browser tab with the steps a test takes, each failing
// the test with a screenshot when it goes wrong.
type Page struct {
	T     testing.TB
	Ctx   context.Context
	Shots *Screenshots
}

func (p Page) fail(format string, a ...any) {
	p.T.Helper()
	p.Shots.Take(p.Ctx, "failed")
	p.T.Fatalf(format, a...)
}

// Do runs actions that do not load a page.
func (p Page) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.T.Helper()
	if err := chromedp.Do(p.Ctx, actions...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

// Submit runs actions that load a page and waits for it.
func (p Page) Submit(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.T.Helper()
	if _, err := chromedp.RunResponse(p.Ctx, actions...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

// Text is the text of the element sel selects.
func (p Page) Text(sel string) string {
	p.T.Helper()
	s, err := chromedp.Run(p.Ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.fail("text of %s: %v", sel, err)
	}
	return s
}

// Body is the page's whole text.
func (p Page) Body() string {
	s, _ := chromedp.Run(p.Ctx, chromedp.Evaluate[string]("document.body.textContent"))
	return s
}

// Expect fails unless the page's text contains want.
func (p Page) Expect(when, want string) {
	p.T.Helper()
	if b := p.Body(); !strings.Contains(b, want) {
		p.fail("%s: the page does not say %q:\n%s", when, want, b)
	}
}
