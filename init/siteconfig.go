package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/internal/atomicfile"
	"tandem.dev/tandem/services/network"
	"tandem.dev/tandem/services/stack"
	"tandem.dev/tandem/site"
	"tandem.dev/tandem/wizard"
)

const (
	// SiteState is the node's own copy of the site config.
	SiteState = StateDir + "/site.toml"
	cfgLabel  = manifest.LabelConfig
	cfgMount  = "/run/tandem/cfg"
	cfgWait   = 2 * time.Second
)

// errUnconfigured: there is no site config anywhere; not a failure.
var errUnconfigured = errors.New("unconfigured: no site.toml on the state partition or on " + cfgLabel)

// loadSite takes the site config from the state partition, else from
// TANDEM-CFG, and validates it. Only a valid config is copied to the
// state partition: an operator fixes a bad one on TANDEM-CFG and reboots.
func (b *Boot) loadSite() error {
	data, name, err := readSiteConfig()
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.siteRaw = data
	b.mu.Unlock()
	cfg, err := site.Parse(name, data)
	if err != nil {
		return fmt.Errorf("invalid, nothing was touched; fix it on %s and reboot:\n%w", cfgLabel, err)
	}
	b.Site, b.SiteSource = cfg, name
	if name == site.OnConfigPartition {
		if err := atomicfile.Write(SiteState, data, 0o600); err != nil {
			return fmt.Errorf("copy %s to %s: %w", name, SiteState, err)
		}
		b.Log.Info("site config: copied to the state partition", "from", name, "to", SiteState)
	}
	b.Log.Info("site config: valid", "file", name, "pair", cfg.Pair.Name, "nodes", len(cfg.Nodes))
	return nil
}

// readSiteConfig returns the raw config and the name errors should use.
func readSiteConfig() ([]byte, string, error) {
	data, err := readLimited(SiteState)
	if err == nil {
		return data, SiteState, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	data, err = readConfigPartition()
	if err != nil {
		return nil, "", err
	}
	return data, site.OnConfigPartition, nil
}

// readConfigPartition mounts TANDEM-CFG read-only just long enough to
// read site.toml. No partition or no file is errUnconfigured.
func readConfigPartition() ([]byte, error) {
	dev, err := waitPartition(cfgLabel, cfgWait)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errUnconfigured, err)
	}
	if err := os.MkdirAll(cfgMount, 0o755); err != nil {
		return nil, err
	}
	if _, err := mount.Mount(dev, cfgMount, "vfat", "", unix.MS_RDONLY|unix.MS_NOEXEC|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
		return nil, fmt.Errorf("mount %s (%s) read-only: %w", dev, cfgLabel, err)
	}
	defer mount.Unmount(cfgMount, false, true)
	data, err := readLimited(filepath.Join(cfgMount, "site.toml"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errUnconfigured
	}
	return data, err
}

// readLimited reads at most site.MaxSize+1 bytes, so Parse can say "too
// large" without PID 1 reading a huge file.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, site.MaxSize+1))
}

// identifyNode decides which node of the site config this head is.
func (b *Boot) identifyNode() error {
	name, how, err := b.whoAmI(b.Site.Nodes)
	if err != nil {
		return err
	}
	b.Node = name
	b.Log.Info("node: "+name, "by", how)
	return nil
}

// whoAmI gathers the hints and identifies the node. NICs may still be
// probing, so when the config names MACs it waits a little for them.
func (b *Boot) whoAmI(nodes []site.Node) (string, string, error) {
	b.mu.Lock()
	raw := b.siteRaw
	b.mu.Unlock()
	h := nodeHints{Cmdline: b.Cmdline.Node, DMISerial: dmiSerial(), Paired: wizard.PairedNode(raw, StateDir)}
	deadline := time.Now().Add(5 * time.Second)
	for {
		links, err := network.LocalLinks()
		if err != nil {
			return "", "", err
		}
		h.Links = links
		name, how, err := identify(nodes, h)
		if err == nil || !errors.Is(err, errNoMatch) || !namesMACs(nodes) || time.Now().After(deadline) {
			return name, how, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dmiSerial is the SMBIOS system serial number; the lab sets it to the
// node name (-smbios type=1,serial=head-a).
func dmiSerial() string {
	raw, err := os.ReadFile("/sys/class/dmi/id/product_serial")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

// bestEffortNetwork brings up the management interface in maintenance,
// from the config as far as it decodes, so the node can be diagnosed
// remotely. It never touches anything else.
func (b *Boot) bestEffortNetwork() {
	defer func() {
		if r := recover(); r != nil {
			b.Log.Error("maintenance network: panic", "panic", fmt.Sprint(r))
		}
	}()
	b.mu.Lock()
	raw, m := b.siteRaw, b.mgmt
	b.mu.Unlock()
	if m == nil {
		cfg := b.Site
		if cfg == nil {
			if raw == nil {
				raw, _ = readConfigPartition() // the state partition may be the problem
			}
			if raw == nil {
				b.Log.Warn("maintenance: management network stays down: no site config to take it from")
				return
			}
			cfg = new(site.Config)
			// Lenient: a config that fails validation often still names
			// the management interface and address correctly.
			if err := toml.Unmarshal(raw, cfg); err != nil {
				b.Log.Warn("maintenance: management network stays down: the site config does not decode")
				return
			}
		}
		name := b.Node
		if name == "" {
			var err error
			if name, _, err = b.whoAmI(cfg.Nodes); err != nil {
				b.Log.Warn("maintenance: management network stays down: " + err.Error())
				return
			}
		}
		var err error
		if m, err = stack.Management(cfg.Node(name), b.Log); err != nil {
			b.Log.Warn("maintenance: management network stays down: " + err.Error())
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		b.Log.Warn("maintenance: management network stays down: it did not come up", "err", err)
		return
	}
	b.mu.Lock()
	b.mgmt = m
	b.details = map[string]func() string{"mgmt": m.Addr}
	b.mu.Unlock()
	b.Log.Info("maintenance: management network up for diagnosis", "link", m.Link, "addr", m.Addr())
}
