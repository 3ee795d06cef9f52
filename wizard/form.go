package wizard

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"tandem.dev/tandem/site"
)

// suggest fills the wizard's first proposal from both heads' hardware:
// the NIC the wizard is reached on for management, two other NICs with
// link for replication, four blank disks per head. Disks that hold a
// signature are never pre-selected.
func suggest(self *Identity, peer Peer, hw [2]Hardware) siteInput {
	in := siteInput{PairName: "nas", Witness: "witness"}
	ids := [2]string{self.ID, peer.ID}
	fps := [2][]byte{self.Fingerprint, peer.Fingerprint}
	names := [2]string{"nas-a", "nas-b"}
	replNet := [2]string{"192.168.255.1/24", "192.168.255.2/24"}
	for h := range 2 {
		n := nodeInput{HeadID: ids[h], Fingerprint: fps[h], Name: names[h], Gateway: hw[h].Gateway}
		mgmt := suggestMgmt(hw[h])
		if mgmt != nil {
			n.MgmtNIC, n.MgmtMAC = mgmt.Name, mgmt.MAC
			for _, a := range mgmt.Addrs {
				if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Is4() {
					n.Mgmt = a
					if p.Contains(netip.MustParseAddr("192.168.255.1")) {
						replNet = [2]string{"172.31.255.1/24", "172.31.255.2/24"}
					}
					break
				}
			}
		}
		var others []NIC
		for _, c := range hw[h].NICs {
			if mgmt == nil || c.Name != mgmt.Name {
				others = append(others, c)
			}
		}
		// Linked NICs first, then the fastest.
		slices.SortStableFunc(others, func(a, b NIC) int {
			if a.Link != b.Link {
				if a.Link {
					return -1
				}
				return 1
			}
			return b.SpeedMbps - a.SpeedMbps
		})
		for _, c := range others[:min(2, len(others))] {
			n.Links = append(n.Links, c.Name)
		}
		for _, d := range hw[h].Disks {
			if !d.System && d.Signature == "" && len(n.Disks) < 4 {
				n.Disks = append(n.Disks, d.Serial)
			}
		}
		in.Nodes[h] = n
	}
	for h := range 2 {
		in.Nodes[h].Repl = replNet[h]
	}
	in.PingTarget = in.Nodes[0].Gateway
	clients := ""
	if p, err := netip.ParsePrefix(in.Nodes[0].Mgmt); err == nil {
		clients = p.Masked().String()
	}
	in.Exports[0] = exportInput{Path: site.DefaultMountpoint + "/share", Clients: clients, Options: strings.Join(site.DefaultExportOptions, ", ")}
	return in
}

func suggestMgmt(hw Hardware) *NIC {
	for i, c := range hw.NICs {
		if c.Wizard {
			return &hw.NICs[i]
		}
	}
	for i, c := range hw.NICs {
		if len(c.Addrs) > 0 {
			return &hw.NICs[i]
		}
	}
	for i, c := range hw.NICs {
		if c.Link {
			return &hw.NICs[i]
		}
	}
	if len(hw.NICs) > 0 {
		return &hw.NICs[0]
	}
	return nil
}

// fieldErrors are validation messages by form field; "" holds those
// that belong to no field.
type fieldErrors map[string][]string

func (fe fieldErrors) add(field, msg string) { fe[field] = append(fe[field], msg) }

var (
	nodePathRE   = regexp.MustCompile(`^node\[(\d+)\]\.?(.*)$`)
	exportPathRE = regexp.MustCompile(`^services\.nfs\.export\[(\d+)\]\.?(.*)$`)
)

// fieldFor maps a site config key path to the form field that sets it.
// rows maps the config's export index to the form's row. Hardware
// choices map to "hw0"/"hw1" plus the part: "hw0.mgmt", "hw0.repl",
// "hw0.disk".
func fieldFor(path string, rows []int) string {
	if m := nodePathRE.FindStringSubmatch(path); m != nil {
		h, rest := m[1], m[2]
		switch {
		case rest == "name":
			return "node" + h + "_name"
		case rest == "management.address":
			return "node" + h + "_mgmt"
		case rest == "management.gateway":
			return "node" + h + "_gw"
		case strings.HasPrefix(rest, "management.dns"):
			return "node" + h + "_dns"
		case rest == "replication.address", strings.HasPrefix(rest, "replication.arp_targets"):
			return "node" + h + "_repl"
		case rest == "management.interface", rest == "management.mac", rest == "management":
			return "hw" + h + ".mgmt"
		case strings.HasPrefix(rest, "replication.links"), rest == "replication.bond":
			return "hw" + h + ".repl"
		case strings.HasPrefix(rest, "disks"):
			return "hw" + h + ".disk"
		}
		return ""
	}
	if m := exportPathRE.FindStringSubmatch(path); m != nil {
		j, _ := strconv.Atoi(m[1])
		if j >= len(rows) {
			return ""
		}
		row := strconv.Itoa(rows[j])
		switch {
		case m[2] == "path":
			return "export" + row + "_path"
		case strings.HasPrefix(m[2], "clients"):
			return "export" + row + "_clients"
		case strings.HasPrefix(m[2], "options"):
			return "export" + row + "_options"
		}
		return ""
	}
	switch path {
	case "pair.name":
		return "pair_name"
	case "vip.address":
		return "vip"
	case "witness":
		return "witness"
	case "witness.address":
		return "witness_addr"
	case "witness.ping_target":
		return "ping_target"
	}
	return ""
}

// validate builds the config and checks it with the site package, as
// `tandem validate` does. It returns the config (with the key), and the
// errors by field, in the site package's words.
func validate(in *siteInput, key []byte) ([]byte, fieldErrors, error) {
	cfg, err := in.build(key)
	if err != nil {
		return nil, nil, err
	}
	_, err = site.Parse(configName, cfg)
	if err == nil {
		return cfg, nil, nil
	}
	fe := fieldErrors{}
	var verrs site.ValidationErrors
	var one *site.Error
	switch {
	case errors.As(err, &verrs):
	case errors.As(err, &one):
		verrs = site.ValidationErrors{one}
	default:
		return nil, nil, err
	}
	rows := in.exportRows()
	for _, e := range verrs {
		if f := fieldFor(e.Path, rows); f != "" {
			fe.add(f, e.Msg)
		} else {
			// No field of its own: the whole line, as tandem validate
			// prints it.
			fe.add("", e.Error())
		}
	}
	return cfg, fe, nil
}

// hwChoice is what the operator chose on one head: from the hardware
// page, or from the node's [[node]] in a tandem pair template.
type hwChoice struct {
	Mgmt    string   // the management NIC: name, or MAC from a template
	Links   []string // replication NICs: names or MACs
	Disks   []string // serials
	Confirm []string // serials whose data may be destroyed
}

// hwProblem is one choice a head's inventory does not back. Index is
// the link's or disk's place in the choice.
type hwProblem struct {
	Kind      hwProblemKind
	Index     int
	Name      string // what was chosen
	Signature string // probData: what the disk holds
}

type hwProblemKind int

const (
	probNoMgmt hwProblemKind = iota // no management NIC chosen
	probNoNIC                       // no such NIC on this head
	probNoDisk                      // no such disk on this head
	probSystem                      // the disk the head boots from
	probData                        // holds data, destruction not confirmed
)

// pick checks one head's hardware choices against its inventory, for
// the hardware page and tandem pair alike: the NICs and disks must be
// this head's, never its system disk, and a disk that holds data is
// taken only with its destruction confirmed. It returns the NICs by
// name, the disks and the confirmed ones among them.
func (hw Hardware) pick(c hwChoice) (mgmt string, links, disks, destroy []string, probs []hwProblem) {
	if c.Mgmt == "" {
		probs = append(probs, hwProblem{Kind: probNoMgmt})
	} else if n, ok := hw.nicByNameOrMAC(c.Mgmt); ok {
		mgmt = n.Name
	} else {
		probs = append(probs, hwProblem{Kind: probNoNIC, Index: -1, Name: c.Mgmt})
	}
	for i, l := range c.Links {
		n, ok := hw.nicByNameOrMAC(l)
		switch {
		case !ok:
			probs = append(probs, hwProblem{Kind: probNoNIC, Index: i, Name: l})
		case !slices.Contains(links, n.Name):
			links = append(links, n.Name)
		}
	}
	for i, s := range c.Disks {
		d, ok := hw.disk(s)
		switch {
		case !ok:
			probs = append(probs, hwProblem{Kind: probNoDisk, Index: i, Name: s})
			continue
		case d.System:
			probs = append(probs, hwProblem{Kind: probSystem, Index: i, Name: s})
			continue
		case slices.Contains(disks, s):
			continue
		}
		disks = append(disks, s)
		if d.Signature != "" {
			if slices.Contains(c.Confirm, s) {
				destroy = append(destroy, s)
			} else {
				probs = append(probs, hwProblem{Kind: probData, Index: i, Name: s, Signature: d.Signature})
			}
		}
	}
	return mgmt, links, disks, destroy, probs
}

// hardwareForm reads the hardware page into in; the errors are the
// hardware page's own (a management NIC chosen, data disks confirmed).
func hardwareForm(r *http.Request, in *siteInput, hw [2]Hardware) fieldErrors {
	fe := fieldErrors{}
	for h := range 2 {
		hs := strconv.Itoa(h)
		n := &in.Nodes[h]
		var probs []hwProblem
		n.MgmtNIC, n.Links, n.Disks, n.Destroy, probs = hw[h].pick(hwChoice{
			Mgmt: r.PostFormValue("mgmt" + hs), Links: r.PostForm["repl"+hs],
			Disks: r.PostForm["disk"+hs], Confirm: r.PostForm["destroy"+hs]})
		n.MgmtMAC = ""
		if c, ok := hw[h].nic(n.MgmtNIC); ok {
			n.MgmtMAC = c.MAC
		}
		for _, p := range probs {
			switch {
			case p.Kind == probData:
				fe.add("hw"+hs+".disk:"+p.Name, fmt.Sprintf("holds data (%s): tick \"Destroy the data on %s\" to use it", p.Signature, p.Name))
			case p.Kind == probNoMgmt, p.Kind == probNoNIC && p.Index < 0:
				fe.add("hw"+hs+".mgmt", "choose the management interface")
			}
			// The page offers only this head's NICs and disks: others
			// come from a stale or forged form and are dropped.
		}
	}
	return fe
}

// siteForm reads the site page into in.
func siteForm(r *http.Request, in *siteInput) {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	in.PairName = v("pair_name")
	for h := range 2 {
		p := "node" + strconv.Itoa(h) + "_"
		n := &in.Nodes[h]
		n.Name, n.Mgmt, n.Gateway, n.DNS, n.Repl = v(p+"name"), v(p+"mgmt"), v(p+"gw"), v(p+"dns"), v(p+"repl")
	}
	in.VIP = v("vip")
	in.Witness = "witness"
	if v("witness") == "ping" {
		in.Witness = "ping"
	}
	in.WitnessAddr, in.PingTarget = v("witness_addr"), v("ping_target")
	for j := range maxExports {
		p := "export" + strconv.Itoa(j) + "_"
		in.Exports[j] = exportInput{Path: v(p + "path"), Clients: v(p + "clients"), Options: v(p + "options")}
	}
}
