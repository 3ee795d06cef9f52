package drbd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

// Node is one head as the resource file names it.
type Node struct {
	Name    string     // host name: DRBD 8.4 matches "on <name>" against uname -n
	Disk    string     // backing device (the head's RAID10 array)
	Address netip.Addr // replication address
}

// Config is everything the resource file and the tool calls need.
type Config struct {
	Resource      string
	Minor         int
	Port          int
	Protocol      string
	ResyncRateMiB int
	Self          string  // this head's node name
	Nodes         [2]Node // in site-config order; Nodes[0] skips the initial sync
	// Secret is the net shared-secret; SharedSecret derives it.
	Secret string
	// HandlerCommand is the program DRBD's handlers run.
	HandlerCommand string
	// ConfDir holds the generated resource file (tmpfs: rewritten at
	// every start); StateDir keeps what must survive a reboot.
	ConfDir, StateDir string
}

// Defaults for Config's paths.
const (
	DefaultConfDir        = "/run/tandem/drbd"
	DefaultStateDir       = "/var/lib/tandem/drbd"
	DefaultHandlerCommand = "/usr/bin/tandem"
)

// SharedSecret derives the DRBD shared-secret from the pair key
// (site.SubKey), bound to the pair and resource name. The pair key itself
// never reaches DRBD (it would show in `drbdsetup show` and in support
// bundles); a leaked secret reveals no other role's key.
func SharedSecret(pairKey []byte, pairName, resource string) (string, error) {
	k, err := site.SubKey(pairKey, pairName, site.PurposeDRBD, resource)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(k), nil
}

// FromSite builds the Config for this head from the site config. What
// the site cannot give: pairKey (from the head's key file) and disk, the
// backing device of both heads' arrays (the RAID layer names it).
func FromSite(sc *site.Config, self string, pairKey []byte, disk string) (Config, error) {
	const op = "new"
	if sc == nil {
		return Config{}, errorf(op, services.Config, "no site config")
	}
	if len(sc.Nodes) != 2 {
		return Config{}, errorf(op, services.Config, "site config has %d nodes, want 2", len(sc.Nodes))
	}
	if sc.Node(self) == nil {
		return Config{}, errorf(op, services.Config, "%q is not a node of pair %q", self, sc.Pair.Name)
	}
	d := sc.Storage.DRBD
	secret, err := SharedSecret(pairKey, sc.Pair.Name, d.Resource)
	if err != nil {
		return Config{}, fail(op, services.Config, err)
	}
	c := Config{
		Resource: d.Resource, Minor: d.Minor, Port: d.Port, Protocol: d.Protocol,
		ResyncRateMiB: d.ResyncRateMiB, Self: self, Secret: secret,
		HandlerCommand: DefaultHandlerCommand, ConfDir: DefaultConfDir, StateDir: DefaultStateDir,
	}
	for i, n := range sc.Nodes {
		c.Nodes[i] = Node{Name: n.Name, Disk: disk, Address: n.Replication.Prefix().Addr()}
	}
	return c, c.check()
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// check refuses anything that would let a value break out of the
// resource file's syntax; site validation should have caught it already.
func (c Config) check() error {
	var errs []error
	if !nameRE.MatchString(c.Resource) {
		errs = append(errs, fmt.Errorf("resource name %q", c.Resource))
	}
	if c.Protocol != "C" {
		errs = append(errs, fmt.Errorf("protocol %q: only C loses nothing on failover", c.Protocol))
	}
	if c.Port < 1 || c.Port > 65535 || c.Minor < 0 || c.ResyncRateMiB < 1 {
		errs = append(errs, fmt.Errorf("port %d, minor %d, resync rate %d", c.Port, c.Minor, c.ResyncRateMiB))
	}
	if len(c.Secret) < 32 || strings.ContainsAny(c.Secret, "\"\\ \t\n") {
		errs = append(errs, errors.New("shared secret missing or malformed"))
	}
	self := false
	for _, n := range c.Nodes {
		if !nameRE.MatchString(n.Name) || !n.Address.IsValid() || !strings.HasPrefix(n.Disk, "/dev/") || strings.ContainsAny(n.Disk, " ;{}\"") {
			errs = append(errs, fmt.Errorf("node %q: name, address %v or disk %q", n.Name, n.Address, n.Disk))
		}
		self = self || n.Name == c.Self
	}
	if !self {
		errs = append(errs, fmt.Errorf("self %q is not one of the nodes", c.Self))
	}
	if c.Nodes[0].Name == c.Nodes[1].Name {
		errs = append(errs, errors.New("both nodes have the same name"))
	}
	if len(errs) > 0 {
		return errorf("new", services.Config, "%w", errors.Join(errs...))
	}
	return nil
}

// Device is the DRBD block device the LVM layer uses.
func (c Config) Device() string { return fmt.Sprintf("/dev/drbd%d", c.Minor) }

// ResFile is where the generated resource file lives.
func (c Config) ResFile() string { return c.ConfDir + "/" + c.Resource + ".res" }

// Render returns the resource file in DRBD 8.4 syntax (the in-kernel
// module is 8.4; drbdadm 9 hands the file to drbdadm-84). 8.4 keeps
// fencing, resync-rate and c-plan-ahead in the disk section, and the
// protocol in net.
func (c Config) Render() ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	w := func(indent int, format string, a ...any) {
		b.WriteString(strings.Repeat("\t", indent))
		fmt.Fprintf(&b, format, a...)
		b.WriteByte('\n')
	}
	w(0, "# Generated by Tandem from site.toml at every start; edits are lost.")
	w(0, "global {")
	w(1, "usage-count no; # drbdadm would otherwise prompt and phone home")
	w(0, "}")
	w(0, "")
	w(0, "resource %s {", c.Resource)
	w(1, "net {")
	w(2, "protocol %s;", c.Protocol)
	w(2, "cram-hmac-alg sha256;")
	w(2, "shared-secret \"%s\";", c.Secret)
	// Never discard-*: after a split brain both sides disconnect, the
	// monitor reports StandAlone, and an operator chooses the survivor.
	w(2, "after-sb-0pri disconnect;")
	w(2, "after-sb-1pri disconnect;")
	w(2, "after-sb-2pri disconnect;")
	// Notice a lost peer within about 4 s rather than 10.5 s: until
	// then a primary's writes wait, and a standby cannot mark itself
	// Outdated. timeout (ack of a write) must stay below ping-int.
	w(2, "ping-int 3;")
	w(2, "ping-timeout 10;")
	w(2, "timeout 25;")
	w(1, "}")
	w(1, "disk {")
	// A primary that loses the peer freezes its I/O (in the kernel,
	// before PID 1 knows) until the fence-peer handler says the peer is
	// outdated: no write lands on one disk alone unless the other head
	// can never serve without it (the witness records that).
	w(2, "fencing resource-and-stonith;")
	// The 8.4 dynamic resync controller crawls at ~5 MB/s here; a fixed
	// rate makes resync time predictable.
	w(2, "c-plan-ahead 0;")
	w(2, "resync-rate %dM;", c.ResyncRateMiB)
	w(1, "}")
	w(1, "handlers {")
	w(2, "fence-peer \"%s drbd-fence-peer\";", c.HandlerCommand)
	w(2, "after-resync-target \"%s drbd-unfence-peer\";", c.HandlerCommand)
	w(1, "}")
	for _, n := range c.Nodes {
		w(1, "on %s {", n.Name)
		w(2, "device %s minor %d;", c.Device(), c.Minor)
		w(2, "disk %s;", n.Disk)
		if n.Address.Is4() {
			w(2, "address ipv4 %s:%d;", n.Address, c.Port)
		} else {
			w(2, "address ipv6 [%s]:%d;", n.Address, c.Port)
		}
		w(2, "meta-disk internal;")
		w(1, "}")
	}
	w(0, "}")
	return b.Bytes(), nil
}

// self returns this head's Node and whether it is Nodes[0].
func (c Config) self() (Node, bool) {
	if c.Nodes[0].Name == c.Self {
		return c.Nodes[0], true
	}
	return c.Nodes[1], false
}
