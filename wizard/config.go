package wizard

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"tandem.dev/tandem/site"
)

// The wizard writes who is who into the site config as comments, so the
// responder learns which [[node]] it is and which disks it may
// overwrite, and both heads agree on it (the comments are part of the
// config the pairing hashes).
const headerTag = "# tandem-wizard: "

// configName is how validation errors name the wizard's config, as
// `tandem validate site.toml` would.
const configName = "site.toml"

// siteInput is everything the wizard asks: the hardware choices and the
// site form. Index 0 is this head (the initiator), 1 the peer.
type siteInput struct {
	PairName    string
	Nodes       [2]nodeInput
	VIP         string
	Witness     string // "witness" or "ping"
	WitnessAddr string
	PingTarget  string
	Exports     [maxExports]exportInput
}

const maxExports = 3

type nodeInput struct {
	HeadID      string
	Fingerprint []byte
	Name        string
	MgmtNIC     string
	MgmtMAC     string // MgmtNIC's MAC: the config names it, so that each head knows its node at boot
	Mgmt        string // CIDR
	Gateway     string
	DNS         string // comma or space separated
	Repl        string // CIDR
	Links       []string
	Disks       []string // serials
	Destroy     []string // serials confirmed for overwriting
}

type exportInput struct {
	Path, Clients, Options string
}

func (e exportInput) blank() bool {
	return strings.TrimSpace(e.Path) == "" && strings.TrimSpace(e.Clients) == ""
}

// splitList splits "a, b c" into [a b c].
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

type tomlDoc struct {
	Version  int          `toml:"version"`
	Pair     tomlPair     `toml:"pair"`
	Node     []tomlNode   `toml:"node"`
	Storage  tomlStorage  `toml:"storage"`
	Services tomlServices `toml:"services"`
	VIP      tomlVIP      `toml:"vip"`
	Witness  tomlWitness  `toml:"witness"`
}

type tomlPair struct {
	Name string `toml:"name,omitempty"`
	Key  string `toml:"key,omitempty"`
}

type tomlNode struct {
	Name        string          `toml:"name,omitempty"`
	Disks       []string        `toml:"disks"`
	Management  tomlManagement  `toml:"management"`
	Replication tomlReplication `toml:"replication"`
}

type tomlManagement struct {
	Interface string   `toml:"interface,omitempty"`
	MAC       string   `toml:"mac,omitempty"`
	Address   string   `toml:"address,omitempty"`
	Gateway   string   `toml:"gateway,omitempty"`
	DNS       []string `toml:"dns,omitempty"`
}

type tomlReplication struct {
	Links   []string `toml:"links"`
	Address string   `toml:"address,omitempty"`
}

type tomlStorage struct {
	RAID struct {
		CreateIfBlank bool `toml:"create_if_blank"`
	} `toml:"raid"`
	Filesystem struct {
		MkfsIfBlank bool `toml:"mkfs_if_blank"`
	} `toml:"filesystem"`
}

type tomlServices struct {
	NFS struct {
		Enabled bool         `toml:"enabled"`
		Export  []tomlExport `toml:"export,omitempty"`
	} `toml:"nfs"`
}

type tomlExport struct {
	Path    string   `toml:"path,omitempty"`
	Clients []string `toml:"clients,omitempty"`
	Options []string `toml:"options,omitempty"`
	FSID    int      `toml:"fsid"`
}

type tomlVIP struct {
	Address string `toml:"address,omitempty"`
}

type tomlWitness struct {
	Address    string `toml:"address,omitempty"`
	PingTarget string `toml:"ping_target,omitempty"`
}

// exportRows maps the config's export[j] to the form's row.
func (in *siteInput) exportRows() []int {
	var rows []int
	for i, e := range in.Exports {
		if !e.blank() {
			rows = append(rows, i)
		}
	}
	return rows
}

// build writes the site config. key nil leaves the pair key out (the
// operator's download): the heads agreed it between themselves and keep
// it; it never passes through the browser.
func (in *siteInput) build(key []byte) ([]byte, error) {
	d := tomlDoc{Version: site.Version, Pair: tomlPair{Name: strings.TrimSpace(in.PairName)}}
	if key != nil {
		d.Pair.Key = hex.EncodeToString(key)
	}
	for _, n := range in.Nodes {
		mgmtIf := n.MgmtNIC
		if n.MgmtMAC != "" {
			mgmtIf = "" // the MAC names it; the config takes one of the two
		}
		disks := make([]string, 0, len(n.Disks))
		for _, s := range n.Disks {
			disks = append(disks, "serial:"+s)
		}
		d.Node = append(d.Node, tomlNode{
			Name:  strings.TrimSpace(n.Name),
			Disks: disks,
			Management: tomlManagement{
				Interface: mgmtIf,
				MAC:       n.MgmtMAC,
				Address:   strings.TrimSpace(n.Mgmt),
				Gateway:   strings.TrimSpace(n.Gateway),
				DNS:       splitList(n.DNS),
			},
			Replication: tomlReplication{Links: append([]string{}, n.Links...), Address: strings.TrimSpace(n.Repl)},
		})
	}
	// The operator chose the disks and confirmed any that hold data: the
	// heads may build the array and the filesystem.
	d.Storage.RAID.CreateIfBlank = true
	d.Storage.Filesystem.MkfsIfBlank = true
	for j, row := range in.exportRows() {
		e := in.Exports[row]
		opts := splitList(e.Options)
		d.Services.NFS.Export = append(d.Services.NFS.Export, tomlExport{
			Path: strings.TrimSpace(e.Path), Clients: splitList(e.Clients), Options: opts, FSID: j + 1,
		})
	}
	d.Services.NFS.Enabled = len(d.Services.NFS.Export) > 0
	d.VIP.Address = strings.TrimSpace(in.VIP)
	if in.Witness == "ping" {
		d.Witness.PingTarget = strings.TrimSpace(in.PingTarget)
	} else {
		d.Witness.Address = strings.TrimSpace(in.WitnessAddr)
	}
	body, err := toml.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("write the site config: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("# Tandem site config, written by the first-boot pairing wizard.\n")
	if key == nil {
		b.WriteString("# pair.key is not in this copy: the heads agreed the key between\n# themselves and keep it on their state partitions.\n")
	}
	for _, n := range in.Nodes {
		fmt.Fprintf(&b, "%shead %s is node %s with certificate %x\n", headerTag, n.HeadID, strings.TrimSpace(n.Name), n.Fingerprint)
		for _, s := range n.Destroy {
			fmt.Fprintf(&b, "%sdestroy data on node %s disk serial:%s\n", headerTag, strings.TrimSpace(n.Name), s)
		}
	}
	b.WriteString("\n")
	b.Write(body)
	return b.Bytes(), nil
}

// header is what the wizard's comments say.
type header struct {
	nodeOf  map[string]string // head ID → node name
	fpOf    map[string][]byte // head ID → certificate fingerprint
	destroy map[string][]string
}

func parseHeader(config []byte) (header, error) {
	h := header{nodeOf: map[string]string{}, fpOf: map[string][]byte{}, destroy: map[string][]string{}}
	for _, line := range strings.Split(string(config), "\n") {
		rest, ok := strings.CutPrefix(line, headerTag)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		switch {
		case len(f) == 8 && f[0] == "head" && f[2] == "is" && f[3] == "node" && f[5] == "with" && f[6] == "certificate":
			fp, err := hex.DecodeString(f[7])
			if err != nil || len(fp) != 32 {
				return h, fmt.Errorf("malformed wizard line %q", line)
			}
			h.nodeOf[f[1]], h.fpOf[f[1]] = f[4], fp
		case len(f) == 7 && f[0] == "destroy" && f[1] == "data" && f[2] == "on" && f[3] == "node" && f[5] == "disk":
			h.destroy[f[4]] = append(h.destroy[f[4]], f[6])
		default:
			return h, fmt.Errorf("malformed wizard line %q", line)
		}
	}
	return h, nil
}

// resultFor checks a site config the wizard wrote and finds this head in
// it.
func resultFor(config []byte, selfID, role string) (*Result, error) {
	sc, err := site.Parse(configName, config)
	if err != nil {
		return nil, err
	}
	h, err := parseHeader(config)
	if err != nil {
		return nil, err
	}
	node, ok := h.nodeOf[selfID]
	if !ok || sc.Node(node) == nil {
		return nil, fmt.Errorf("the site config does not name this head (%s)", selfID)
	}
	if len(h.nodeOf) != 2 {
		return nil, errors.New("the site config names not exactly two heads")
	}
	res := &Result{Config: bytes.Clone(config), Site: sc, Node: node, Destroy: h.destroy[node], Role: role}
	for id, fp := range h.fpOf {
		if id != selfID {
			res.peerFP = fp
		}
	}
	return res, nil
}

// PairedNode is the node the wizard's pairing made this head in config:
// the head's ID, kept in stateDir since its first boot, looked up in the
// config's wizard lines. "" when the wizard did not write config or the
// head has no ID. PID 1 identifies the head by it at every boot.
func PairedNode(config []byte, stateDir string) string {
	b, err := os.ReadFile(filepath.Join(stateDir, idFile))
	if err != nil {
		return ""
	}
	h, err := parseHeader(config)
	if err != nil {
		return ""
	}
	return h.nodeOf[strings.TrimSpace(string(b))]
}
