package site

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// validator collects every semantic problem; cross-checks use the facts
// the field checks parsed, and skip what failed to parse so one mistake
// is reported once.
type validator struct {
	c    *Config
	errs ValidationErrors

	mgmt []netip.Prefix // per node; zero if DHCP or invalid
	repl []netip.Prefix // per node; zero if invalid
	vip  netip.Prefix
}

func (c *Config) validate() ValidationErrors {
	v := &validator{c: c}
	v.version()
	v.pair()
	v.nodes()
	v.storage()
	v.nfs()
	v.smb()
	v.vipCheck()
	v.ha()
	v.witnessAndPorts()
	v.errs.sort()
	return v.errs
}

func (v *validator) add(path string, format string, args ...any) {
	p, _ := v.c.lookup(path)
	v.errs = append(v.errs, &Error{File: v.c.file, Line: p.Line, Col: p.Col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) addErr(path string, err error) {
	if err != nil {
		v.add(path, "%s", err)
	}
}

func (v *validator) has(path string) bool { return v.c.has(path) }

func (v *validator) version() {
	switch {
	case !v.has("version"):
		v.add("version", "missing; start the file with version = %d", Version)
	case v.c.Version != Version:
		v.add("version", "%d is not supported; this Tandem reads site config version %d", v.c.Version, Version)
	}
}

func (v *validator) pair() {
	p := v.c.Pair
	if p.Name == "" {
		v.add("pair.name", "missing; the pair name is also the NFSv4 server scope both heads must share")
	} else {
		v.addErr("pair.name", checkHostname(p.Name))
	}
	switch {
	case v.has("pair.key") && v.has("pair.key_file"):
		v.add("pair.key_file", "set key or key_file, not both")
	case v.has("pair.key"):
		if _, err := DecodeKey(p.Key); err != nil {
			v.add("pair.key", "%s", err)
		}
	case v.has("pair.key_file"):
		v.addErr("pair.key_file", checkAbsPath(p.KeyFile))
	default:
		v.add("pair.key", "missing; set key or key_file: heartbeats are authenticated with the pair key")
	}
}

func (v *validator) nodes() {
	c := v.c
	n := len(c.Nodes)
	v.mgmt = make([]netip.Prefix, n)
	v.repl = make([]netip.Prefix, n)
	switch {
	case n == 0:
		v.add("node", "missing; a pair needs exactly two [[node]] tables")
	case n == 1:
		v.add("node", "found 1 [[node]] table; a pair needs exactly two")
	}
	for i := 2; i < n; i++ {
		v.add(fmt.Sprintf("node[%d]", i), "a pair has exactly two heads; this is a third [[node]]")
	}
	for i := range c.Nodes {
		v.node(i)
	}
	v.sharedDisks()

	names := map[string]int{}
	mgmtAddrs := map[netip.Addr]int{}
	replAddrs := map[netip.Addr]int{}
	for i, nd := range c.Nodes {
		np := fmt.Sprintf("node[%d]", i)
		if j, ok := names[nd.Name]; ok && nd.Name != "" {
			v.add(np+".name", "%q is also the name of node[%d]; DRBD and the heartbeat tell the heads apart by name", nd.Name, j)
		} else {
			names[nd.Name] = i
		}
		if a := v.mgmt[i].Addr(); a.IsValid() {
			if j, ok := mgmtAddrs[a]; ok {
				v.add(np+".management.address", "%s is also node[%d]'s management address", a, j)
			} else {
				mgmtAddrs[a] = i
			}
		}
		if a := v.repl[i].Addr(); a.IsValid() {
			if j, ok := replAddrs[a]; ok {
				v.add(np+".replication.address", "%s is also node[%d]'s replication address", a, j)
			} else {
				replAddrs[a] = i
			}
		}
	}
	if n >= 2 {
		a, b := v.repl[0], v.repl[1]
		if a.IsValid() && b.IsValid() && a.Masked() != b.Masked() {
			v.add("node[1].replication.address", "%s is not in node[0]'s replication subnet %s; DRBD and the heartbeat connect the heads directly", b, a.Masked())
		}
	}
	// Heartbeats need two independent paths: a replication subnet that
	// overlaps a management subnet would route both over one.
	// Only the pair itself: a third node is already an error, and pairwise
	// checks over many nodes would be quadratic on a hostile file.
	pair := min(n, 2)
	for i := 0; i < pair; i++ {
		for j := 0; j < pair; j++ {
			r, m := v.repl[i], v.mgmt[j]
			if r.IsValid() && m.IsValid() && r.Overlaps(m) {
				v.add(fmt.Sprintf("node[%d].replication.address", i), "%s overlaps node[%d]'s management subnet %s; heartbeats need two independent paths", r, j, m.Masked())
			}
		}
	}
	v.uniqueMACs()
}

func (v *validator) node(i int) {
	nd := &v.c.Nodes[i]
	np := fmt.Sprintf("node[%d]", i)
	if nd.Name == "" {
		v.add(np+".name", "missing; name the head by its host name")
	} else {
		v.addErr(np+".name", checkHostname(nd.Name))
	}

	m := nd.Management
	mp := np + ".management"
	switch {
	case m.Interface != "" && m.MAC != "":
		v.add(mp+".mac", "set interface or mac, not both")
	case m.Interface != "":
		v.addErr(mp+".interface", checkIfName(m.Interface))
	case m.MAC != "":
		_, err := checkMAC(m.MAC)
		v.addErr(mp+".mac", err)
	default:
		v.add(mp+".interface", "missing; name the management interface, or match it by mac")
	}
	if m.DHCP {
		if v.has(mp + ".address") {
			v.add(mp+".address", "dhcp = true and a static address exclude each other")
		}
		if v.has(mp + ".gateway") {
			v.add(mp+".gateway", "dhcp = true takes the gateway from DHCP; remove gateway")
		}
	} else if m.Address == "" {
		v.add(mp+".address", "missing; set a static address with prefix length (e.g. 10.0.0.11/24) or dhcp = true")
	} else if p, err := checkHostPrefix(m.Address); err != nil {
		v.add(mp+".address", "%s", err)
	} else {
		v.mgmt[i] = p
		if m.Gateway != "" {
			if gw, err := checkAddr(m.Gateway); err != nil {
				v.add(mp+".gateway", "%s", err)
			} else if !p.Contains(gw) {
				v.add(mp+".gateway", "%s is not in the management subnet %s", gw, p.Masked())
			} else if gw == p.Addr() {
				v.add(mp+".gateway", "%s is this head's own address", gw)
			}
		}
	}
	for j, d := range m.DNS {
		_, err := checkAddr(d)
		v.addErr(fmt.Sprintf("%s.dns[%d]", mp, j), err)
	}

	v.replication(i)
	if v.has(np + ".disks") {
		v.disks(np+".disks", nd.Disks)
	} else if !v.has("storage.raid.disks") {
		v.add(np+".disks", "missing; list the RAID10 members in storage.raid.disks (both heads) or in disks for this head")
	}
}

func (v *validator) replication(i int) {
	nd := &v.c.Nodes[i]
	r := nd.Replication
	rp := fmt.Sprintf("node[%d].replication", i)

	v.addErr(rp+".bond", checkIfName(r.Bond))
	if r.Mode != "active-backup" {
		v.add(rp+".mode", "%q is not supported; only active-backup works over IPoIB and needs no switch support", r.Mode)
	}
	if len(r.Links) < 2 {
		v.add(rp+".links", "needs at least two links, found %d; one link is a single point of failure", len(r.Links))
	}
	mgmtMAC, _ := checkMAC(nd.Management.MAC)
	seen := map[string]int{}
	for j, l := range r.Links {
		lp := fmt.Sprintf("%s.links[%d]", rp, j)
		norm, err := checkLink(l)
		if err != nil {
			v.add(lp, "%s", err)
			continue
		}
		if k, ok := seen[norm]; ok {
			v.add(lp, "%q is also links[%d]; a bond of one NIC twice is no redundancy", l, k)
			continue
		}
		seen[norm] = j
		if norm == nd.Management.Interface || (mgmtMAC != "" && norm == mgmtMAC) {
			v.add(lp, "%q is the management interface; heartbeats need two independent paths", l)
		}
		if norm == r.Bond {
			v.add(lp, "%q is the bond itself", l)
		}
	}
	if r.Bond != "" && r.Bond == nd.Management.Interface {
		v.add(rp+".bond", "%q is the management interface", r.Bond)
	}

	if err := checkRange(r.MIIMonMS, 10, 1000, " ms", ""); err != nil {
		v.add(rp+".miimon_ms", "%s", err)
	} else if dt := v.c.HA.DeadTimeMS; checkDeadTime(dt) == nil && 2*r.MIIMonMS >= dt {
		v.add(rp+".miimon_ms", "%d ms must be under half of ha.dead_time_ms (%d ms), so a link failover ends before the peer is declared dead", r.MIIMonMS, dt)
	}
	v.addErr(rp+".mtu", checkRange(r.MTU, 576, 65520, "", ""))

	if r.Address == "" {
		v.add(rp+".address", "missing; set this head's replication address with prefix length, e.g. 10.10.0.1/24")
	} else if p, err := checkHostPrefix(r.Address); err != nil {
		v.add(rp+".address", "%s", err)
	} else {
		v.repl[i] = p
	}

	if len(r.ARPTargets) > 16 {
		v.add(rp+".arp_targets", "%d targets; the bonding driver takes at most 16", len(r.ARPTargets))
	}
	targets := map[netip.Addr]int{}
	for j, t := range r.ARPTargets {
		tp := fmt.Sprintf("%s.arp_targets[%d]", rp, j)
		a, err := checkAddr(t)
		switch {
		case err != nil:
			v.add(tp, "%s", err)
		case v.repl[i].IsValid() && a == v.repl[i].Addr():
			v.add(tp, "%s is this head's own address; ARP monitoring needs a target across the link, e.g. the peer", a)
		case v.repl[i].IsValid() && !v.repl[i].Contains(a):
			v.add(tp, "%s is not in the replication subnet %s", a, v.repl[i].Masked())
		default:
			if k, ok := targets[a]; ok {
				v.add(tp, "%s is also arp_targets[%d]", a, k)
			}
			targets[a] = j
		}
	}
}

// uniqueMACs catches a MAC copied from one head's section to the other's.
func (v *validator) uniqueMACs() {
	seen := map[string]string{}
	note := func(i int, path, s string) {
		mac, err := checkMAC(s)
		if err != nil {
			return
		}
		if first, ok := seen[mac]; ok && !strings.HasPrefix(first, fmt.Sprintf("node[%d]", i)) {
			v.add(path, "%s is also %s; every NIC has its own MAC", mac, first)
			return
		}
		if _, ok := seen[mac]; !ok {
			seen[mac] = path
		}
	}
	for i, nd := range v.c.Nodes {
		np := fmt.Sprintf("node[%d]", i)
		if nd.Management.MAC != "" {
			note(i, np+".management.mac", nd.Management.MAC)
		}
		for j, l := range nd.Replication.Links {
			if strings.Contains(l, ":") {
				note(i, fmt.Sprintf("%s.replication.links[%d]", np, j), l)
			}
		}
	}
}

func (v *validator) sharedDisks() {
	if v.has("storage.raid.disks") {
		v.disks("storage.raid.disks", v.c.Storage.RAID.Disks)
	}
}

func (v *validator) disks(path string, disks []string) {
	seen := map[string]int{}
	for j, d := range disks {
		dp := fmt.Sprintf("%s[%d]", path, j)
		norm, err := checkDisk(d)
		if err != nil {
			v.add(dp, "%s", err)
			continue
		}
		if k, ok := seen[norm]; ok {
			v.add(dp, "%q is also %s[%d]; a disk can be a RAID member only once", d, path[strings.LastIndex(path, ".")+1:], k)
			continue
		}
		seen[norm] = j
	}
	if n := len(disks); n < 4 || n%2 != 0 {
		v.add(path, "RAID10 needs an even number of disks, at least 4; found %d", n)
	}
}

func (v *validator) storage() {
	s := v.c.Storage
	if s.RAID.Level != "raid10" {
		v.add("storage.raid.level", "%q is not supported; Tandem builds RAID10 only (no parity to compute, less flash wear)", s.RAID.Level)
	}
	if k := s.RAID.ChunkKiB; k < 4 || k > 65536 || k&(k-1) != 0 {
		v.add("storage.raid.chunk_kib", "%d is not a power of two from 4 to 65536", k)
	}

	v.addErr("storage.drbd.resource", func() error {
		if !drbdResRE.MatchString(s.DRBD.Resource) {
			return fmt.Errorf("%q is not a valid DRBD resource name (letters, digits, _.-)", s.DRBD.Resource)
		}
		return nil
	}())
	v.addErr("storage.drbd.port", checkRange(s.DRBD.Port, 1024, 65535, "", ""))
	v.addErr("storage.drbd.minor", checkRange(s.DRBD.Minor, 0, 1048575, "", ""))
	v.addErr("storage.drbd.resync_rate_mib", checkRange(s.DRBD.ResyncRateMiB, 1, 4096, " MiB/s", ""))
	if s.DRBD.Protocol != "C" {
		v.add("storage.drbd.protocol", "%q is not supported; only protocol C acknowledges a write once both heads have it, so a failover loses nothing", s.DRBD.Protocol)
	}

	v.addErr("storage.lvm.vg", checkLVMName(s.LVM.VG))
	v.addErr("storage.lvm.lv", checkLVMName(s.LVM.LV))
	v.addErr("storage.lvm.size", checkLVSize(s.LVM.Size))

	if s.Filesystem.Type != "xfs" {
		v.add("storage.filesystem.type", "%q is not supported; Tandem runs XFS", s.Filesystem.Type)
	}
	v.addErr("storage.filesystem.mountpoint", checkMountpoint(s.Filesystem.Mountpoint))
}

// dataPath checks that an export or share lies on the replicated
// filesystem (else it would not follow a failover), outside its state
// directory and not over it.
func (v *validator) dataPath(path, p string) {
	mnt := v.c.Storage.Filesystem.Mountpoint
	switch {
	case p == "":
		v.add(path, "missing; name a directory below storage.filesystem.mountpoint")
	case checkAbsPath(p) != nil:
		v.addErr(path, checkAbsPath(p))
	case checkMountpoint(mnt) != nil:
		// Reported at the mountpoint already.
	case !under(p, mnt):
		v.add(path, "%q is not under storage.filesystem.mountpoint %q; only the replicated filesystem follows a failover", p, mnt)
	case under(p, mnt+"/"+StateDir):
		v.add(path, "%q is inside %s/%s, which holds the pair's NFS and Samba state", p, mnt, StateDir)
	case under(mnt+"/"+StateDir, p):
		// Its clients could read and rewrite that state.
		v.add(path, "%q covers %s/%s, which holds the pair's NFS and Samba state; name a directory below the mountpoint", p, mnt, StateDir)
	}
}

func (v *validator) nfs() {
	n := v.c.Services.NFS
	if n.Enabled && len(n.Versions) == 0 {
		v.add("services.nfs.versions", "empty; serve at least one of 3, 4.1, 4.2")
	}
	seenV := map[string]int{}
	for i, ver := range n.Versions {
		vp := fmt.Sprintf("services.nfs.versions[%d]", i)
		switch ver {
		case "3", "4.1", "4.2":
		case "4", "4.0":
			v.add(vp, "%q is not supported; NFSv4.0 has no sessions, so clients recover slowly after a failover; use 4.1 or 4.2", ver)
			continue
		default:
			v.add(vp, "%q is not supported (3, 4.1, 4.2)", ver)
			continue
		}
		if k, ok := seenV[ver]; ok {
			v.add(vp, "%q is also versions[%d]", ver, k)
		}
		seenV[ver] = i
	}
	const why = "the kernel takes no less than 10 s, and more only lengthens the pause after a failover"
	gerr := checkRange(n.GraceSeconds, 10, 90, " s", why)
	lerr := checkRange(n.LeaseSeconds, 10, 90, " s", why)
	v.addErr("services.nfs.grace_seconds", gerr)
	v.addErr("services.nfs.lease_seconds", lerr)
	if gerr == nil && lerr == nil && n.GraceSeconds < n.LeaseSeconds {
		v.add("services.nfs.grace_seconds", "%d s is shorter than lease_seconds (%d s); clients need a full lease period to reclaim their state", n.GraceSeconds, n.LeaseSeconds)
	}

	paths := map[string]int{}
	fsids := map[string]int{}
	for i := range n.Exports {
		e := &v.c.Services.NFS.Exports[i]
		ep := fmt.Sprintf("services.nfs.export[%d]", i)
		v.dataPath(ep+".path", e.Path)
		if k, ok := paths[e.Path]; ok && e.Path != "" {
			v.add(ep+".path", "%q is also exported by export[%d]; list all its clients in one export", e.Path, k)
		} else {
			paths[e.Path] = i
		}
		if len(e.Clients) == 0 {
			v.add(ep+".clients", "missing; list the clients allowed to mount (host, IP, CIDR, @netgroup or *)")
		}
		for j, cl := range e.Clients {
			v.addErr(fmt.Sprintf("%s.clients[%d]", ep, j), checkClient(cl))
		}
		v.exportOptions(ep, e.Options)
		if !v.has(ep + ".fsid") {
			v.add(ep+".fsid", "missing; every export needs a fixed fsid, or clients get stale file handles after a failover")
			continue
		}
		id, err := parseFSID(e.FSID.raw)
		if err != nil {
			v.add(ep+".fsid", "%s", err)
			continue
		}
		e.FSID.norm = id
		if k, ok := fsids[id]; ok {
			v.add(ep+".fsid", "%s is also the fsid of export[%d]; file handles must name one export, or clients reach the wrong one after a failover", id, k)
		} else {
			fsids[id] = i
		}
	}
}

func (v *validator) exportOptions(ep string, opts []string) {
	seen := map[string]int{}
	for j, o := range opts {
		op := fmt.Sprintf("%s.options[%d]", ep, j)
		if err := checkExportOption(o); err != nil {
			v.add(op, "%s", err)
			continue
		}
		if k, ok := seen[o]; ok {
			v.add(op, "%q is also options[%d]", o, k)
		}
		seen[o] = j
	}
	for _, pair := range exportOpposites {
		a, okA := seen[pair[0]]
		b, okB := seen[pair[1]]
		if okA && okB {
			v.add(fmt.Sprintf("%s.options[%d]", ep, max(a, b)), "%q contradicts %q", opts[max(a, b)], opts[min(a, b)])
		}
	}
}

func (v *validator) smb() {
	s := v.c.Services.SMB
	ad := v.c.Services.AD
	if s.Security != "ads" && s.Security != "user" {
		v.add("services.smb.security", "%q is not supported (ads or user)", s.Security)
	}
	switch {
	case v.has("services.smb.netbios_name"):
		v.addErr("services.smb.netbios_name", checkNetBIOS(s.NetBIOSName))
	case s.Enabled && checkNetBIOS(s.NetBIOSName) != nil:
		v.add("services.smb.netbios_name", "missing; the pair name %q does not make a NetBIOS name (at most 15 characters), so set one", v.c.Pair.Name)
	}
	v.addErr("services.smb.workgroup", checkNetBIOS(s.Workgroup))

	names := map[string]int{}
	for i, sh := range s.Shares {
		sp := fmt.Sprintf("services.smb.share[%d]", i)
		if err := checkShareName(sh.Name); err != nil {
			v.add(sp+".name", "%s", err)
		} else if k, ok := names[strings.ToLower(sh.Name)]; ok {
			// SMB compares share names without regard to case.
			v.add(sp+".name", "%q is also the name of share[%d] (share names ignore case)", sh.Name, k)
		} else {
			names[strings.ToLower(sh.Name)] = i
		}
		v.dataPath(sp+".path", sh.Path)
		for j, u := range sh.ValidUsers {
			if strings.TrimSpace(u) == "" || strings.ContainsAny(u, ",\n\r") || !printable(u) {
				v.add(fmt.Sprintf("%s.valid_users[%d]", sp, j), "%q is not a user or @group name", u)
			}
		}
	}

	// The AD connector: checked when written, required when SMB uses it.
	if ad.Realm != "" && !isDNSName(ad.Realm) {
		v.add("services.ad.realm", "%q is not a DNS domain, e.g. CORP.EXAMPLE.COM", ad.Realm)
	}
	if ad.Domain != "" {
		v.addErr("services.ad.domain", checkNetBIOS(ad.Domain))
	}
	for i, dc := range ad.DC {
		if _, err := netip.ParseAddr(dc); err != nil && !isDNSName(dc) {
			v.add(fmt.Sprintf("services.ad.dc[%d]", i), "%q is neither an IP address nor a host name", dc)
		}
	}
	if ad.JoinPasswordFile != "" {
		v.addErr("services.ad.join_password_file", checkAbsPath(ad.JoinPasswordFile))
	}
	if !s.Enabled || s.Security != "ads" {
		return
	}
	need := `missing; services.smb uses security = "ads", which needs `
	if ad.Realm == "" {
		v.add("services.ad.realm", "%s%s", need, "the AD realm")
	}
	if ad.Domain == "" {
		v.add("services.ad.domain", "%s%s", need, "the domain's NetBIOS name")
	} else if v.has("services.smb.workgroup") && !strings.EqualFold(s.Workgroup, ad.Domain) {
		v.add("services.smb.workgroup", "%q differs from services.ad.domain %q; with security = \"ads\" the workgroup is the domain's NetBIOS name", s.Workgroup, ad.Domain)
	}
	if len(ad.DC) == 0 {
		v.add("services.ad.dc", "%s%s", need, "at least one domain controller")
	}
	if ad.JoinUser == "" {
		v.add("services.ad.join_user", "%s%s", need, "an account allowed to join machines")
	}
	if ad.JoinPasswordFile == "" {
		v.add("services.ad.join_password_file", "%s%s", need, "the file holding the join password")
	}
}

// vipCheck defines the service subnet: when the VIP rides on the
// management interface (the default), it is each head's static
// management subnet, and the VIP's address and prefix length must match
// it. A VIP on another interface, or next to DHCP, is not checked against
// a subnet, since the config does not describe that network.
func (v *validator) vipCheck() {
	vp := v.c.VIP
	if vp.Address == "" {
		v.add("vip.address", "missing; clients reach the pair only through the virtual IP")
	} else if p, err := checkHostPrefix(vp.Address); err != nil {
		v.add("vip.address", "%s", err)
	} else {
		v.vip = p
	}
	if vp.Interface != "" {
		v.addErr("vip.interface", checkIfName(vp.Interface))
	}
	v.addErr("vip.arp_count", checkRange(vp.ARPCount, 1, 30, "", ""))

	for i, nd := range v.c.Nodes {
		r := nd.Replication
		if vp.Interface != "" && (vp.Interface == r.Bond || contains(r.Links, vp.Interface)) {
			v.add("vip.interface", "%q is part of node[%d]'s replication bond; the VIP belongs on the service network", vp.Interface, i)
		}
		if !v.vip.IsValid() {
			continue
		}
		a := v.vip.Addr()
		if m := v.mgmt[i]; m.IsValid() {
			switch {
			case a == m.Addr():
				v.add("vip.address", "%s is also node[%d]'s management address; the VIP must be an address of its own, as it moves between the heads", a, i)
			case onMgmt(vp.Interface, nd) && v.vip.Masked() != m.Masked():
				v.add("vip.address", "%s does not match node[%d]'s service subnet %s (its management network, which carries the VIP); use an address and prefix length of that subnet", v.vip, i, m.Masked())
			}
		}
		if r := v.repl[i]; r.IsValid() {
			if a == r.Addr() {
				v.add("vip.address", "%s is also node[%d]'s replication address", a, i)
			} else if r.Contains(a) {
				v.add("vip.address", "%s lies in node[%d]'s replication subnet %s; the VIP belongs on the service network", a, i, r.Masked())
			}
		}
		if gw, err := netip.ParseAddr(nd.Management.Gateway); err == nil && gw == a {
			v.add("vip.address", "%s is node[%d]'s gateway", a, i)
		}
	}
}

func onMgmt(vipIf string, nd Node) bool {
	return vipIf == "" || vipIf == nd.Management.Interface
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (v *validator) ha() {
	h := v.c.HA
	v.addErr("ha.heartbeat_interval_ms", checkRange(h.HeartbeatIntervalMS, 50, 10000, " ms", ""))
	if err := checkDeadTime(h.DeadTimeMS); err != nil {
		v.add("ha.dead_time_ms", "%s", err)
	} else if h.DeadTimeMS <= 2*h.HeartbeatIntervalMS {
		v.add("ha.dead_time_ms", "%d ms must be more than twice heartbeat_interval_ms (%d ms), or one late heartbeat declares the peer dead", h.DeadTimeMS, h.HeartbeatIntervalMS)
	}
	v.addErr("ha.stop_bound_ms", checkRange(h.StopBoundMS, 1000, 600000, " ms", "it must really bound stopping the active stack (VIP, NFS, unmount, LVM, DRBD demote)"))
	// Below 2 s a loaded head could miss a pet and reset for nothing.
	v.addErr("ha.watchdog_timeout_seconds", checkRange(h.WatchdogTimeoutSeconds, 2, 600, " s", "the board resets a head that stops petting its watchdog for this long"))
	v.addErr("ha.migration_threshold", checkRange(h.MigrationThreshold, 1, 100, "", ""))
	v.addErr("ha.failure_timeout_seconds", checkRange(h.FailureTimeoutSeconds, 0, 86400, " s", ""))
	m := h.Monitor
	for _, f := range m.fields() {
		p := "ha.monitor." + f.key + "."
		v.addErr(p+"interval_ms", checkRange(f.mon.IntervalMS, 100, 3600000, " ms", ""))
		v.addErr(p+"timeout_ms", checkRange(f.mon.TimeoutMS, 100, 600000, " ms", ""))
	}
}

func checkDeadTime(ms int) error { return checkRange(ms, 100, 60000, " ms", "") }

// nodeAddr names the role of a into the pair's own addresses, or "".
func (v *validator) nodeAddr(a netip.Addr) string {
	for i := range v.c.Nodes {
		if v.mgmt[i].IsValid() && v.mgmt[i].Addr() == a {
			return fmt.Sprintf("node[%d]'s management address", i)
		}
		if v.repl[i].IsValid() && v.repl[i].Addr() == a {
			return fmt.Sprintf("node[%d]'s replication address", i)
		}
	}
	if v.vip.IsValid() && v.vip.Addr() == a {
		return "the VIP"
	}
	return ""
}

// nfsPorts are fixed ports of the NFS server on every head.
var nfsPorts = map[int]string{2049: "nfsd", 20048: "mountd"}

func (v *validator) witnessAndPorts() {
	w := v.c.Witness
	witnessPort := 0
	const notTie = "; a tiebreaker on one of the heads cannot break a tie between them"
	switch {
	case w.Address == "" && w.PingTarget == "":
		v.add("witness", "missing; set address (a tandem witness on a third host) or ping_target: a head takes over only with a tiebreaker vote")
	case w.Address != "" && w.PingTarget != "":
		v.add("witness.ping_target", "set address or ping_target, not both")
	case w.Address != "":
		host, port, err := net.SplitHostPort(w.Address)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil || perr != nil:
			v.add("witness.address", "%q is not host:port, e.g. 192.0.2.5:7791", w.Address)
		case n < 1 || n > 65535:
			v.add("witness.address", "port %d is out of range (1 to 65535)", n)
		default:
			witnessPort = n
			if a, err := netip.ParseAddr(host); err == nil {
				if role := v.nodeAddr(a); role != "" {
					v.add("witness.address", "%s is %s%s", a, role, notTie)
				} else {
					v.addErr("witness.address", checkHostAddr(a))
				}
			} else if !isDNSName(host) {
				v.add("witness.address", "%q is neither an IP address nor a host name", host)
			}
		}
	default:
		a, err := checkAddr(w.PingTarget)
		if err != nil {
			v.add("witness.ping_target", "%s", err)
		} else if role := v.nodeAddr(a); role != "" {
			v.add("witness.ping_target", "%s is %s%s", a, role, notTie)
		}
	}

	switch {
	case w.Address == "" && w.PingTarget != "" && v.has("witness.lease_ms"):
		v.add("witness.lease_ms", "a ping target grants no lease; lease_ms applies to a witness address only")
	case w.Address != "" && v.has("witness.lease_ms"):
		if err := checkRange(w.LeaseMS, 500, 600000, " ms", ""); err != nil {
			v.add("witness.lease_ms", "%s", err)
		} else if iv := v.c.HA.HeartbeatIntervalMS; w.LeaseMS <= 2*iv {
			v.add("witness.lease_ms", "%d ms must be more than twice ha.heartbeat_interval_ms (%d ms): the holder renews its lease every interval", w.LeaseMS, iv)
		}
	}

	ports := []struct {
		path string
		port int
	}{
		{"storage.drbd.port", v.c.Storage.DRBD.Port},
		{"ha.heartbeat_port", v.c.HA.HeartbeatPort},
		{"ha.control_port", v.c.HA.ControlPort},
		{"witness.address", witnessPort},
	}
	v.addErr("ha.heartbeat_port", checkRange(v.c.HA.HeartbeatPort, 1024, 65535, "", ""))
	v.addErr("ha.control_port", checkRange(v.c.HA.ControlPort, 1024, 65535, "", ""))
	for i, p := range ports {
		if d, ok := nfsPorts[p.port]; ok {
			v.add(p.path, "port %d is %s's", p.port, d)
		}
		for _, q := range ports[:i] {
			if p.port != 0 && p.port == q.port {
				v.add(p.path, "port %d is also %s; each channel needs its own port", p.port, q.path)
			}
		}
	}
}
