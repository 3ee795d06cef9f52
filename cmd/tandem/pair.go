package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"tandem.dev/tandem/pairing"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/wizard"
)

// tandem pair does from a terminal what the first-boot wizard does in a
// browser (docs/pairing.md): it drives head A's wizard through its JSON
// API, as the operator's browser drives its pages, and head A pairs with
// head B by B's setup code. Same protocol, same checks: the pair key is
// made on the heads and never reaches this machine.

// Environment variables for the codes, so that they need not be on a
// command line other users of the host can read.
const (
	envCode     = "TANDEM_PAIR_CODE"
	envPeerCode = "TANDEM_PAIR_PEER_CODE"
)

type pairOptions struct {
	head, fingerprint, code         string
	peer, peerFingerprint, peerCode string
	site                            string
	destroy                         listFlag
	timeout                         time.Duration
	poll                            time.Duration
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func runPair(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pair", flag.ContinueOnError)
	var o pairOptions
	fs.StringVar(&o.head, "head", "", "head A: the address (IP[:port], port 443 by default) of the head whose wizard this command drives")
	fs.StringVar(&o.fingerprint, "fingerprint", "", "head A's certificate fingerprint (SHA-256), as its console shows it; required: nothing is sent to a head that shows another")
	fs.StringVar(&o.code, "code", "", "head A's setup code, as its console shows it (default $"+envCode+")")
	fs.StringVar(&o.peer, "peer", "", "head B: the other head's address (IP[:port])")
	fs.StringVar(&o.peerFingerprint, "peer-fingerprint", "", "head B's certificate fingerprint; head A refuses another before it sends anything (optional: the pairing binds both certificates anyway)")
	fs.StringVar(&o.peerCode, "peer-code", "", "head B's setup code (default $"+envPeerCode+")")
	fs.StringVar(&o.site, "site", "", "the site config, without pair.key: [[node]] 1 runs on head A, [[node]] 2 on head B")
	fs.Var(&o.destroy, "destroy-data", "serial:SERIAL of a disk that holds data and may be overwritten (repeat for each such disk)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: tandem pair --head IP[:PORT] --fingerprint SHA256 --code CODE --peer IP[:PORT] [--peer-fingerprint SHA256] --peer-code CODE --site site.toml [--destroy-data serial:SERIAL]...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Errorf("unexpected arguments %q (the site config goes in --site)", fs.Args())}
	}
	if o.code == "" {
		o.code = os.Getenv(envCode)
	}
	if o.peerCode == "" {
		o.peerCode = os.Getenv(envPeerCode)
	}
	o.poll = 500 * time.Millisecond
	return pair(ctx, os.Stdout, o)
}

// pairStep prints a step header.
func pairStep(out io.Writer, n int, format string, args ...any) {
	fmt.Fprintf(out, "[%d/5] %s\n", n, fmt.Sprintf(format, args...))
}

func pairNote(out io.Writer, format string, args ...any) {
	fmt.Fprintf(out, "      %s\n", fmt.Sprintf(format, args...))
}

// pair runs the steps. Nothing reaches a head before the command line
// and the site config check out here.
func pair(ctx context.Context, out io.Writer, o pairOptions) (err error) {
	// The command line, then the site config: mistakes found here touch
	// no head.
	for _, f := range []struct{ name, v string }{{"--head", o.head}, {"--fingerprint", o.fingerprint}, {"--code", o.code},
		{"--peer", o.peer}, {"--peer-code", o.peerCode}, {"--site", o.site}} {
		if f.v == "" {
			if f.name == "--fingerprint" {
				return usageError{errors.New("--fingerprint is required: the SHA-256 fingerprint head A's console shows. Without it, whoever answers at the address would get the setup code")}
			}
			return usageError{fmt.Errorf("%s is required", f.name)}
		}
	}
	pin, err := wizard.ParseFingerprint(o.fingerprint)
	if err != nil {
		return usageError{fmt.Errorf("--fingerprint: %w", err)}
	}
	var peerPin []byte
	if o.peerFingerprint != "" {
		if peerPin, err = wizard.ParseFingerprint(o.peerFingerprint); err != nil {
			return usageError{fmt.Errorf("--peer-fingerprint: %w", err)}
		}
	}
	headAddr, err := wizard.NormalizeAddr(o.head)
	if err != nil {
		return usageError{fmt.Errorf("--head: %w", err)}
	}
	peerAddr, err := wizard.NormalizeAddr(o.peer)
	if err != nil {
		return usageError{fmt.Errorf("--peer: %w", err)}
	}
	if headAddr == peerAddr {
		return usageError{errors.New("--head and --peer are the same address")}
	}
	code, err := pairing.NormalizeCode(o.code)
	if err != nil {
		return usageError{fmt.Errorf("--code: %w", err)}
	}
	peerCode, err := pairing.NormalizeCode(o.peerCode)
	if err != nil {
		return usageError{fmt.Errorf("--peer-code: %w", err)}
	}
	for _, d := range o.destroy {
		if sn, ok := strings.CutPrefix(d, "serial:"); !ok || strings.TrimSpace(sn) == "" {
			return usageError{fmt.Errorf("--destroy-data %q: name the disk as serial:SERIAL", d)}
		}
	}
	data, err := os.ReadFile(o.site)
	if err != nil {
		return fmt.Errorf("site config: %w", err)
	}
	if len(data) > site.MaxSize {
		return fmt.Errorf("site config %s: larger than %d bytes", o.site, site.MaxSize)
	}
	sc, err := wizard.CheckTemplate(o.site, data)
	if err != nil {
		return err // file:line:col: key: message, as tandem validate says it
	}
	fmt.Fprintf(out, "%s: ok: pair %s, node %s on head A (%s), node %s on head B (%s)\n",
		o.site, sc.Pair.Name, sc.Nodes[0].Name, headAddr, sc.Nodes[1].Name, peerAddr)

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err := wizard.NewClient(headAddr, pin)
	if err != nil {
		return err
	}
	defer c.Close()

	// 1. Sign in to head A, its certificate pinned.
	pairStep(out, 1, "head A %s: checking its certificate and signing in with its setup code", headAddr)
	si, err := c.SignIn(ctx, code)
	if err != nil {
		return explainPair(err, "head A", o.timeout)
	}
	paired, created := false, false
	defer func() {
		// Leave both heads as free as they were: give up a pairing that
		// did not create the pair, and sign out for the next operator.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer ccancel()
		if paired && !created {
			if serr := c.StartOver(cctx); serr != nil {
				pairNote(out, "could not give up the pairing: %v", serr)
			} else {
				pairNote(out, "gave up the pairing: both heads are unconfigured and free again; head B's console shows a new setup code (head A's stays valid until it expires)")
			}
		}
		c.SignOut(cctx)
	}()
	pairNote(out, "signed in: head %s, image %s, certificate SHA-256 %s as given", short(si.Head.ID), si.Head.Image, wizard.FormatFingerprint(pin))
	switch si.Setup {
	case "free":
	case "paired", "failed":
		// An earlier session paired the head and left; its peer code
		// is spent. This run pairs anew with the code it was given.
		pairNote(out, "head A was paired with %s by an earlier session that did not create the pair: giving that up", peerName(si.Peer))
		if err := c.StartOver(ctx); err != nil {
			return explainPair(err, "head A", o.timeout)
		}
	default:
		return fmt.Errorf("head A is creating a pair from an earlier session already (%s): follow it in its wizard, https://%s/", si.Setup, headAddr)
	}

	// 2. Head A pairs with head B, by B's code, between the two heads.
	pairStep(out, 2, "pairing head A with head B %s by head B's setup code", peerAddr)
	hw, err := c.Pair(ctx, peerAddr, peerPin, peerCode)
	var ae *wizard.APIError
	if err != nil && peerPin == nil && errors.As(err, &ae) && ae.Code == "peer-wrong-code" {
		// The code, or a relay in head B's place: the fingerprint tells.
		return fmt.Errorf("%w\nWith --peer-fingerprint (the SHA-256 head B's console shows), head A refuses anything else at %s before it sends anything", explainPair(err, "head B", o.timeout), peerAddr)
	}
	if err != nil {
		return explainPair(err, "head B", o.timeout)
	}
	paired = true
	b := hw.Heads[1]
	bfp, _ := wizard.ParseFingerprint(b.Fingerprint)
	pairNote(out, "paired with head %s, image %s, certificate SHA-256 %s", short(b.ID), b.Image, wizard.FormatFingerprint(bfp))
	if peerPin == nil {
		pairNote(out, "(compare that fingerprint with head B's console; --peer-fingerprint makes head A check it)")
	}

	// 3. Both heads' hardware, as the wizard's hardware page shows it.
	pairStep(out, 3, "hardware")
	for h, name := range []string{"head A", "head B"} {
		printHardware(out, name, hw.Hardware[h])
	}

	// 4. The site config, checked on head A against both heads' hardware.
	pairStep(out, 4, "site config %s: checking it on head A against both heads' hardware", o.site)
	st, err := c.Site(ctx, o.site, data, o.destroy)
	if err != nil {
		return explainPair(err, "head A", o.timeout)
	}
	for h, n := range st.Nodes {
		line := fmt.Sprintf("node %s on head %s: %d data disks", n.Name, "AB"[h:h+1], len(n.Disks))
		if len(n.Destroy) > 0 {
			line += ", overwriting the data on serial:" + strings.Join(n.Destroy, ", serial:")
		}
		pairNote(out, "%s", line)
	}

	// 5. Create: staged on both heads, then committed on both.
	pairStep(out, 5, "creating the pair: the site config is staged on both heads, then committed on both")
	prog, err := c.Create(ctx)
	if err != nil {
		return explainPair(err, "head A", o.timeout)
	}
	shown := map[string]string{}
	for {
		for _, s := range prog.Steps {
			if s.State != "pending" && s.State != shown[s.Name] {
				if !(s.State == "running" && prog.State != "running") {
					pairNote(out, "%-36s %s", s.Name, s.State)
				}
				shown[s.Name] = s.State
			}
		}
		if prog.State != "running" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after --timeout %s while the pair was being created; head A's wizard (https://%s/) shows how it ends", o.timeout, headAddr)
		case <-time.After(o.poll):
		}
		if prog, err = c.Progress(ctx); err != nil {
			return explainPair(err, "head A", o.timeout)
		}
	}
	switch prog.State {
	case "done":
		created = true
	case "unconfirmed":
		// Neither committed for sure: the operator asks again in the
		// wizard, which keeps the pairing for that.
		created = true
		return fmt.Errorf("creating the pair: %s Ask again in head A's wizard, https://%s/ (sign in with its setup code)", prog.Error, headAddr)
	default:
		return fmt.Errorf("creating the pair failed: %s", prog.Error)
	}

	sum, err := c.Summary(ctx)
	if err != nil {
		return explainPair(err, "head A", o.timeout)
	}
	fmt.Fprintf(out, "\nPair %s is set up: both heads committed the same site config.\n", sum.Pair)
	for h, n := range sum.Nodes {
		fmt.Fprintf(out, "  %-12s head %s, %s (%s)\n", n.Name, "AB"[h:h+1], []string{headAddr, peerAddr}[h], short(n.Head.ID))
	}
	fmt.Fprintf(out, "The site config is on both heads' state partitions, with the pair key, which never left them;\n%s is your copy without it. The setup codes no longer work.\n", o.site)
	if sum.WitnessCommand != "" {
		fmt.Fprintf(out, "Witness %s: on either head run\n  tandem witness-key -o witness.toml\ncopy witness.toml (the witness's own key, never the pair key) to the witness host and run there, once:\n  %s\n", sum.Witness, sum.WitnessCommand)
	} else {
		fmt.Fprintf(out, "No witness: the pair breaks ties with the ping target %s.\n", sum.PingTarget)
	}
	return nil
}

func short(id string) string { return id[:min(8, len(id))] }

func peerName(h *wizard.APIHead) string {
	if h == nil {
		return "another head"
	}
	return fmt.Sprintf("head %s (%s)", short(h.ID), h.Addr)
}

func printHardware(out io.Writer, name string, hw wizard.Hardware) {
	var nics, disks []string
	for _, n := range hw.NICs {
		link := "no link"
		if n.Link {
			link = "link"
			if n.SpeedMbps > 0 {
				link = fmt.Sprintf("%d Mb/s", n.SpeedMbps)
			}
		}
		nics = append(nics, fmt.Sprintf("%s %s (%s)", n.Name, n.MAC, link))
	}
	for _, d := range hw.Disks {
		disks = append(disks, fmt.Sprintf("serial:%s %s %s", d.Serial, wizard.HumanSize(d.SizeBytes), d.Contents()))
	}
	pairNote(out, "%s NICs:  %s", name, strings.Join(nics, ", "))
	pairNote(out, "%s disks: %s", name, strings.Join(disks, ", "))
}

// explainPair words what went wrong for the terminal.
func explainPair(err error, who string, timeout time.Duration) error {
	var cm *wizard.CertMismatchError
	var ae *wizard.APIError
	switch {
	case errors.As(err, &cm):
		return fmt.Errorf("%s at %s shows the TLS certificate\n  SHA-256 %s\nnot the one --fingerprint gives\n  SHA-256 %s\nCompare with the head's console: if it shows the first, pass that; if not, something between here and the head answers in its place. The setup code was not sent",
			who, cm.Addr, wizard.FormatFingerprint(cm.Seen), wizard.FormatFingerprint(cm.Want))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("gave up after --timeout %s: %w", timeout, err)
	case !errors.As(err, &ae):
		return err
	}
	switch ae.Code {
	case "wrong-code":
		return fmt.Errorf("head A refused the setup code: wrong code; %d more wrong codes burn it (its console then shows a new one)", ae.AttemptsLeft)
	case "code-burned":
		return errors.New("head A refused the setup code: wrong code, and that burned it; its console shows a new one")
	case "peer-fingerprint":
		return fmt.Errorf("head B shows the TLS certificate\n  SHA-256 %s\nnot the one --peer-fingerprint gives. Compare with head B's console. Head B's setup code was not sent", wizard.FormatFingerprint(ae.Fingerprint))
	case "peer-unreachable":
		return fmt.Errorf("head A cannot reach head B: %s", ae.Msg)
	}
	return fmt.Errorf("%s: %s", who, ae.Msg)
}
