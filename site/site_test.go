package site

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"tandem.dev/tandem/internal/tomlpos"
)

// base is a small valid config; the bad cases edit it. Keep its line
// numbers stable: the expected messages depend on them.
const base = `version = 1
[pair]
name = "tp"
key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
[[node]]
name = "a"
[node.management]
interface = "eth0"
address = "10.0.0.11/24"
[node.replication]
links = ["eth1", "eth2"]
address = "10.10.0.11/24"
[[node]]
name = "b"
[node.management]
interface = "eth0"
address = "10.0.0.12/24"
[node.replication]
links = ["eth1", "eth2"]
address = "10.10.0.12/24"
[storage.raid]
disks = [
  "serial:d0",
  "serial:d1",
  "serial:d2",
  "serial:d3",
]
[services.nfs]
enabled = true
[[services.nfs.export]]
path = "/srv/tandem/a"
clients = ["10.0.0.0/24"]
fsid = 1
[[services.nfs.export]]
path = "/srv/tandem/b"
clients = ["*"]
fsid = 2
[services.smb]
enabled = true
security = "ads"
[[services.smb.share]]
name = "a"
path = "/srv/tandem/a"
[services.ad]
realm = "CORP.EXAMPLE.COM"
domain = "CORP"
dc = ["10.0.0.5"]
join_user = "join"
join_password_file = "/var/lib/tandem/join.pass"
[vip]
address = "10.0.0.10/24"
[witness]
address = "10.0.0.2:7791"
`

// edit replaces the first occurrence of old with new; an edit that does
// not apply fails the test, so a case cannot silently test the base.
type edit struct{ old, new string }

// comment turns lines into comments, keeping the line count.
func comment(lines string) edit {
	return edit{lines, "#" + strings.ReplaceAll(lines, "\n", "\n#")}
}

func mutate(t *testing.T, doc string, edits []edit) string {
	t.Helper()
	for _, e := range edits {
		if !strings.Contains(doc, e.old) {
			t.Fatalf("edit %q does not apply", e.old)
		}
		doc = strings.Replace(doc, e.old, e.new, 1)
	}
	return doc
}

var node1 = `[[node]]
name = "b"
[node.management]
interface = "eth0"
address = "10.0.0.12/24"
[node.replication]
links = ["eth1", "eth2"]
address = "10.10.0.12/24"`

func TestParseBad(t *testing.T) {
	tests := []struct {
		name   string
		edits  []edit
		append string
		want   string
	}{
		// Decoding: syntax, types, unknown keys.
		{"syntax", []edit{{"version = 1", "version = "}},
			"", `t.toml:1:11: unexpected character U+000A at start of value`},
		{"version type", []edit{{"version = 1", `version = "1"`}},
			"", `t.toml:1:11: version: expected an integer, found a string`},
		{"array element type", []edit{{`links = ["eth1", "eth2"]`, `links = ["eth1", 2]`}},
			"", `t.toml:11:18: node[0].replication.links[1]: expected a string, found an integer`},
		{"fsid type", []edit{{"fsid = 2", "fsid = [2]"}},
			"", `t.toml:37:8: services.nfs.export[1].fsid: expected an integer or a UUID string, found an array`},
		{"unknown key", []edit{{`address = "10.0.0.10/24"`, `adress = "10.0.0.10/24"`}},
			"", `t.toml:51:1: vip.adress: unknown key (misspelt, or not part of site config version 1)`},
		{"unknown key in second node", []edit{{`address = "10.0.0.12/24"`, `addr = "10.0.0.12/24"`}},
			"", `t.toml:17:1: node[1].management.addr: unknown key (misspelt, or not part of site config version 1)`},
		{"unknown table", []edit{{"[witness]", "[witnes]"}},
			"", `t.toml:52:2: witnes: unknown table (misspelt, or not part of site config version 1)`},
		{"key below fsid", []edit{{"fsid = 2", "fsid = { x = 1 }"}},
			"", `t.toml:37:10: services.nfs.export[1].fsid.x: unknown key (misspelt, or not part of site config version 1)`},
		{"table where a value belongs", []edit{{`links = ["eth1", "eth2"]`, `links.first = "eth1"`}},
			"", `t.toml:11:1: node[0].replication.links: expected an array of strings, found a table`},
		{"array of tables where a table belongs", []edit{{"[pair]", "[[pair]]"}},
			"", `t.toml:2:3: pair: is a single table: write [pair], not [[pair]]`},
		{"inline password", []edit{{`join_password_file = "/var/lib/tandem/join.pass"`, `join_password = "hunter2"`}},
			"", `t.toml:49:1: services.ad.join_password: a password must never be written in the site config (it is kept on disk and shown in support bundles); put it in a root-only file and name that file with join_password_file`},
		{"table defined twice", nil, "[vip]\n",
			`t.toml:54:2: vip: table vip already exists`},

		// Version and pair.
		{"version unsupported", []edit{{"version = 1", "version = 2"}},
			"", `t.toml:1:1: version: 2 is not supported; this Tandem reads site config version 1`},
		{"version missing", []edit{comment("version = 1")},
			"", `t.toml:1:1: version: missing; start the file with version = 1`},
		{"pair name", []edit{{`name = "tp"`, `name = "Lab_1"`}},
			"", `t.toml:3:1: pair.name: "Lab_1" is not a valid host name (lowercase letters, digits and '-', 1 to 63 characters, no '-' at either end)`},
		{"pair key short", []edit{{`key = "9f86`, `key = "abcd" # "`}},
			"", `t.toml:4:1: pair.key: decodes to 2 bytes; the pair key needs at least 32 (generate one with: head -c 32 /dev/urandom | base64)`},
		{"pair key garbage", []edit{{`key = "9f86`, `key = "not a key!" # "`}},
			"", `t.toml:4:1: pair.key: not hex or base64`},
		{"pair key placeholder", []edit{{`key = "9f86`, `key = "` + strings.Repeat("00", 32) + `" # "`}},
			"", `t.toml:4:1: pair.key: every byte is the same; this is a placeholder, not a key (generate one with: head -c 32 /dev/urandom | base64)`},
		{"pair key and key_file", []edit{{"[[node]]", "key_file = \"/k\"\n[[node]]"}},
			"", `t.toml:5:1: pair.key_file: set key or key_file, not both`},
		{"pair key missing", []edit{{`key = "9f86`, `# key = "9f86`}},
			"", `t.toml:2:2: pair.key: missing; set key or key_file: heartbeats are authenticated with the pair key`},

		// Nodes.
		{"one node", []edit{comment(node1)},
			"", `t.toml:5:3: node: found 1 [[node]] table; a pair needs exactly two`},
		{"three nodes", nil, "[[node]]\nname = \"c\"\n[node.management]\ninterface = \"eth0\"\naddress = \"10.0.0.13/24\"\n[node.replication]\nlinks = [\"eth1\", \"eth2\"]\naddress = \"10.10.0.13/24\"\n",
			`t.toml:54:3: node[2]: a pair has exactly two heads; this is a third [[node]]`},
		{"duplicate node name", []edit{{`name = "b"`, `name = "a"`}},
			"", `t.toml:14:1: node[1].name: "a" is also the name of node[0]; DRBD and the heartbeat tell the heads apart by name`},
		{"node name", []edit{{`name = "a"`, `name = "Head_A"`}},
			"", `t.toml:6:1: node[0].name: "Head_A" is not a valid host name (lowercase letters, digits and '-', 1 to 63 characters, no '-' at either end)`},
		{"management interface and mac", []edit{{`interface = "eth0"`, `interface = "eth0"` + "\n" + `mac = "52:54:00:00:00:01"`}},
			"", `t.toml:9:1: node[0].management.mac: set interface or mac, not both`},
		{"management without interface", []edit{comment(`interface = "eth0"`)},
			"", `t.toml:7:2: node[0].management.interface: missing; name the management interface, or match it by mac`},
		{"dhcp and address", []edit{{`interface = "eth0"`, `interface = "eth0"` + "\n" + `dhcp = true`}},
			"", `t.toml:10:1: node[0].management.address: dhcp = true and a static address exclude each other`},
		{"address without prefix", []edit{{`address = "10.0.0.11/24"`, `address = "10.0.0.11"`}},
			"", `t.toml:9:1: node[0].management.address: "10.0.0.11" is not an address with prefix length, e.g. 10.0.0.11/24`},
		{"network address", []edit{{`address = "10.0.0.12/24"`, `address = "10.0.0.0/24"`}},
			"", `t.toml:17:1: node[1].management.address: 10.0.0.0 is the network address of 10.0.0.0/24, not a host address`},
		{"gateway outside subnet", []edit{{`address = "10.0.0.11/24"`, `address = "10.0.0.11/24"` + "\n" + `gateway = "10.1.0.1"`}},
			"", `t.toml:10:1: node[0].management.gateway: 10.1.0.1 is not in the management subnet 10.0.0.0/24`},
		{"duplicate management address", []edit{{`address = "10.0.0.12/24"`, `address = "10.0.0.11/24"`}},
			"", `t.toml:17:1: node[1].management.address: 10.0.0.11 is also node[0]'s management address`},

		// Replication.
		{"one link", []edit{{`links = ["eth1", "eth2"]`, `links = ["eth1"]`}},
			"", `t.toml:11:1: node[0].replication.links: needs at least two links, found 1; one link is a single point of failure`},
		{"link twice", []edit{{`links = ["eth1", "eth2"]`, `links = ["eth1", "eth1"]`}},
			"", `t.toml:11:18: node[0].replication.links[1]: "eth1" is also links[0]; a bond of one NIC twice is no redundancy`},
		{"link is management", []edit{{`links = ["eth1", "eth2"]`, `links = ["eth0", "eth2"]`}},
			"", `t.toml:11:10: node[0].replication.links[0]: "eth0" is the management interface; heartbeats need two independent paths`},
		{"bond mode", []edit{{`links = ["eth1", "eth2"]`, `links = ["eth1", "eth2"]` + "\n" + `mode = "balance-rr"`}},
			"", `t.toml:12:1: node[0].replication.mode: "balance-rr" is not supported; only active-backup works over IPoIB and needs no switch support`},
		{"miimon versus dead time", nil, "[ha]\nheartbeat_interval_ms = 50\ndead_time_ms = 150\n",
			"t.toml:10:2: node[0].replication.miimon_ms: 100 ms must be under half of ha.dead_time_ms (150 ms), so a link failover ends before the peer is declared dead\n" +
				"t.toml:18:2: node[1].replication.miimon_ms: 100 ms must be under half of ha.dead_time_ms (150 ms), so a link failover ends before the peer is declared dead"},
		{"replication subnets differ", []edit{{`address = "10.10.0.12/24"`, `address = "10.11.0.12/24"`}},
			"", `t.toml:20:1: node[1].replication.address: 10.11.0.12/24 is not in node[0]'s replication subnet 10.10.0.0/24; DRBD and the heartbeat connect the heads directly`},
		{"replication overlaps management", []edit{{`address = "10.10.0.11/24"`, `address = "10.0.0.200/25"`}},
			"", "t.toml:12:1: node[0].replication.address: 10.0.0.200/25 overlaps node[0]'s management subnet 10.0.0.0/24; heartbeats need two independent paths\n" +
				"t.toml:12:1: node[0].replication.address: 10.0.0.200/25 overlaps node[1]'s management subnet 10.0.0.0/24; heartbeats need two independent paths\n" +
				"t.toml:20:1: node[1].replication.address: 10.10.0.12/24 is not in node[0]'s replication subnet 10.0.0.128/25; DRBD and the heartbeat connect the heads directly"},
		{"arp target outside subnet", []edit{{`address = "10.10.0.11/24"`, `address = "10.10.0.11/24"` + "\n" + `arp_targets = ["10.0.0.12"]`}},
			"", `t.toml:13:16: node[0].replication.arp_targets[0]: 10.0.0.12 is not in the replication subnet 10.10.0.0/24`},
		{"mtu", []edit{{`address = "10.10.0.11/24"`, `address = "10.10.0.11/24"` + "\n" + `mtu = 100`}},
			"", `t.toml:13:1: node[0].replication.mtu: 100 is out of range (576 to 65520)`},
		{"MAC on both heads", []edit{
			{`links = ["eth1", "eth2"]`, `links = ["52:54:00:00:00:01", "52:54:00:00:00:02"]`},
			{`links = ["eth1", "eth2"]`, `links = ["52:54:00:00:00:01", "eth2"]`}},
			"", `t.toml:19:10: node[1].replication.links[0]: 52:54:00:00:00:01 is also node[0].replication.links[0]; every NIC has its own MAC`},

		// Disks.
		{"kernel disk name", []edit{{`"serial:d2"`, `"/dev/sdb"`}},
			"", `t.toml:25:3: storage.raid.disks[2]: "/dev/sdb" is a kernel name, and kernel names follow probe order, which can change between boots; name disks by stable identity (by-id/..., serial:..., wwn:0x...)`},
		{"nvme kernel name", []edit{{`"serial:d0"`, `"/dev/nvme0n1"`}},
			"", `t.toml:23:3: storage.raid.disks[0]: "/dev/nvme0n1" is a kernel name, and kernel names follow probe order, which can change between boots; name disks by stable identity (by-id/..., serial:..., wwn:0x...)`},
		{"odd disk count", []edit{comment(`  "serial:d3",`)},
			"", `t.toml:22:1: storage.raid.disks: RAID10 needs an even number of disks, at least 4; found 3`},
		{"disk twice", []edit{{`"serial:d3"`, `"serial:d1"`}},
			"", `t.toml:26:3: storage.raid.disks[3]: "serial:d1" is also disks[1]; a disk can be a RAID member only once`},
		{"bad wwn", []edit{{`"serial:d3"`, `"wwn:5002"`}},
			"", `t.toml:26:3: storage.raid.disks[3]: "wwn:5002" is not a WWN (wwn:0x and 16 or 32 hex digits)`},
		{"partition", []edit{{`"serial:d3"`, `"by-id/ata-X-part1"`}},
			"", `t.toml:26:3: storage.raid.disks[3]: "by-id/ata-X-part1" names a partition; RAID members are whole disks`},
		{"dev disk by-id", []edit{{`"serial:d3"`, `"/dev/disk/by-id/ata-X"`}},
			"", `t.toml:26:3: storage.raid.disks[3]: "/dev/disk/by-id/ata-X": write it as "by-id/ata-X"`},
		{"node disks twice", []edit{{`name = "a"`, `name = "a"` + "\n" + `disks = ["serial:x0", "serial:x0", "serial:x1", "serial:x2"]`}},
			"", `t.toml:7:23: node[0].disks[1]: "serial:x0" is also disks[0]; a disk can be a RAID member only once`},
		{"no disks", []edit{{"disks = [", "# disks = ["}, {"  \"serial:d0\",\n  \"serial:d1\",\n  \"serial:d2\",\n  \"serial:d3\",\n]", "\n\n\n\n"}},
			"", "t.toml:5:3: node[0].disks: missing; list the RAID10 members in storage.raid.disks (both heads) or in disks for this head\n" +
				"t.toml:13:3: node[1].disks: missing; list the RAID10 members in storage.raid.disks (both heads) or in disks for this head"},

		// Storage stack.
		{"raid level", []edit{{"[storage.raid]", "[storage.raid]\nlevel = \"raid5\""}},
			"", `t.toml:22:1: storage.raid.level: "raid5" is not supported; Tandem builds RAID10 only (no parity to compute, less flash wear)`},
		{"unknown nested table", nil, "[storage.raid.chunk]\n",
			`t.toml:54:2: storage.raid.chunk: unknown table (misspelt, or not part of site config version 1)`},
		{"chunk not power of two", []edit{{"[storage.raid]", "[storage.raid]\nchunk_kib = 100"}},
			"", `t.toml:22:1: storage.raid.chunk_kib: 100 is not a power of two from 4 to 65536`},
		{"drbd protocol", nil, "[storage.drbd]\nprotocol = \"A\"\n",
			`t.toml:55:1: storage.drbd.protocol: "A" is not supported; only protocol C acknowledges a write once both heads have it, so a failover loses nothing`},
		{"drbd port range", nil, "[storage.drbd]\nport = 80\n",
			`t.toml:55:1: storage.drbd.port: 80 is out of range (1024 to 65535)`},
		{"drbd port is nfs", nil, "[storage.drbd]\nport = 2049\n",
			`t.toml:55:1: storage.drbd.port: port 2049 is nfsd's`},
		{"heartbeat port collides with drbd", nil, "[ha]\nheartbeat_port = 7789\n",
			`t.toml:55:1: ha.heartbeat_port: port 7789 is also storage.drbd.port; each channel needs its own port`},
		{"control port collides with heartbeat", nil, "[ha]\ncontrol_port = 7790\n",
			`t.toml:55:1: ha.control_port: port 7790 is also ha.heartbeat_port; each channel needs its own port`},
		{"control port range", nil, "[ha]\ncontrol_port = 22\n",
			`t.toml:55:1: ha.control_port: 22 is out of range (1024 to 65535)`},
		{"witness port collides with drbd", []edit{{"10.0.0.2:7791", "10.0.0.2:7789"}},
			"", `t.toml:53:1: witness.address: port 7789 is also storage.drbd.port; each channel needs its own port`},
		{"lv size", nil, "[storage.lvm]\nsize = \"0G\"\n",
			`t.toml:55:1: storage.lvm.size: "0G" is not a size (e.g. 800G, 1.5T) or a share of the free space (e.g. 100%FREE)`},
		{"vg name", nil, "[storage.lvm]\nvg = \"-vg\"\n",
			`t.toml:55:1: storage.lvm.vg: "-vg" is not a valid LVM name (letters, digits, +_.-, not starting with '-')`},
		{"filesystem type", nil, "[storage.filesystem]\ntype = \"ext4\"\n",
			`t.toml:55:1: storage.filesystem.type: "ext4" is not supported; Tandem runs XFS`},
		{"mountpoint", nil, "[storage.filesystem]\nmountpoint = \"/etc\"\n",
			`t.toml:55:1: storage.filesystem.mountpoint: "/etc" is a system directory; mount the data elsewhere, e.g. /srv/tandem`},

		// NFS.
		{"mountpoint outside /srv", nil, "[storage.filesystem]\nmountpoint = \"/data\"\n",
			`t.toml:55:1: storage.filesystem.mountpoint: "/data" is not below /srv, the only place on the read-only root where data mounts can be made, e.g. /srv/tandem`},
		{"export outside mountpoint", []edit{{`path = "/srv/tandem/b"`, `path = "/data/b"`}},
			"", `t.toml:35:1: services.nfs.export[1].path: "/data/b" is not under storage.filesystem.mountpoint "/srv/tandem"; only the replicated filesystem follows a failover`},
		{"export in state dir", []edit{{`path = "/srv/tandem/b"`, `path = "/srv/tandem/.tandem/nfs"`}},
			"", `t.toml:35:1: services.nfs.export[1].path: "/srv/tandem/.tandem/nfs" is inside /srv/tandem/.tandem, which holds the pair's NFS and Samba state`},
		{"export covers state dir", []edit{{`path = "/srv/tandem/b"`, `path = "/srv/tandem"`}},
			"", `t.toml:35:1: services.nfs.export[1].path: "/srv/tandem" covers /srv/tandem/.tandem, which holds the pair's NFS and Samba state; name a directory below the mountpoint`},
		{"export path not clean", []edit{{`path = "/srv/tandem/b"`, `path = "/srv/tandem/b/"`}},
			"", `t.toml:35:1: services.nfs.export[1].path: "/srv/tandem/b/" is not an absolute, clean path`},
		{"export path twice", []edit{{`path = "/srv/tandem/b"`, `path = "/srv/tandem/a"`}},
			"", `t.toml:35:1: services.nfs.export[1].path: "/srv/tandem/a" is also exported by export[0]; list all its clients in one export`},
		{"fsid twice", []edit{{"fsid = 2", "fsid = 1"}},
			"", `t.toml:37:1: services.nfs.export[1].fsid: 1 is also the fsid of export[0]; file handles must name one export, or clients reach the wrong one after a failover`},
		{"fsid twice, spelt differently", []edit{{"fsid = 2", `fsid = "0x1"`}},
			"", `t.toml:37:1: services.nfs.export[1].fsid: 1 is also the fsid of export[0]; file handles must name one export, or clients reach the wrong one after a failover`},
		{"fsid missing", []edit{comment("fsid = 2")},
			"", `t.toml:34:3: services.nfs.export[1].fsid: missing; every export needs a fixed fsid, or clients get stale file handles after a failover`},
		{"fsid zero", []edit{{"fsid = 2", "fsid = 0"}},
			"", `t.toml:37:1: services.nfs.export[1].fsid: 0 marks the NFSv4 pseudo-root; use 1 or more`},
		{"fsid word", []edit{{"fsid = 2", `fsid = "abc"`}},
			"", `t.toml:37:1: services.nfs.export[1].fsid: "abc" is neither an integer nor a UUID`},
		{"fsid float", []edit{{"fsid = 2", "fsid = 1.5"}},
			"", `t.toml:37:1: services.nfs.export[1].fsid: "1.5" is neither an integer nor a UUID`},
		{"fsid too large", []edit{{"fsid = 2", "fsid = 4_294_967_296"}},
			"", `t.toml:37:1: services.nfs.export[1].fsid: 4294967296 is out of range (1 to 4294967295)`},
		{"async export", []edit{{`clients = ["*"]`, `clients = ["*"]` + "\n" + `options = ["rw", "async"]`}},
			"", `t.toml:37:18: services.nfs.export[1].options[1]: async acknowledges writes before they are on disk, so a failover loses them; use sync`},
		{"rw and ro", []edit{{`clients = ["*"]`, `clients = ["*"]` + "\n" + `options = ["rw", "sync", "ro"]`}},
			"", `t.toml:37:26: services.nfs.export[1].options[2]: "ro" contradicts "rw"`},
		{"fsid in options", []edit{{`clients = ["*"]`, `clients = ["*"]` + "\n" + `options = ["fsid=7"]`}},
			"", `t.toml:37:12: services.nfs.export[1].options[0]: set the id with the export's fsid key, not in options`},
		{"client with options", []edit{{`clients = ["*"]`, `clients = ["10.0.0.0/24(rw)"]`}},
			"", `t.toml:36:12: services.nfs.export[1].clients[0]: "10.0.0.0/24(rw)": put export options in options, not after the client`},
		{"no clients", []edit{{`clients = ["*"]`, `clients = []`}},
			"", `t.toml:36:1: services.nfs.export[1].clients: missing; list the clients allowed to mount (host, IP, CIDR, @netgroup or *)`},
		{"nfs v4.0", []edit{{"enabled = true", "enabled = true\nversions = [\"3\", \"4.0\"]"}},
			"", `t.toml:30:18: services.nfs.versions[1]: "4.0" is not supported; NFSv4.0 has no sessions, so clients recover slowly after a failover; use 4.1 or 4.2`},
		{"grace too short", []edit{{"enabled = true", "enabled = true\ngrace_seconds = 5"}},
			"", `t.toml:30:1: services.nfs.grace_seconds: 5 s is out of range (10 to 90 s); the kernel takes no less than 10 s, and more only lengthens the pause after a failover`},
		{"grace shorter than lease", []edit{{"enabled = true", "enabled = true\ngrace_seconds = 10\nlease_seconds = 20"}},
			"", `t.toml:30:1: services.nfs.grace_seconds: 10 s is shorter than lease_seconds (20 s); clients need a full lease period to reclaim their state`},

		// SMB and AD.
		{"share name", []edit{{`name = "a"` + "\npath", `name = "a/b"` + "\npath"}},
			"", `t.toml:42:1: services.smb.share[0].name: "a/b" is not a valid share name (1 to 80 characters, none of \/:*?"<>|[]+=;,%)`},
		{"share name reserved", []edit{{`name = "a"` + "\npath", `name = "Homes"` + "\npath"}},
			"", `t.toml:42:1: services.smb.share[0].name: "Homes" is reserved by Samba`},
		{"share name twice", nil, "[[services.smb.share]]\nname = \"A\"\npath = \"/srv/tandem/b\"\n",
			`t.toml:55:1: services.smb.share[1].name: "A" is also the name of share[0] (share names ignore case)`},
		{"share outside mountpoint", []edit{{`path = "/srv/tandem/a"` + "\n[services.ad]", `path = "/srv/other"` + "\n[services.ad]"}},
			"", `t.toml:43:1: services.smb.share[0].path: "/srv/other" is not under storage.filesystem.mountpoint "/srv/tandem"; only the replicated filesystem follows a failover`},
		{"valid_users comma", []edit{{`path = "/srv/tandem/a"` + "\n[services.ad]", `path = "/srv/tandem/a"` + "\nvalid_users = [\"a,b\"]\n[services.ad]"}},
			"", `t.toml:44:16: services.smb.share[0].valid_users[0]: "a,b" is not a user or @group name`},
		{"smb security", []edit{{`security = "ads"`, `security = "domain"`}},
			"", `t.toml:40:1: services.smb.security: "domain" is not supported (ads or user)`},
		{"ads without realm", []edit{comment(`realm = "CORP.EXAMPLE.COM"`)},
			"", `t.toml:44:2: services.ad.realm: missing; services.smb uses security = "ads", which needs the AD realm`},
		{"ads without dc", []edit{{`dc = ["10.0.0.5"]`, `dc = []`}},
			"", `t.toml:47:1: services.ad.dc: missing; services.smb uses security = "ads", which needs at least one domain controller`},
		{"ads without password file", []edit{comment(`join_password_file = "/var/lib/tandem/join.pass"`)},
			"", `t.toml:44:2: services.ad.join_password_file: missing; services.smb uses security = "ads", which needs the file holding the join password`},
		{"workgroup differs from domain", []edit{{`security = "ads"`, `security = "ads"` + "\n" + `workgroup = "OTHER"`}},
			"", `t.toml:41:1: services.smb.workgroup: "OTHER" differs from services.ad.domain "CORP"; with security = "ads" the workgroup is the domain's NetBIOS name`},
		{"netbios name from long pair name", []edit{{`name = "tp"`, `name = "a-very-long-pair-name"`}},
			"", `t.toml:38:2: services.smb.netbios_name: missing; the pair name "a-very-long-pair-name" does not make a NetBIOS name (at most 15 characters), so set one`},
		{"realm", []edit{{`realm = "CORP.EXAMPLE.COM"`, `realm = "corp example"`}},
			"", `t.toml:45:1: services.ad.realm: "corp example" is not a DNS domain, e.g. CORP.EXAMPLE.COM`},
		{"password file relative", []edit{{`"/var/lib/tandem/join.pass"`, `"join.pass"`}},
			"", `t.toml:49:1: services.ad.join_password_file: "join.pass" is not an absolute, clean path`},

		// VIP.
		{"vip is a node address", []edit{{`address = "10.0.0.10/24"`, `address = "10.0.0.11/24"`}},
			"", `t.toml:51:1: vip.address: 10.0.0.11 is also node[0]'s management address; the VIP must be an address of its own, as it moves between the heads`},
		{"vip outside service subnet", []edit{{`address = "10.0.0.10/24"`, `address = "10.1.0.10/24"`}},
			"", "t.toml:51:1: vip.address: 10.1.0.10/24 does not match node[0]'s service subnet 10.0.0.0/24 (its management network, which carries the VIP); use an address and prefix length of that subnet\n" +
				"t.toml:51:1: vip.address: 10.1.0.10/24 does not match node[1]'s service subnet 10.0.0.0/24 (its management network, which carries the VIP); use an address and prefix length of that subnet"},
		{"vip prefix length", []edit{{`address = "10.0.0.10/24"`, `address = "10.0.0.10/16"`}},
			"", "t.toml:51:1: vip.address: 10.0.0.10/16 does not match node[0]'s service subnet 10.0.0.0/24 (its management network, which carries the VIP); use an address and prefix length of that subnet\n" +
				"t.toml:51:1: vip.address: 10.0.0.10/16 does not match node[1]'s service subnet 10.0.0.0/24 (its management network, which carries the VIP); use an address and prefix length of that subnet"},
		{"vip in replication subnet", []edit{{`address = "10.0.0.10/24"`, `address = "10.10.0.10/24"` + "\n" + `interface = "eth3"`}},
			"", "t.toml:51:1: vip.address: 10.10.0.10 lies in node[0]'s replication subnet 10.10.0.0/24; the VIP belongs on the service network\n" +
				"t.toml:51:1: vip.address: 10.10.0.10 lies in node[1]'s replication subnet 10.10.0.0/24; the VIP belongs on the service network"},
		{"vip on replication link", []edit{{`address = "10.0.0.10/24"`, `address = "10.0.0.10/24"` + "\n" + `interface = "eth1"`}},
			"", "t.toml:52:1: vip.interface: \"eth1\" is part of node[0]'s replication bond; the VIP belongs on the service network\n" +
				"t.toml:52:1: vip.interface: \"eth1\" is part of node[1]'s replication bond; the VIP belongs on the service network"},
		{"vip missing", []edit{comment(`address = "10.0.0.10/24"`)},
			"", `t.toml:50:2: vip.address: missing; clients reach the pair only through the virtual IP`},
		{"arp count", []edit{{`address = "10.0.0.10/24"`, `address = "10.0.0.10/24"` + "\n" + `arp_count = 0`}},
			"", `t.toml:52:1: vip.arp_count: 0 is out of range (1 to 30)`},

		// HA and witness.
		{"dead time", nil, "[ha]\nheartbeat_interval_ms = 1000\ndead_time_ms = 2000\n",
			`t.toml:56:1: ha.dead_time_ms: 2000 ms must be more than twice heartbeat_interval_ms (1000 ms), or one late heartbeat declares the peer dead`},
		{"monitor timeout", nil, "[ha.monitor.nfs]\ntimeout_ms = 50\n",
			`t.toml:55:1: ha.monitor.nfs.timeout_ms: 50 ms is out of range (100 to 600000 ms)`},
		{"migration threshold", nil, "[ha]\nmigration_threshold = 0\n",
			`t.toml:55:1: ha.migration_threshold: 0 is out of range (1 to 100)`},
		{"stop bound", nil, "[ha]\nstop_bound_ms = 500\n",
			`t.toml:55:1: ha.stop_bound_ms: 500 ms is out of range (1000 to 600000 ms); it must really bound stopping the active stack (VIP, NFS, unmount, LVM, DRBD demote)`},
		{"watchdog timeout", nil, "[ha]\nwatchdog_timeout_seconds = 1\n",
			`t.toml:55:1: ha.watchdog_timeout_seconds: 1 s is out of range (2 to 600 s); the board resets a head that stops petting its watchdog for this long`},
		{"witness lease out of range", nil, "lease_ms = 100\n",
			`t.toml:54:1: witness.lease_ms: 100 ms is out of range (500 to 600000 ms)`},
		{"witness lease under two intervals", nil, "lease_ms = 800\n",
			`t.toml:54:1: witness.lease_ms: 800 ms must be more than twice ha.heartbeat_interval_ms (500 ms): the holder renews its lease every interval`},
		{"lease with a ping target", []edit{{`address = "10.0.0.2:7791"`, `ping_target = "10.0.0.1"`}}, "lease_ms = 6000\n",
			`t.toml:54:1: witness.lease_ms: a ping target grants no lease; lease_ms applies to a witness address only`},
		{"witness missing", []edit{comment(`address = "10.0.0.2:7791"`)},
			"", `t.toml:52:2: witness: missing; set address (a tandem witness on a third host) or ping_target: a head takes over only with a tiebreaker vote`},
		{"witness and ping target", nil, "ping_target = \"10.0.0.1\"\n",
			`t.toml:54:1: witness.ping_target: set address or ping_target, not both`},
		{"witness on a head", []edit{{"10.0.0.2:7791", "10.0.0.12:7791"}},
			"", `t.toml:53:1: witness.address: 10.0.0.12 is node[1]'s management address; a tiebreaker on one of the heads cannot break a tie between them`},
		{"witness without port", []edit{{"10.0.0.2:7791", "10.0.0.2"}},
			"", `t.toml:53:1: witness.address: "10.0.0.2" is not host:port, e.g. 192.0.2.5:7791`},
		{"ping target is the vip", []edit{{`address = "10.0.0.2:7791"`, `ping_target = "10.0.0.10"`}},
			"", `t.toml:53:1: witness.ping_target: 10.0.0.10 is the VIP; a tiebreaker on one of the heads cannot break a tie between them`},

		// Everything missing at once, sorted by position then path.
		{"empty file", []edit{{base, ""}}, "",
			"t.toml:1:1: node: missing; a pair needs exactly two [[node]] tables\n" +
				"t.toml:1:1: pair.key: missing; set key or key_file: heartbeats are authenticated with the pair key\n" +
				"t.toml:1:1: pair.name: missing; the pair name is also the NFSv4 server scope both heads must share\n" +
				"t.toml:1:1: version: missing; start the file with version = 1\n" +
				"t.toml:1:1: vip.address: missing; clients reach the pair only through the virtual IP\n" +
				"t.toml:1:1: witness: missing; set address (a tandem witness on a third host) or ping_target: a head takes over only with a tiebreaker vote"},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d bad cases", len(tests))
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate case name %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			doc := mutate(t, base, tt.edits) + tt.append
			cfg, err := Parse("t.toml", []byte(doc))
			if err == nil {
				t.Fatalf("Parse succeeded, want:\n%s", tt.want)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
			checkPositioned(t, "t.toml", err)
		})
	}
}

// checkPositioned asserts that err is an *Error or ValidationErrors and
// that every line names file:line:col.
func checkPositioned(t *testing.T, file string, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%T is not an *Error", err)
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:[1-9][0-9]*:[1-9][0-9]*: `)
	var verrs ValidationErrors
	if errors.As(err, &verrs) {
		for _, e := range verrs {
			if !re.MatchString(e.Error()) {
				t.Errorf("unpositioned: %q", e.Error())
			}
		}
		return
	}
	if !re.MatchString(err.Error()) {
		t.Errorf("unpositioned: %q", err.Error())
	}
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name   string
		edits  []edit
		append string
		check  func(t *testing.T, c *Config)
	}{
		{"base with defaults", nil, "", func(t *testing.T, c *Config) {
			want := map[string]any{
				"drbd port":     c.Storage.DRBD.Port == DefaultDRBDPort,
				"drbd protocol": c.Storage.DRBD.Protocol == "C",
				"raid level":    c.Storage.RAID.Level == "raid10",
				"grace":         c.Services.NFS.GraceSeconds == 15,
				"lease":         c.Services.NFS.LeaseSeconds == 15,
				"versions":      reflect.DeepEqual(c.Services.NFS.Versions, []string{"3", "4.1", "4.2"}),
				"options":       reflect.DeepEqual(c.Services.NFS.Exports[0].Options, DefaultExportOptions),
				"bond":          c.Nodes[1].Replication.Bond == "bond0",
				"mode":          c.Nodes[1].Replication.Mode == "active-backup",
				"miimon":        c.Nodes[0].Replication.MIIMonMS == 100,
				"mountpoint":    c.Storage.Filesystem.Mountpoint == "/srv/tandem",
				"workgroup":     c.Services.SMB.Workgroup == "CORP",
				"netbios":       c.Services.SMB.NetBIOSName == "TP",
				"arp count":     c.VIP.ARPCount == 5,
				"dead time":     c.HA.DeadTimeMS == 2500,
				"stop bound":    c.HA.StopBoundMS == DefaultStopBoundMS,
				"witness lease": c.Witness.LeaseMS == 2500,
				"monitor":       c.HA.Monitor == DefaultMonitors,
				"no consent":    !c.Storage.RAID.CreateIfBlank && !c.Storage.Filesystem.MkfsIfBlank,
				"no shell":      !c.Diagnostics.RescueShell,
				"shared disks":  reflect.DeepEqual(c.Nodes[1].Disks, c.Storage.RAID.Disks),
				"fsid":          c.Services.NFS.Exports[1].FSID.String() == "2",
			}
			for k, ok := range want {
				if ok != true {
					t.Errorf("%s: not as expected", k)
				}
			}
		}},
		{"ha timing", nil, "lease_ms = 6000\n[ha]\ndead_time_ms = 4000\nstop_bound_ms = 8000\nwatchdog_timeout_seconds = 6\n", func(t *testing.T, c *Config) {
			if c.Witness.LeaseMS != 6000 || c.HA.StopBoundMS != 8000 || c.HA.DeadTimeMS != 4000 || c.HA.WatchdogTimeoutSeconds != 6 {
				t.Errorf("witness %+v, ha %+v", c.Witness, c.HA)
			}
		}},
		{"lease follows the dead time", nil, "[ha]\ndead_time_ms = 4000\n", func(t *testing.T, c *Config) {
			if c.HA.WatchdogTimeoutSeconds != DefaultWatchdogTimeoutSec {
				t.Errorf("watchdog timeout %d s, want the default", c.HA.WatchdogTimeoutSeconds)
			}
			if c.Witness.LeaseMS != 4000 {
				t.Errorf("lease %d ms, want the dead time", c.Witness.LeaseMS)
			}
		}},
		{"dhcp management", []edit{{`address = "10.0.0.12/24"`, `dhcp = true`}}, "", func(t *testing.T, c *Config) {
			if !c.Nodes[1].Management.DHCP || c.Nodes[1].Management.Prefix().IsValid() {
				t.Errorf("management = %+v", c.Nodes[1].Management)
			}
		}},
		{"management by mac, vip elsewhere", []edit{
			{`interface = "eth0"`, `mac = "52:54:00:AA:00:01"`},
			{`address = "10.0.0.10/24"`, `address = "192.168.5.10/24"` + "\n" + `interface = "eth3"`}}, "", func(t *testing.T, c *Config) {
			if c.VIP.Prefix().String() != "192.168.5.10/24" || c.VIP.Interface != "eth3" {
				t.Errorf("vip = %+v", c.VIP)
			}
		}},
		{"uuid fsid normalized", []edit{{"fsid = 2", `fsid = "6F1C2A4E8B0D4A579E432D7C1B5A9F10"`}}, "", func(t *testing.T, c *Config) {
			if got := c.Services.NFS.Exports[1].FSID.String(); got != "6f1c2a4e-8b0d-4a57-9e43-2d7c1b5a9f10" {
				t.Errorf("fsid = %q", got)
			}
		}},
		{"hex fsid", []edit{{"fsid = 2", "fsid = 0x2a"}}, "", func(t *testing.T, c *Config) {
			if got := c.Services.NFS.Exports[1].FSID.String(); got != "42" {
				t.Errorf("fsid = %q", got)
			}
		}},
		{"per-node disks override", []edit{{`name = "b"`, `name = "b"` + "\n" + `disks = ["by-id/x1", "by-id/x2", "wwn:0x5002538E40A10004", "by-id/x4"]`}}, "", func(t *testing.T, c *Config) {
			if got := c.Node("b").Disks; len(got) != 4 || got[0] != "by-id/x1" {
				t.Errorf("disks = %v", got)
			}
			if got := c.Node("a").Disks; got[0] != "serial:d0" {
				t.Errorf("disks = %v", got)
			}
		}},
		{"smb user security needs no AD", []edit{
			{`security = "ads"`, `security = "user"`},
			comment("[services.ad]\nrealm = \"CORP.EXAMPLE.COM\"\ndomain = \"CORP\"\ndc = [\"10.0.0.5\"]\njoin_user = \"join\"\njoin_password_file = \"/var/lib/tandem/join.pass\"")}, "", func(t *testing.T, c *Config) {
			if c.Services.SMB.Workgroup != "WORKGROUP" {
				t.Errorf("workgroup = %q", c.Services.SMB.Workgroup)
			}
		}},
		{"ping target witness", []edit{{`address = "10.0.0.2:7791"`, `ping_target = "10.0.0.1"`}}, "", func(t *testing.T, c *Config) {
			if c.Witness.PingTarget != "10.0.0.1" {
				t.Errorf("witness = %+v", c.Witness)
			}
		}},
		{"ipv6", []edit{
			{`address = "10.0.0.11/24"`, `address = "2001:db8::11/64"`},
			{`address = "10.0.0.12/24"`, `address = "2001:db8::12/64"`},
			{`clients = ["10.0.0.0/24"]`, `clients = ["2001:db8::/64"]`},
			{`address = "10.0.0.10/24"`, `address = "2001:db8::10/64"`},
			{`"10.0.0.2:7791"`, `"[2001:db8::2]:7791"`}}, "", func(t *testing.T, c *Config) {
			if !c.VIP.Prefix().Addr().Is6() {
				t.Errorf("vip = %v", c.VIP.Prefix())
			}
		}},
		{"inline tables", []edit{{"version = 1", "version = 1\nwitness = { address = \"10.0.0.2:7791\" }"}, comment("[witness]\naddress = \"10.0.0.2:7791\"")}, "", func(t *testing.T, c *Config) {
			if line, col, ok := c.Position("witness.address"); !ok || line != 2 || col != 13 {
				t.Errorf("witness.address at %d:%d (%v)", line, col, ok)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("t.toml", []byte(mutate(t, base, tt.edits)+tt.append))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestExamples(t *testing.T) {
	for _, f := range []string{"../configs/site.example.toml", "../configs/site.lab.toml"} {
		t.Run(f, func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatalf("%v", err)
			}
			if len(c.Nodes) != 2 || c.Peer(c.Nodes[0].Name) != &c.Nodes[1] {
				t.Errorf("nodes = %+v", c.Nodes)
			}
		})
	}
	c, err := Load("../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Node("head-a") == nil || c.Node("head-b") == nil {
		t.Errorf("lab nodes are %q and %q, want head-a and head-b", c.Nodes[0].Name, c.Nodes[1].Name)
	}
}

// TestExampleDocumentsEveryKey walks the schema and requires each key to
// be set in site.example.toml or shown there as a commented assignment.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../configs/site.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := tomlpos.IndexKeys(data)
	written := map[string]bool{}
	for path := range keys.All() {
		written[tomlpos.Unindexed(path)] = true
	}
	if len(schema) < 90 {
		t.Fatalf("schema has only %d keys", len(schema))
	}
	for path, kind := range schema {
		if kind == table || written[path] {
			continue
		}
		leaf := path[strings.LastIndex(path, ".")+1:]
		if !regexp.MustCompile(`(?m)^#\s*` + regexp.QuoteMeta(leaf) + `\s*=`).Match(data) {
			t.Errorf("site.example.toml does not document %s", path)
		}
	}
}

func TestNodeAndPeer(t *testing.T) {
	c, err := Parse("t.toml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		node, peer string // "" means nil
	}{
		{"a", "a", "b"},
		{"b", "b", "a"},
		{"c", "", ""},
		{"", "", ""},
	}
	name := func(n *Node) string {
		if n == nil {
			return ""
		}
		return n.Name
	}
	for _, tt := range tests {
		if got := name(c.Node(tt.name)); got != tt.node {
			t.Errorf("Node(%q) = %q, want %q", tt.name, got, tt.node)
		}
		if got := name(c.Peer(tt.name)); got != tt.peer {
			t.Errorf("Peer(%q) = %q, want %q", tt.name, got, tt.peer)
		}
	}
}

func TestPosition(t *testing.T) {
	c, err := Parse("t.toml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path      string
		line, col int
		ok        bool
	}{
		{"version", 1, 1, true},
		{"node[1].management.address", 17, 1, true},
		{"node[1].replication.links[1]", 19, 18, true},
		{"storage.raid.disks[3]", 26, 3, true},
		{"services.nfs.export[1]", 34, 3, true},
		{"services.nfs.export[1].fsid", 37, 1, true},
		{"storage.drbd.port", 21, 2, false},       // defaulted: nearest is [storage.raid]'s "storage"
		{"node[1].replication.mtu", 18, 2, false}, // defaulted: its table
		{"ha.dead_time_ms", 1, 1, false},
	}
	for _, tt := range tests {
		line, col, ok := c.Position(tt.path)
		if line != tt.line || col != tt.col || ok != tt.ok {
			t.Errorf("Position(%q) = %d:%d %v, want %d:%d %v", tt.path, line, col, ok, tt.line, tt.col, tt.ok)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load("testdata/does-not-exist.toml"); err == nil || !strings.Contains(err.Error(), "does-not-exist.toml") {
		t.Errorf("Load(missing) = %v", err)
	}
	big := make([]byte, MaxSize+1)
	_, err := Parse("big.toml", big)
	if err == nil || err.Error() != "big.toml:1:1: file is larger than 1048576 bytes; a site config is a few KiB" {
		t.Errorf("Parse(big) = %v", err)
	}
}

func TestDecodeKey(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		fail bool
	}{
		{strings.Repeat("0123456789abcdef", 4), 32, false},
		{"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", 32, false},
		{"n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg", 32, false},
		{"  n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\n", 32, false},
		{strings.Repeat("ab", 31), 0, true},
		{"", 0, true},
		{"%%%", 0, true},
	}
	for _, tt := range tests {
		k, err := DecodeKey(tt.in)
		if (err != nil) != tt.fail || len(k) != tt.n {
			t.Errorf("DecodeKey(%q) = %d bytes, %v", tt.in, len(k), err)
		}
	}
}
