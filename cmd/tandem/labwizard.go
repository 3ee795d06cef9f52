package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/wizard"
)

// wizardPrinter shows, for tandem lab --unconfigured, each head's pairing
// wizard the way the host reaches it: a loopback forward to the wizard's
// address, the setup code and the certificate's fingerprint, printed
// again whenever the head's console shows a new block (a burnt or expired
// code).
type wizardPrinter struct {
	lab   *qemu.Lab
	out   io.Writer
	heads map[string]bool // VM name → a head (the full lab's client runs a wizard too)
	full  bool            // the client answers the wizard's discovery as well

	mu       sync.Mutex                // out, forwards, hinted
	forwards map[netip.AddrPort]string // wizard address → its loopback forward
	hinted   bool
}

// watch follows vm's console until ctx ends or QEMU exits (follow
// reports that; a powered-on VM gets a watch of its own).
func (p *wizardPrinter) watch(ctx context.Context, vm *qemu.VM) {
	var shown qemu.WizardBlock
	after := 0
	for {
		b, end, err := vm.Console.WaitWizardBlock(ctx, after)
		if err != nil {
			return
		}
		after = end
		if b == shown {
			continue
		}
		shown = b
		p.show(ctx, vm.Name, b)
	}
}

// show prints one block, with a forward to its URL.
func (p *wizardPrinter) show(ctx context.Context, name string, b qemu.WizardBlock) {
	local, ferr := p.forward(ctx, b)
	var checked error
	if ferr == nil && b.Code != "" {
		checked = checkWizardCert(ctx, local, b.Fingerprint, 30*time.Second)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	io.WriteString(p.out, formatWizard(name, b, local, ferr, checked, !p.hinted, p.full))
	p.hinted = p.hinted || b.Code != ""
}

// forward returns the loopback address that reaches b's wizard, made
// once per address.
func (p *wizardPrinter) forward(ctx context.Context, b qemu.WizardBlock) (string, error) {
	if b.URL == "" {
		return "", nil
	}
	ap, err := b.AddrPort()
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.forwards[ap]; ok {
		return a, nil
	}
	a, err := p.lab.Forward(ctx, ap)
	if err != nil {
		return "", err
	}
	if p.forwards == nil {
		p.forwards = map[netip.AddrPort]string{}
	}
	p.forwards[ap] = a
	return a, nil
}

// formatWizard renders a head's wizard block for the lab's output. local
// is the loopback forward (ferr why there is none); checked is what the
// lab saw through it; hint adds how to pair, once.
func formatWizard(name string, b qemu.WizardBlock, local string, ferr, checked error, hint, full bool) string {
	var w strings.Builder
	open := "https://" + local + "/   (forwarded to " + b.URL + " on the management segment)"
	if ferr != nil {
		open = "no loopback forward to " + b.URL + ": " + ferr.Error()
	}
	if b.Code == "" {
		fmt.Fprintf(&w, "%s: this head is %s", name, b.State)
		if b.URL != "" {
			fmt.Fprintf(&w, "; wizard: %s", open)
		}
		w.WriteString("\n")
		return w.String()
	}
	const in = "          "
	fmt.Fprintf(&w, "%s: pairing wizard (this head is %s)\n", name, b.State)
	fmt.Fprintf(&w, "%sopen     %s\n", in, open)
	fmt.Fprintf(&w, "%scode     %s   (valid until %s on the head's clock, UTC)\n", in, b.Code, b.Until)
	fmt.Fprintf(&w, "%scert     SHA-256 %s\n", in, b.Fingerprint)
	switch {
	case ferr != nil:
	case checked == nil:
		fmt.Fprintf(&w, "%s         (the lab saw this certificate through the forward)\n", in)
	default:
		fmt.Fprintf(&w, "%s         (not checked through the forward: %v)\n", in, checked)
	}
	fmt.Fprintf(&w, "%scompare  before you type the code, the browser's certificate viewer must show this SHA-256 fingerprint (Chromium: Not secure > Certificate details; Firefox: Advanced > View Certificate)\n", in)
	if hint {
		w.WriteString("pairing: sign in to one head's wizard with its code; it lists the other head (pick it by the fingerprint printed here) and asks for that head's code. Walk-through: docs/pairing.md\n")
		if full {
			w.WriteString("         the client boots the same image unconfigured: the wizard lists it too, do not pick it\n")
		}
	}
	return w.String()
}

// checkWizardCert dials the wizard at addr until it answers (it may be
// starting) and compares its certificate with the console's fingerprint.
func checkWizardCert(ctx context.Context, addr, want string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	// The operator's check, not trust: any certificate is read, then
	// compared.
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			cert := c.(*tls.Conn).ConnectionState().PeerCertificates[0]
			c.Close()
			sum := sha256.Sum256(cert.Raw)
			if got := wizard.FormatFingerprint(sum[:]); got != want {
				return fmt.Errorf("WARNING: %s shows certificate %s, not the console's", addr, got)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", addr, err)
		case <-time.After(time.Second):
		}
	}
}
