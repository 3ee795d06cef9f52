package site

import (
	"fmt"
	"strings"
)

// Defaults. A default applies only when the key is absent from the file:
// an explicit 0 or "" is kept and then rejected by validation, so that a
// typo never turns silently into a default.
const (
	DefaultMode                = "active-backup"
	DefaultBond                = "bond0"
	DefaultMIIMonMS            = 100
	DefaultMTU                 = 1500
	DefaultRAIDLevel           = "raid10"
	DefaultChunkKiB            = 512
	DefaultDRBDResource        = "r0"
	DefaultDRBDPort            = 7789
	DefaultResyncRateMiB       = 100
	DefaultProtocol            = "C"
	DefaultVG                  = "tandem"
	DefaultLV                  = "data"
	DefaultLVSize              = "100%FREE"
	DefaultFSType              = "xfs"
	DefaultMountpoint          = "/srv/tandem"
	DefaultGraceSeconds        = 15 // short: the kernel's 90 s stalls clients after every failover
	DefaultLeaseSeconds        = 15
	DefaultSMBSecurity         = "ads"
	DefaultARPCount            = 5
	DefaultHeartbeatPort       = 7790
	DefaultControlPort         = 7792
	DefaultHeartbeatIntervalMS = 500
	DefaultDeadTimeMS          = 2500
	DefaultStopBoundMS         = 20000
	DefaultWatchdogTimeoutSec  = 30
	DefaultMigrationThreshold  = 3
	DefaultFailureTimeoutSec   = 600
)

// DefaultNFSVersions are the versions served when none are listed.
var DefaultNFSVersions = []string{"3", "4.1", "4.2"}

// DefaultExportOptions apply to an export that lists no options. sync is
// explicit because async acknowledges writes a failover would lose.
var DefaultExportOptions = []string{"rw", "sync", "no_subtree_check"}

// DefaultMonitors are the probe interval and timeout per layer, in ms.
var DefaultMonitors = Monitors{
	VIP:        Monitor{IntervalMS: 2000, TimeoutMS: 1000},
	Link:       Monitor{IntervalMS: 1000, TimeoutMS: 1000},
	AD:         Monitor{IntervalMS: 30000, TimeoutMS: 10000},
	NFS:        Monitor{IntervalMS: 5000, TimeoutMS: 5000},
	SMB:        Monitor{IntervalMS: 5000, TimeoutMS: 5000},
	Filesystem: Monitor{IntervalMS: 10000, TimeoutMS: 10000},
	LVM:        Monitor{IntervalMS: 10000, TimeoutMS: 5000},
	DRBD:       Monitor{IntervalMS: 2000, TimeoutMS: 5000},
}

// fields pairs each layer's key with its field, for defaults and
// checks alike.
func (m *Monitors) fields() []struct {
	key string
	mon *Monitor
} {
	return []struct {
		key string
		mon *Monitor
	}{
		{"vip", &m.VIP}, {"link", &m.Link}, {"ad", &m.AD}, {"nfs", &m.NFS},
		{"smb", &m.SMB}, {"filesystem", &m.Filesystem}, {"lvm", &m.LVM}, {"drbd", &m.DRBD},
	}
}

func (c *Config) has(path string) bool { return c.keys.Has(path) }

func (c *Config) defStr(path string, v *string, def string) {
	if !c.has(path) {
		*v = def
	}
}

func (c *Config) defInt(path string, v *int, def int) {
	if !c.has(path) {
		*v = def
	}
}

func (c *Config) applyDefaults() {
	for i := range c.Nodes {
		r := &c.Nodes[i].Replication
		if !c.has(fmt.Sprintf("node[%d].disks", i)) {
			c.Nodes[i].Disks = append([]string(nil), c.Storage.RAID.Disks...)
		}
		p := fmt.Sprintf("node[%d].replication.", i)
		c.defStr(p+"bond", &r.Bond, DefaultBond)
		c.defStr(p+"mode", &r.Mode, DefaultMode)
		c.defInt(p+"miimon_ms", &r.MIIMonMS, DefaultMIIMonMS)
		c.defInt(p+"mtu", &r.MTU, DefaultMTU)
	}

	s := &c.Storage
	c.defStr("storage.raid.level", &s.RAID.Level, DefaultRAIDLevel)
	c.defInt("storage.raid.chunk_kib", &s.RAID.ChunkKiB, DefaultChunkKiB)
	c.defStr("storage.drbd.resource", &s.DRBD.Resource, DefaultDRBDResource)
	c.defInt("storage.drbd.port", &s.DRBD.Port, DefaultDRBDPort)
	c.defInt("storage.drbd.resync_rate_mib", &s.DRBD.ResyncRateMiB, DefaultResyncRateMiB)
	c.defStr("storage.drbd.protocol", &s.DRBD.Protocol, DefaultProtocol)
	c.defStr("storage.lvm.vg", &s.LVM.VG, DefaultVG)
	c.defStr("storage.lvm.lv", &s.LVM.LV, DefaultLV)
	c.defStr("storage.lvm.size", &s.LVM.Size, DefaultLVSize)
	c.defStr("storage.filesystem.type", &s.Filesystem.Type, DefaultFSType)
	c.defStr("storage.filesystem.mountpoint", &s.Filesystem.Mountpoint, DefaultMountpoint)

	nfs := &c.Services.NFS
	if !c.has("services.nfs.versions") {
		nfs.Versions = append([]string(nil), DefaultNFSVersions...)
	}
	c.defInt("services.nfs.grace_seconds", &nfs.GraceSeconds, DefaultGraceSeconds)
	c.defInt("services.nfs.lease_seconds", &nfs.LeaseSeconds, DefaultLeaseSeconds)
	for i := range nfs.Exports {
		if !c.has(fmt.Sprintf("services.nfs.export[%d].options", i)) {
			nfs.Exports[i].Options = append([]string(nil), DefaultExportOptions...)
		}
	}

	smb := &c.Services.SMB
	c.defStr("services.smb.security", &smb.Security, DefaultSMBSecurity)
	// The NetBIOS name is the pair's one SMB identity on both heads.
	c.defStr("services.smb.netbios_name", &smb.NetBIOSName, strings.ToUpper(c.Pair.Name))
	if !c.has("services.smb.workgroup") {
		if smb.Security == "ads" && c.Services.AD.Domain != "" {
			smb.Workgroup = strings.ToUpper(c.Services.AD.Domain)
		} else {
			smb.Workgroup = "WORKGROUP"
		}
	}

	c.defInt("vip.arp_count", &c.VIP.ARPCount, DefaultARPCount)

	ha := &c.HA
	c.defInt("ha.heartbeat_port", &ha.HeartbeatPort, DefaultHeartbeatPort)
	c.defInt("ha.control_port", &ha.ControlPort, DefaultControlPort)
	c.defInt("ha.heartbeat_interval_ms", &ha.HeartbeatIntervalMS, DefaultHeartbeatIntervalMS)
	c.defInt("ha.dead_time_ms", &ha.DeadTimeMS, DefaultDeadTimeMS)
	c.defInt("ha.stop_bound_ms", &ha.StopBoundMS, DefaultStopBoundMS)
	c.defInt("ha.watchdog_timeout_seconds", &ha.WatchdogTimeoutSeconds, DefaultWatchdogTimeoutSec)
	// A lease of one dead time has run out at the witness by the time
	// the peer finds the holder silent, so the vote adds nothing to a
	// takeover. Losing it costs a head nothing while it sees its peer.
	// It only matters with a witness address.
	if c.Witness.Address != "" {
		c.defInt("witness.lease_ms", &c.Witness.LeaseMS, ha.DeadTimeMS)
	}
	c.defInt("ha.migration_threshold", &ha.MigrationThreshold, DefaultMigrationThreshold)
	c.defInt("ha.failure_timeout_seconds", &ha.FailureTimeoutSeconds, DefaultFailureTimeoutSec)
	defs := DefaultMonitors
	dfs := defs.fields()
	for i, f := range ha.Monitor.fields() {
		p := "ha.monitor." + f.key + "."
		c.defInt(p+"interval_ms", &f.mon.IntervalMS, dfs[i].mon.IntervalMS)
		c.defInt(p+"timeout_ms", &f.mon.TimeoutMS, dfs[i].mon.TimeoutMS)
	}
}
