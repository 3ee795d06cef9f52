// Package site reads and checks a pair's site config (site.toml), schema
// version 1.
//
// A site config describes one pair of heads: the two nodes and their
// networks, the storage stack, the shares, the virtual IP and the HA
// timings. It describes what to serve, never in what order: the start
// order comes from the service graph, so no config can bring the VIP up
// before the file services behind it are ready.
//
// Parse decodes strictly (unknown keys are errors), applies defaults and
// then checks the whole config, returning every problem at once. Every
// error names file:line:col and the key path, because a bad config puts
// the node into maintenance and the operator fixes it from the console.
package site

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/pelletier/go-toml/v2"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/internal/tomlpos"
)

// Version is the only schema version this package reads.
const Version = 1

// OnConfigPartition is how errors name site.toml on the TANDEM-CFG
// partition, which is where an operator edits it.
const OnConfigPartition = manifest.LabelConfig + "/site.toml"

// MaxSize bounds a site config. A real one is a few KiB; the bound keeps a
// corrupt or hostile file on the config partition from exhausting PID 1.
const MaxSize = 1 << 20

// StateDir is the directory, relative to the replicated filesystem's
// mountpoint, that holds state which must follow the active head: the
// NFSv4 recovery directory, statd state and Samba's tdb files. Exports and
// shares may not reach into it.
const StateDir = ".tandem"

// Config is a decoded, defaulted and checked site config.
type Config struct {
	Version     int         `toml:"version"`
	Pair        Pair        `toml:"pair"`
	Nodes       []Node      `toml:"node"`
	Storage     Storage     `toml:"storage"`
	Services    Services    `toml:"services"`
	VIP         VIP         `toml:"vip"`
	HA          HA          `toml:"ha"`
	Witness     Witness     `toml:"witness"`
	Diagnostics Diagnostics `toml:"diagnostics"`

	file string
	keys *tomlpos.Index
}

// Pair identifies the pair as a whole.
type Pair struct {
	// Name is the pair's name; it is also the NFSv4 server scope, which
	// must be the same on both heads for clients to reclaim state.
	Name string `toml:"name"`
	// Key authenticates heartbeats (HMAC); hex or base64, >= 32 bytes.
	Key string `toml:"key"`
	// KeyFile names a file holding the key instead.
	KeyFile string `toml:"key_file"`
}

// Node is one head.
type Node struct {
	Name string `toml:"name"`
	// Disks are this head's RAID10 members. Written, it overrides
	// Storage.RAID.Disks; after Parse it is always the effective list.
	Disks       []string    `toml:"disks"`
	Management  Management  `toml:"management"`
	Replication Replication `toml:"replication"`
}

// Management is a head's management (and default service) network.
type Management struct {
	Interface string   `toml:"interface"`
	MAC       string   `toml:"mac"`
	DHCP      bool     `toml:"dhcp"`
	Address   string   `toml:"address"` // CIDR
	Gateway   string   `toml:"gateway"`
	DNS       []string `toml:"dns"`
}

// Prefix returns the static management address, or the zero Prefix.
func (m Management) Prefix() netip.Prefix { return prefixOrZero(m.Address) }

// Replication is a head's bonded replication link (DRBD and heartbeats).
type Replication struct {
	Bond       string   `toml:"bond"`
	Links      []string `toml:"links"` // interface names or MACs
	Mode       string   `toml:"mode"`
	MIIMonMS   int      `toml:"miimon_ms"`
	ARPTargets []string `toml:"arp_targets"`
	Address    string   `toml:"address"` // CIDR
	MTU        int      `toml:"mtu"`
}

// Prefix returns the replication address.
func (r Replication) Prefix() netip.Prefix { return prefixOrZero(r.Address) }

// Storage is the block stack under the shares.
type Storage struct {
	RAID       RAID       `toml:"raid"`
	DRBD       DRBD       `toml:"drbd"`
	LVM        LVM        `toml:"lvm"`
	Filesystem Filesystem `toml:"filesystem"`
}

// RAID is each head's local array.
type RAID struct {
	Disks         []string `toml:"disks"`
	Level         string   `toml:"level"`
	CreateIfBlank bool     `toml:"create_if_blank"`
	ChunkKiB      int      `toml:"chunk_kib"`
}

// DRBD is the replicated block device on top of the arrays.
type DRBD struct {
	Resource      string `toml:"resource"`
	Port          int    `toml:"port"`
	Minor         int    `toml:"minor"`
	ResyncRateMiB int    `toml:"resync_rate_mib"`
	Protocol      string `toml:"protocol"`
}

// LVM is the volume group on the DRBD device.
type LVM struct {
	VG   string `toml:"vg"`
	LV   string `toml:"lv"`
	Size string `toml:"size"`
}

// Filesystem is the filesystem on the logical volume.
type Filesystem struct {
	Type        string `toml:"type"`
	Mountpoint  string `toml:"mountpoint"`
	MkfsIfBlank bool   `toml:"mkfs_if_blank"`
}

// Services are the file services and their directory connector.
type Services struct {
	NFS NFS `toml:"nfs"`
	SMB SMB `toml:"smb"`
	AD  AD  `toml:"ad"`
}

// NFS is the kernel NFS server.
type NFS struct {
	Enabled      bool     `toml:"enabled"`
	Versions     []string `toml:"versions"`
	GraceSeconds int      `toml:"grace_seconds"`
	LeaseSeconds int      `toml:"lease_seconds"`
	Exports      []Export `toml:"export"`
}

// Export is one NFS export.
type Export struct {
	Path    string   `toml:"path"`
	Clients []string `toml:"clients"`
	Options []string `toml:"options"`
	FSID    FSID     `toml:"fsid"`
}

// FSID is an export's fixed filesystem id: a 32-bit integer or a UUID.
// TOML may give it as an integer or a string, so it decodes from text and
// is checked afterwards.
type FSID struct {
	raw  string
	norm string
}

// UnmarshalText keeps the raw text; validation parses it. It never fails,
// because go-toml would report such an error without a position.
func (f *FSID) UnmarshalText(b []byte) error {
	f.raw = string(b)
	return nil
}

// MarshalText renders the normalized id.
func (f FSID) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// String is the id as exportfs takes it ("17" or a lowercase UUID).
func (f FSID) String() string {
	if f.norm != "" {
		return f.norm
	}
	return f.raw
}

// SMB is Samba, single-active on the pair.
type SMB struct {
	Enabled     bool    `toml:"enabled"`
	Security    string  `toml:"security"` // "ads" or "user"
	Workgroup   string  `toml:"workgroup"`
	NetBIOSName string  `toml:"netbios_name"`
	Shares      []Share `toml:"share"`
}

// Share is one SMB share.
type Share struct {
	Name       string   `toml:"name"`
	Path       string   `toml:"path"`
	ReadOnly   bool     `toml:"read_only"`
	ValidUsers []string `toml:"valid_users"`
}

// AD is the Active Directory connector (winbind).
type AD struct {
	Realm            string   `toml:"realm"`
	Domain           string   `toml:"domain"`
	DC               []string `toml:"dc"`
	JoinUser         string   `toml:"join_user"`
	JoinPasswordFile string   `toml:"join_password_file"`
}

// VIP is the service address that moves with the active head.
type VIP struct {
	Address   string `toml:"address"`   // CIDR
	Interface string `toml:"interface"` // empty: each head's management interface
	ARPCount  int    `toml:"arp_count"`
}

// Prefix returns the VIP with its prefix length.
func (v VIP) Prefix() netip.Prefix { return prefixOrZero(v.Address) }

// HA holds membership and monitoring timings.
type HA struct {
	HeartbeatPort       int `toml:"heartbeat_port"`
	ControlPort         int `toml:"control_port"`
	HeartbeatIntervalMS int `toml:"heartbeat_interval_ms"`
	DeadTimeMS          int `toml:"dead_time_ms"`
	// StopBoundMS is the longest the active stack may take to stop once
	// the head has lost quorum; past it the head resets itself. The peer
	// waits it out (with the watchdog timeout) before taking over.
	StopBoundMS int `toml:"stop_bound_ms"`
	// WatchdogTimeoutSeconds is the hardware watchdog's timeout: how long
	// a hung head runs on before the board resets it. The peer waits it
	// out too, so it is part of every takeover from a silent head.
	WatchdogTimeoutSeconds int      `toml:"watchdog_timeout_seconds"`
	MigrationThreshold     int      `toml:"migration_threshold"`
	FailureTimeoutSeconds  int      `toml:"failure_timeout_seconds"`
	Monitor                Monitors `toml:"monitor"`
}

// Monitors has one entry per monitored layer.
type Monitors struct {
	VIP        Monitor `toml:"vip"`
	Link       Monitor `toml:"link"`
	AD         Monitor `toml:"ad"`
	NFS        Monitor `toml:"nfs"`
	SMB        Monitor `toml:"smb"`
	Filesystem Monitor `toml:"filesystem"`
	LVM        Monitor `toml:"lvm"`
	DRBD       Monitor `toml:"drbd"`
}

// Monitor is how often a layer is probed and how long a probe may take.
type Monitor struct {
	IntervalMS int `toml:"interval_ms"`
	TimeoutMS  int `toml:"timeout_ms"`
}

// Witness is the tiebreaker: a `tandem witness` or a ping target.
type Witness struct {
	Address    string `toml:"address"` // host:port
	PingTarget string `toml:"ping_target"`
	// LeaseMS is how long one grant of the witness's vote lasts (`tandem
	// witness-key` writes it into the witness config); default the dead
	// time.
	LeaseMS int `toml:"lease_ms"`
}

// Diagnostics are switches for field debugging.
type Diagnostics struct {
	RescueShell bool `toml:"rescue_shell"`
}

// Load reads and parses the site config at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("site config: %w", err)
	}
	defer f.Close()
	// Read one byte past the limit so Parse can tell "too large".
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("site config %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse decodes and checks a site config; name is used in error messages.
// The error is an *Error (syntax or type), or ValidationErrors (unknown
// keys, or every semantic problem at once).
func Parse(name string, data []byte) (cfg *Config, err error) {
	// PID 1 must survive any input; a panic here would panic the kernel.
	defer func() {
		if r := recover(); r != nil {
			cfg = nil
			err = &Error{File: name, Line: 1, Col: 1, Msg: fmt.Sprintf("internal error: %v", r)}
		}
	}()
	if len(data) > MaxSize {
		return nil, &Error{File: name, Line: 1, Col: 1,
			Msg: fmt.Sprintf("file is larger than %d bytes; a site config is a few KiB", MaxSize)}
	}

	var c Config
	c.file = name
	// The index is built even for a broken document, as far as it parses,
	// so that decode errors can name indexed key paths.
	keys, parsed := tomlpos.IndexKeys(data)
	c.keys = keys
	// Unknown keys are found here, before go-toml's strict mode sees
	// them (see unknownKeys); a syntax error is go-toml's to report.
	if parsed {
		if verrs := c.unknownKeys(); len(verrs) > 0 {
			return nil, verrs
		}
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, c.decodeError(err)
	}
	c.applyDefaults()
	if verrs := c.validate(); len(verrs) > 0 {
		return nil, verrs
	}
	return &c, nil
}

// File is the name the config was parsed under.
func (c *Config) File() string { return c.file }

// Position returns where a key path (e.g. "node[1].replication.links[0]")
// is written, so later layers can point at the config in their own errors.
// ok is false if the key is not in the file (it was defaulted); line and
// col then locate the nearest enclosing table.
func (c *Config) Position(path string) (line, col int, ok bool) {
	p, ok := c.lookup(path)
	return p.Line, p.Col, ok
}

// lookup is Index.Lookup, but at 1:1 for a key with no enclosing table
// written, since every site config error names a line.
func (c *Config) lookup(path string) (tomlpos.Position, bool) {
	p, ok := c.keys.Lookup(path)
	if p == (tomlpos.Position{}) {
		p = tomlpos.Position{Line: 1, Col: 1}
	}
	return p, ok
}

// Node returns the node with the given name, or nil.
func (c *Config) Node(name string) *Node {
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i]
		}
	}
	return nil
}

// Peer returns the other node of the pair, or nil if name is not a node.
func (c *Config) Peer(name string) *Node {
	if len(c.Nodes) != 2 {
		return nil
	}
	switch name {
	case c.Nodes[0].Name:
		return &c.Nodes[1]
	case c.Nodes[1].Name:
		return &c.Nodes[0]
	}
	return nil
}

func prefixOrZero(s string) netip.Prefix {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}
