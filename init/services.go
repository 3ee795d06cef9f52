package pid1

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/supervisor"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services/graph"
	"tandem.dev/tandem/services/raid"
	"tandem.dev/tandem/services/stack"
	"tandem.dev/tandem/services/supervise"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/status"
)

// servicesBudget bounds bringing the whole graph up at boot.
const servicesBudget = 3 * time.Minute

// serviceGraph prepares what the storage tools expect on this head, then
// builds its layers from the site config (services/stack, which has no
// side effects).
func (b *Boot) serviceGraph() (*stack.Stack, error) {
	if err := b.prepareServices(); err != nil {
		return nil, err
	}
	key, err := b.Site.PairKey()
	if err != nil {
		return nil, err
	}
	uuid, _ := os.ReadFile(raidUUIDFile)
	st, err := stack.Build(b.Site, b.Node, stack.Options{Board: b.Board, PairKey: key,
		RAIDUUID: strings.TrimSpace(string(uuid)), Log: b.Log})
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.mgmt = st.Mgmt
	b.mu.Unlock()
	return st, nil
}

// runDirs are what the storage tools expect under /run (a fresh tmpfs):
// drbdadm and lvm lock in /var/lock, which links to /run/lock.
var runDirs = []string{"/run/lock"}

// prepareServices readies the machine for the layers: lo up, /srv, and
// the tools' run directories.
func (b *Boot) prepareServices() error {
	if err := loopbackUp(); err != nil {
		return err
	}
	if err := b.mountDataRoot(); err != nil {
		return err
	}
	for _, d := range runDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// raidUUIDFile remembers this head's array, so a later boot assembles
// that one and refuses a stranger.
const raidUUIDFile = "/var/lib/tandem/raid.uuid"

// rememberRAID records the array's UUID once it runs.
func (b *Boot) rememberRAID(r *raid.RAID) {
	u := r.UUID()
	if u == "" {
		return
	}
	if old, _ := os.ReadFile(raidUUIDFile); strings.TrimSpace(string(old)) == u {
		return
	}
	if err := atomicfile.Write(raidUUIDFile, []byte(u+"\n"), 0o600); err != nil {
		b.Log.Warn("could not record the RAID UUID", "err", err)
		return
	}
	b.Log.Info("raid10: recorded array UUID " + u)
}

// startServices starts the graph bottom-up, keeps monitoring it, and
// hands the head's role to the HA supervisor (ha/supervisor).
func (b *Boot) startServices() error {
	st, err := b.serviceGraph()
	if err != nil {
		return err
	}
	sup := supervise.New(st.Graph, supervise.Options{Logger: b.Log, OnEscalate: b.onEscalate})
	b.mu.Lock()
	b.sup, b.details, b.stack = sup, st.Details(), st
	b.mu.Unlock()
	b.Log.Info("services: start order " + fmt.Sprint(st.Graph.StartOrder()))
	ctx, cancel := context.WithTimeout(context.Background(), servicesBudget)
	defer cancel()
	// Both heads run the shared layers; the active ones follow once the
	// HA supervisor settles the head's role.
	if err := sup.StartRoles(ctx, graph.Both); err != nil {
		return err
	}
	b.rememberRAID(st.RAID)
	h, err := b.newHA(sup, st)
	if err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	if err := h.ServeControl(); err != nil {
		return fmt.Errorf("HA: %w", err)
	}
	b.mu.Lock()
	b.ha = h
	b.mu.Unlock()
	run, stop := context.WithCancel(context.Background())
	b.mu.Lock()
	b.stopRun = stop
	b.mu.Unlock()
	go func() {
		defer func() {
			if r := recover(); r != nil {
				b.Log.Error("supervisor panic", "panic", fmt.Sprint(r))
			}
		}()
		sup.Run(run)
	}()
	go b.warmStandby(run, sup, h)
	h.Start(run)
	b.mu.Lock()
	wd := b.watchdog
	b.mu.Unlock()
	wd.watchLoop(h.Healthy)
	return nil
}

// newHA sets up the HA supervisor for this head's stack: the watchdog's
// timeout from the site config, the heartbeat and the tiebreaker.
func (b *Boot) newHA(sup *supervise.Supervisor, st *stack.Stack) (*supervisor.Supervisor, error) {
	sc := b.Site
	b.mu.Lock()
	wd := b.watchdog
	b.mu.Unlock()
	wdTimeout := time.Duration(sc.HA.WatchdogTimeoutSeconds) * time.Second
	if wd == nil {
		b.Log.With("component", "ha").Warn("no hardware watchdog: a hung PID 1 cannot be reset; a stop that overruns its bound still restarts the kernel")
	} else {
		wdTimeout = wd.setTimeout(wdTimeout, b.Log)
	}
	key, err := sc.PairKey()
	if err != nil {
		return nil, err
	}
	cfg := supervisor.Config{Site: sc, Node: b.Node, Key: key, Params: supervisor.Params(sc, wdTimeout),
		Layers: sup, DRBD: st.DRBD, VIP: st.VIP, Host: host{b}, Log: b.Log}
	if wd != nil {
		cfg.Watch = wd // a nil *watchdog must not become a non-nil interface
	}
	if err := supervisor.Connect(&cfg); err != nil {
		return nil, err
	}
	return supervisor.New(cfg)
}

// host is what PID 1 does for the HA supervisor.
type host struct{ b *Boot }

func (h host) Stopping() bool             { return h.b.stopping.Load() }
func (h host) LocalStatus() status.Status { return h.b.localStatus() }

// Restart is a self-fence: no sync (a hung filesystem is the likely
// reason to be here, and nothing unsynced was acknowledged to a client).
func (h host) Restart(why string) {
	h.b.drainConsoles()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		h.b.Log.With("component", "ha").Error("self-fence: restart failed; waiting for the watchdog", "err", err)
	}
}

// haSup is the HA supervisor, once the services run.
func (b *Boot) haSup() *supervisor.Supervisor {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ha
}

// rewarmEvery renews the standby's warm takeover path: memory pressure
// or emulation can drop it over hours.
const rewarmEvery = 10 * time.Minute

// warmStandby warms the active-only layers while this head is the
// standby: at once after boot (a head that was just power-cycled takes
// over cold otherwise), after each release, and every rewarmEvery. Not
// in maintenance mode, where the head only watches.
func (b *Boot) warmStandby(ctx context.Context, sup *supervise.Supervisor, h *supervisor.Supervisor) {
	for {
		if h.Role() == ha.Standby && !sup.InMaintenance() {
			sup.Warm(ctx, graph.ActiveOnly)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(rewarmEvery):
		case <-h.Released():
		}
	}
}

// onEscalate hands a layer that failed past its migration threshold to
// the HA supervisor, which fails over when the peer can take over.
func (b *Boot) onEscalate(name string, err error) {
	if h := b.haSup(); h != nil {
		h.Escalate(name, err)
		return
	}
	b.Log.Error("service "+name+" needs attention (the HA supervisor is not running)", "err", err)
}

// loopbackUp brings lo up: rpcbind, mountd and the NFS monitor's RPC
// calls talk over 127.0.0.1.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// dataRootStore backs site.DataRoot (/srv), where the data filesystem's
// mount point is made: the root is a read-only squashfs. It is on the
// state partition rather than a tmpfs because NFSv4 exports every
// directory above an export as its pseudo root, and the kernel cannot
// export a tmpfs without an fsid; ext4 has a UUID.
const dataRootStore = "/var/lib/tandem/srv"

// mountDataRoot bind-mounts dataRootStore on /srv, once.
func (b *Boot) mountDataRoot() error {
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), " "+site.DataRoot+" ") {
		return nil
	}
	if err := os.MkdirAll(dataRootStore, 0o755); err != nil {
		return fmt.Errorf("data root: %w", err)
	}
	if err := unix.Mount(dataRootStore, site.DataRoot, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", dataRootStore, site.DataRoot, err)
	}
	b.addMount(site.DataRoot)
	return nil
}
