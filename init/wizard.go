package pid1

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"tandem.dev/tandem/inventory"
	"tandem.dev/tandem/services/disks"
	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/status"
	"tandem.dev/tandem/wizard"
)

const (
	// wizardDHCPWait bounds the wait for a DHCP lease before an
	// unconfigured head falls back to its link-local address.
	wizardDHCPWait = 20 * time.Second
	// wizardLinger keeps the wizard answering after the commit: the
	// browser's progress and summary pages, and the initiator's status
	// query, until the pair serves or this long.
	wizardLinger = 30 * time.Minute
)

// awaitPairing is the unconfigured head's boot: it takes a management
// address (DHCP, else link-local), serves the pairing wizard there until
// the operator's pairing commits a site config on this head, then runs
// the steps from "site config" on, as a head with that config on its
// state partition does at every later boot.
func (b *Boot) awaitPairing(rest []Step) error {
	ctx := context.Background()
	links, err := network.PhysicalLinks("")
	if err != nil {
		return fmt.Errorf("pairing wizard: %w", err)
	}
	mgmt, err := network.Unconfigured(ctx, links, wizardDHCPWait, network.Options{Log: b.Log})
	if err != nil {
		return fmt.Errorf("pairing wizard: the management network: %w", err)
	}
	addr := mgmt.Prefix()
	w, err := wizard.New(wizard.Options{
		StateDir:     StateDir,
		Host:         addr.Addr().String(),
		ImageVersion: b.Manifest.Version,
		Inventory:    b.inventory(mgmt.Link),
		Discovery:    wizard.Discovery{AnnounceTo: []string{net.JoinHostPort(broadcast(addr).String(), "7793")}},
		Console:      b.showWizard,
		Serving:      b.serving,
		Log:          b.Log,
	})
	if err != nil {
		_ = mgmt.Stop(ctx)
		return fmt.Errorf("pairing wizard: %w", err)
	}
	b.wizardRan = true
	b.setState(status.Unconfigured, fmt.Errorf("%w; pairing wizard at %s (the setup code is on the console)", errUnconfigured, w.URL()))
	res, err := w.Run(ctx)
	if err != nil {
		w.Close()
		_ = mgmt.Stop(ctx)
		return fmt.Errorf("pairing wizard: %w", err)
	}
	b.Log.Info("pairing wizard: site config committed", "node", res.Node, "role", res.Role, "file", SiteState)
	// The site's own management config takes over the NIC; the wizard
	// listens on every address, so the browser and the peer reach it on
	// the new one.
	if err := mgmt.Stop(ctx); err != nil {
		b.Log.Warn("pairing wizard: release the first-boot address", "err", err)
	}
	if err := b.destroyConfirmed(ctx, res); err != nil {
		w.Close()
		return err
	}
	go b.lingerWizard(w, func(ctx context.Context) bool {
		if _, ok, _ := b.serving(ctx); ok {
			sleepCtx(ctx, time.Minute) // the summary page's last poll
			return true
		}
		return false
	})
	b.setState(status.Starting, nil)
	return runSteps(b, rest)
}

// lingerWizard closes w once over says so, or after wizardLinger.
func (b *Boot) lingerWizard(w *wizard.Wizard, over func(context.Context) bool) {
	ctx, cancel := context.WithTimeout(context.Background(), wizardLinger)
	defer cancel()
	for ctx.Err() == nil && !over(ctx) {
		sleepCtx(ctx, 5*time.Second)
	}
	w.Close()
	b.Log.Info("pairing wizard: closed")
}

// answerPairingStatus: a head whose wizard committed the site config but
// never heard that the other head committed too (the power went between
// the two commits) answers the other head's status query for a while
// after it boots, so that the other head can finish its commit. Nothing
// else of the wizard runs: no code, no pages.
func (b *Boot) answerPairingStatus() error {
	b.mu.Lock()
	raw := b.siteRaw
	b.mu.Unlock()
	if b.wizardRan || wizard.PairedNode(raw, StateDir) == "" {
		return nil // this boot's wizard answers, or a hand-written config
	}
	w, err := wizard.New(wizard.Options{StateDir: StateDir, ImageVersion: b.Manifest.Version,
		Inventory: b.inventory(""), Discovery: wizard.Discovery{Listen: "off"}, Log: b.Log})
	if err != nil {
		return fmt.Errorf("pairing status: %w", err)
	}
	if w.Done() {
		return w.Close()
	}
	if _, err := w.Run(context.Background()); err != nil {
		w.Close()
		return fmt.Errorf("pairing status: %w", err)
	}
	b.Log.Info("pairing wizard: answering the other head's status query until it has committed too")
	go b.lingerWizard(w, func(context.Context) bool { return w.Done() })
	return nil
}

// showWizard prints the wizard's block on the console: what the operator
// needs to reach it and to trust it.
func (b *Boot) showWizard(c wizard.Console) {
	b.mu.Lock()
	same := c == b.wizardShown
	b.wizardShown = c
	b.mu.Unlock()
	if same {
		return
	}
	for _, l := range c.Lines() {
		b.out.writeRaw(l)
	}
	b.Log.Info("pairing wizard: "+c.State, "url", c.URL)
}

// serving tells the wizard's progress page whether the pair serves yet,
// in this head's words.
func (b *Boot) serving(context.Context) (string, bool, error) {
	st := b.Status()
	switch {
	case st.State == status.Maintenance:
		return "", false, errors.New("this head is in maintenance: " + st.Reason)
	case st.State != status.Ready || st.Role == "":
		return "starting (" + lastStep(st) + ")", false, nil
	}
	drbd := ""
	if st.DRBD != nil {
		drbd = fmt.Sprintf("; replication %s, %s/%s", st.DRBD.Connection, st.DRBD.Disk, st.DRBD.PeerDisk)
	}
	switch {
	case st.Role == "active" && allRunning(st):
		return "serving as " + st.Role + drbd, true, nil
	case st.Role == "standby" && st.Peer != nil && st.Peer.Role == "active" && allRunning(*st.Peer):
		return "standby; the peer serves" + drbd, true, nil
	}
	return st.Role + drbd, false, nil
}

func lastStep(st status.Status) string {
	if len(st.Steps) == 0 {
		return "booting"
	}
	return st.Steps[len(st.Steps)-1].Name
}

func allRunning(st status.Status) bool {
	for _, s := range st.Services {
		if s.State != "running" && s.State != "degraded" {
			return false
		}
	}
	return len(st.Services) > 0
}

// broadcast is the directed broadcast address of p's subnet, where the
// wizard announces itself: the limited broadcast has no route on a head
// without a default gateway.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(a)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// stepsFrom is the tail of steps from the one named name.
func stepsFrom(steps []Step, name string) []Step {
	for i, s := range steps {
		if s.Name == name {
			return steps[i:]
		}
	}
	return nil
}

// destroyConfirmed overwrites the disks the operator confirmed in the
// wizard ("destroy data on …"), and only those of them that this head's
// node uses, before the RAID layer, which builds only on blank disks,
// looks at them. It runs once, right after the commit: the operator's
// instruction is not kept for later boots.
func (b *Boot) destroyConfirmed(ctx context.Context, res *wizard.Result) error {
	nd := res.Site.Node(res.Node)
	if nd == nil {
		return fmt.Errorf("pairing wizard: node %q is not in the committed site config", res.Node)
	}
	for _, id := range res.Destroy {
		if !slices.Contains(nd.Disks, id) {
			b.Log.Warn("pairing wizard: a disk confirmed for destruction is not among this head's disks; left alone", "disk", id)
			continue
		}
		serial, ok := strings.CutPrefix(id, "serial:")
		if !ok {
			return fmt.Errorf("pairing wizard: disk %q: only disks named by serial are overwritten", id)
		}
		b.Log.Warn("pairing wizard: destroying the data on disk "+id+", as the operator confirmed", "node", res.Node)
		was, err := disks.Finder{}.Wipe(ctx, serial, b.Log)
		if err != nil {
			return fmt.Errorf("pairing wizard: overwrite disk %s, as confirmed: %w", id, err)
		}
		b.Log.Info("pairing wizard: disk "+id+" is blank", "held", was.String())
	}
	return nil
}

// inventory reads this head's hardware for the wizard; the NIC the
// wizard is reached on is the one PID 1 took the address on.
func (b *Boot) inventory(mgmtLink string) wizard.Inventory {
	r := inventory.New(inventory.Options{Log: b.Log})
	return func(ctx context.Context) (wizard.Hardware, error) {
		hw, err := r.Read(ctx)
		for i := range hw.NICs {
			hw.NICs[i].Wizard = hw.NICs[i].Name == mgmtLink
		}
		return hw, err
	}
}
