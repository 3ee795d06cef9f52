package qemu

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// WizardBlock is the block an unconfigured head prints on its console
// (wizard.Console.Lines, behind PID 1's "tandem: " prefix):
//
//	tandem: Tandem: this head is not configured
//	tandem:   setup wizard:  https://10.0.0.100/
//	tandem:   setup code:    5144 0256   (valid until 23:36)
//	tandem:   certificate:   SHA-256 60AA F090 17B2 DE86 3441 A683 B44A 7CB8
//	tandem:                          D798 3613 2683 9F96 1EF2 21B6 C8F6 6BA4
type WizardBlock struct {
	State       string // "not configured", "being paired", "configured"
	URL         string // "" when the block has none
	Code        string // "5144 0256"; "" once the head is being paired
	Until       string // the code's expiry on the head's clock, "23:36"
	Fingerprint string // "60AA F090 ... 6BA4", as wizard.FormatFingerprint
}

// fingerprintGroups is a SHA-256 fingerprint's number of 4-digit groups.
const fingerprintGroups = 16

// Complete says whether the whole block has been printed: the
// certificate's two lines come last.
func (b WizardBlock) Complete() bool {
	return len(strings.Fields(b.Fingerprint)) == fingerprintGroups
}

// AddrPort is the wizard's address from its URL (port 443 unless the URL
// names one).
func (b WizardBlock) AddrPort() (netip.AddrPort, error) {
	u, err := url.Parse(b.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return netip.AddrPort{}, fmt.Errorf("qemu: wizard URL %q is not an https URL", b.URL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("qemu: wizard URL %q: %w", b.URL, err)
	}
	return ap, nil
}

var (
	wizStateRe = regexp.MustCompile(`Tandem: this head is (.+?)\s*$`)
	wizURLRe   = regexp.MustCompile(`^\s+setup wizard:\s+(\S+)\s*$`)
	wizCodeRe  = regexp.MustCompile(`^\s+setup code:\s+(\d{4} \d{4})(?:\s+\(valid until ([0-9:]+)\))?\s*$`)
	wizCertRe  = regexp.MustCompile(`^\s+certificate:\s+SHA-256 ((?:[0-9A-F]{4} ?)+)\s*$`)
	wizMoreRe  = regexp.MustCompile(`^\s+((?:[0-9A-F]{4} ?)+)\s*$`)
)

// ParseWizardConsole reads every wizard block in a console's text, in
// order, the last one possibly incomplete (see Complete). Lines of other
// writers (the kernel, slog) between a block's lines are skipped. ends[i]
// is the offset just past block i's last line.
func ParseWizardConsole(text string) (blocks []WizardBlock, ends []int) {
	cur := -1
	// halfFP: the certificate line came, its second half may follow.
	halfFP := false
	off := 0
	for off < len(text) {
		nl := strings.IndexByte(text[off:], '\n')
		end := len(text)
		if nl >= 0 {
			end = off + nl + 1
		}
		line := strings.TrimRight(text[off:end], "\r\n")
		off = end
		if m := wizStateRe.FindStringSubmatch(line); m != nil {
			blocks = append(blocks, WizardBlock{State: m[1]})
			ends = append(ends, end)
			cur, halfFP = len(blocks)-1, false
			continue
		}
		if cur < 0 {
			continue
		}
		// The block's other lines carry PID 1's prefix, or none on a
		// console that prints them bare.
		body, ok := strings.CutPrefix(line, "tandem:")
		if !ok {
			body = line
		}
		b := &blocks[cur]
		switch m := []string(nil); {
		case b.URL == "" && matchInto(wizURLRe, body, &m):
			b.URL = m[1]
		case b.Code == "" && matchInto(wizCodeRe, body, &m):
			b.Code, b.Until = m[1], m[2]
		case b.Fingerprint == "" && matchInto(wizCertRe, body, &m):
			b.Fingerprint = strings.Join(strings.Fields(m[1]), " ")
			halfFP = !b.Complete()
		case halfFP && matchInto(wizMoreRe, body, &m):
			b.Fingerprint += " " + strings.Join(strings.Fields(m[1]), " ")
			halfFP = false
		default:
			continue
		}
		ends[cur] = end
	}
	return blocks, ends
}

func matchInto(re *regexp.Regexp, s string, m *[]string) bool {
	*m = re.FindStringSubmatch(s)
	return *m != nil
}

// WaitWizardBlock waits until the console shows a complete wizard block
// that ends after the first after bytes (0, or the end WaitWizardBlock
// returned before) and returns the last such block and its end. It
// fails when ctx ends or QEMU exits first.
func (c *Console) WaitWizardBlock(ctx context.Context, after int) (WizardBlock, int, error) {
	for {
		c.mu.Lock()
		text, ch, cerr := c.buf.String(), c.notify, c.err
		c.mu.Unlock()
		blocks, ends := ParseWizardConsole(text)
		for i := len(blocks) - 1; i >= 0 && ends[i] > after; i-- {
			if blocks[i].Complete() {
				return blocks[i], ends[i], nil
			}
		}
		if cerr != nil {
			return WizardBlock{}, 0, fmt.Errorf("waiting for the pairing wizard's block: %w", cerr)
		}
		select {
		case <-ctx.Done():
			return WizardBlock{}, 0, fmt.Errorf("waiting for the pairing wizard's block: %w", ctx.Err())
		case <-ch:
		}
	}
}

// WizardDHCP is the hub's DHCP server for a lab of unconfigured heads:
// the default segment, a pool clear of the client's address (10.0.0.2),
// the server's (10.0.0.1), the host port's (10.0.0.253) and the lab site
// config's heads and VIP (10.0.0.11-12, .10), and a lease longer than a
// setup code lives.
func WizardDHCP() DHCPConfig {
	return DHCPConfig{
		Subnet:    defaultSegment,
		Lease:     10 * time.Minute,
		PoolFirst: netip.MustParseAddr("10.0.0.100"),
		PoolLast:  netip.MustParseAddr("10.0.0.149"),
	}
}
