package pid1

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// afterRootSteps bring the node up once the root is mounted. Everything
// that lets an operator reach a broken node (events, status, watchdog,
// power button) comes before anything that can fail on the site's data.
func afterRootSteps() []Step {
	return []Step{
		{Name: "events", Optional: true, After: []string{"switch root"}, Run: (*Boot).setupEvents},
		{Name: "status socket", Optional: true, After: []string{"switch root"}, Run: (*Boot).serveStatus},
		{Name: "watchdog", Optional: true, After: []string{"boot modules"}, Run: (*Boot).startWatchdog},
		{Name: "modprobe", Optional: true, After: []string{"boot modules"}, Run: (*Boot).installModprobe},
		{Name: "power button", Optional: true, After: []string{"boot modules", "events"}, Run: (*Boot).watchPowerButton},
		{Name: "lab agent", Optional: true, After: []string{"boot modules"}, Run: (*Boot).startLabAgent},
		{Name: "board", After: []string{"manifest"}, Run: (*Boot).loadBoard},
		{Name: "state", After: []string{"boot modules", "writable paths"}, Run: (*Boot).mountState},
		{Name: "persistent log", Optional: true, After: []string{"state"}, Run: (*Boot).openLogRing},
		{Name: "site config", After: []string{"state", "boot modules"}, Run: (*Boot).loadSite},
		{Name: "node", After: []string{"site config"}, Run: (*Boot).identifyNode},
		{Name: "lab settings", After: []string{"site config", "board"}, Run: (*Boot).refuseLabSettings},
		{Name: "rescue shell", Optional: true, After: []string{"site config", "lab settings"}, Run: (*Boot).startRescueShell},
		{Name: "hostname from site", Optional: true, After: []string{"node", "hostname"}, Run: (*Boot).setHostname},
		{Name: "services", After: []string{"node", "board", "state", "lab settings"}, Run: (*Boot).startServices},
		{Name: "ready", After: []string{"services"}, Run: (*Boot).ready},
		{Name: "bless boot", Optional: true, After: []string{"ready"}, Run: (*Boot).blessBoot},
		{Name: "pairing status", Optional: true, After: []string{"ready"}, Run: (*Boot).answerPairingStatus},
	}
}

// afterRoot is continueAfterRoot: it runs afterRootSteps and then idles
// (ready) or enters maintenance or unconfigured mode. It returns only the
// error that puts the node into maintenance.
func (b *Boot) afterRoot() error {
	done := map[string]bool{}
	for _, s := range append(earlySteps(), rootSteps()...) {
		done[s.Name] = true
	}
	steps := afterRootSteps()
	if err := checkOrder(done, steps); err != nil {
		return fmt.Errorf("boot steps: %w", err)
	}
	err := runSteps(b, steps)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errStopping):
		b.Idle() // the shutdown owns the node now
	case errors.Is(err, errUnconfigured):
		b.setState(status.Unconfigured, err)
		b.Log.Warn("UNCONFIGURED: no site.toml on the state partition or on " + cfgLabel +
			"; starting the pairing wizard (or drop site.toml on " + cfgLabel + " and reboot)")
		if err = b.awaitPairing(stepsFrom(steps, "site config")); err == nil || errors.Is(err, errStopping) {
			b.Idle()
		}
	}
	// Maintenance: keep the management network reachable for diagnosis,
	// in the background so the reason reaches the console first.
	go b.bestEffortNetwork()
	return err
}

// refuseLabSettings: on a board that is not a QEMU lab board, a site
// config with the published lab key or the console's root shell puts
// the head into maintenance before anything uses them.
func (b *Boot) refuseLabSettings() error {
	if b.Board == nil || b.Site == nil || b.Board.Lab() {
		return nil
	}
	key, _ := b.Site.PairKey() // unreadable: the services step says so
	if err := b.Site.CheckHardware(b.Board.Name, key); err != nil {
		return fmt.Errorf("lab-only settings on a real head; nothing was touched; fix them on %s and reboot:\n%w", cfgLabel, err)
	}
	return nil
}

func (b *Boot) loadBoard() error {
	bd, err := board.Load(b.Manifest.Board)
	if err != nil {
		return err
	}
	b.Board = bd
	return nil
}

// ready marks the node ready and logs the figures docs/benchmarks.md
// records: PID 1 start to ready on the guest's clock, and PID 1's RSS.
func (b *Boot) ready() error {
	ms := time.Since(b.Start).Milliseconds()
	rss := vmRSS()
	b.mu.Lock()
	b.readyMS = ms
	b.state, b.reason = status.Ready, nil
	b.mu.Unlock()
	b.Log.Info(fmt.Sprintf("ready (node %s, %d ms since PID 1 start)", b.Node, ms),
		"rss_kib", rss, "uptime", uptime())
	b.out.ring.sync()
	return nil
}

// vmRSS is this process's resident memory in KiB (VmRSS), 0 if unknown.
func vmRSS() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func (b *Boot) setHostname() error {
	if b.Node == "" {
		return nil
	}
	if err := unix.Sethostname([]byte(b.Node)); err != nil {
		return err
	}
	return atomicfile.Write("/etc/hosts", hostsFile(b.Site), 0o644)
}

// hostsFile names the pair's addresses without DNS: rpc.statd and
// sm-notify resolve the VIP and the heads by address, and a pair must
// not depend on a DNS server to fail over.
func hostsFile(sc *site.Config) []byte {
	var b strings.Builder
	b.WriteString("# Written by Tandem from site.toml at boot.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if sc == nil {
		return []byte(b.String())
	}
	if p := sc.VIP.Prefix(); p.IsValid() {
		fmt.Fprintf(&b, "%s\t%s\n", p.Addr(), sc.Pair.Name)
	}
	for _, n := range sc.Nodes {
		if p := n.Management.Prefix(); p.IsValid() {
			fmt.Fprintf(&b, "%s\t%s\n", p.Addr(), n.Name)
		}
		if p := n.Replication.Prefix(); p.IsValid() {
			fmt.Fprintf(&b, "%s\t%s-replication\n", p.Addr(), n.Name)
		}
	}
	return []byte(b.String())
}
