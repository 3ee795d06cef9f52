package wizard

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"tandem.dev/tandem/internal/tomlpos"
	"tandem.dev/tandem/site"
)

// A template is a site config written by hand for `tandem pair`: a
// normal site.toml without the pair key (the heads agree it between
// themselves; it never passes through the operator's machine) and
// without the wizard's own lines. [[node]] 1 is the head whose wizard
// the command drives, [[node]] 2 the other head.
//
// The head completes it by inserting the pair key as one line and
// appending the wizard's lines; everything the operator wrote stays as
// written, and every error names the line and column in the operator's
// file, as `tandem validate` would.

// CheckTemplate checks a template as the head will, short of its
// hardware: it must leave out the pair key and the wizard's lines, and
// pass the site package's validation once a key is in. name is how
// errors name the file. The error is a *site.Error or
// site.ValidationErrors, located in data.
func CheckTemplate(name string, data []byte) (*site.Config, error) {
	key := make([]byte, 32)
	rand.Read(key)
	_, sc, _, err := completeTemplate(name, data, key)
	return sc, err
}

// completeTemplate inserts key into the template and checks the result
// with the site package. It returns the config with the key and the
// template's own key index, whose positions are the operator's.
func completeTemplate(name string, data, key []byte) ([]byte, *site.Config, *tomlpos.Index, error) {
	if len(data) > site.MaxSize {
		return nil, nil, nil, &site.Error{File: name, Line: 1, Col: 1,
			Msg: fmt.Sprintf("file is larger than %d bytes; a site config is a few KiB", site.MaxSize)}
	}
	ix, parsed := tomlpos.IndexKeys(data)
	if !parsed {
		_, err := site.Parse(name, data) // the syntax error, where it is
		if err == nil {
			err = &site.Error{File: name, Line: 1, Col: 1, Msg: "does not parse"}
		}
		return nil, nil, nil, err
	}
	var refused site.ValidationErrors
	for _, k := range []string{"pair.key", "pair.key_file"} {
		if p, ok := ix.Lookup(k); ok {
			refused = append(refused, &site.Error{File: name, Line: p.Line, Col: p.Col, Path: k,
				Msg: "leave the pair key out: the two heads agree it between themselves, and it never leaves them"})
		}
	}
	for i, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), strings.TrimSpace(headerTag)) {
			refused = append(refused, &site.Error{File: name, Line: i + 1, Col: 1,
				Msg: "a line the wizard writes itself (which head is which node); remove it"})
		}
	}
	if len(refused) > 0 {
		return nil, nil, nil, refused
	}

	// One line for the key: right after a [pair] header, or else as a
	// dotted key on the first line, which belongs to the root table.
	ins, line := 1, fmt.Sprintf("pair.key = %q\n", hex.EncodeToString(key))
	if ix.Header("pair") {
		p, _ := ix.Lookup("pair")
		ins, line = p.Line+1, fmt.Sprintf("key = %q\n", hex.EncodeToString(key))
	}
	cfg := insertLine(data, ins, line)
	sc, err := site.Parse(name, cfg)
	if err != nil {
		// Back to the operator's lines: the key line is not theirs.
		at := func(e *site.Error) {
			switch {
			case e.Line > ins:
				e.Line--
			case e.Line == ins && ins > 1:
				e.Line, e.Col = ins-1, 1
			}
		}
		var verrs site.ValidationErrors
		var one *site.Error
		switch {
		case errors.As(err, &verrs):
			for _, e := range verrs {
				at(e)
			}
		case errors.As(err, &one):
			at(one)
		}
		return nil, nil, nil, err
	}
	return cfg, sc, ix, nil
}

// insertLine puts text before line n (1-based) of data.
func insertLine(data []byte, n int, text string) []byte {
	off := 0
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(data[off:], '\n')
		if j < 0 {
			off = len(data)
			break
		}
		off += j + 1
	}
	var b bytes.Buffer
	b.Write(data[:off])
	if off == len(data) && off > 0 && data[off-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString(text)
	b.Write(data[off:])
	return b.Bytes()
}

// wizardLines are the lines the wizard appends to a template: which
// head is which node, and the disks confirmed for overwriting.
func wizardLines(nodes [2]nodeInput) []byte {
	var b bytes.Buffer
	b.WriteString("\n# Which head is which node, written by the pairing wizard (tandem pair):\n")
	for _, n := range nodes {
		fmt.Fprintf(&b, "%shead %s is node %s with certificate %x\n", headerTag, n.HeadID, n.Name, n.Fingerprint)
		for _, s := range n.Destroy {
			fmt.Fprintf(&b, "%sdestroy data on node %s disk serial:%s\n", headerTag, n.Name, s)
		}
	}
	return b.Bytes()
}

// withNewline ends data with a newline, so that lines can follow.
func withNewline(data []byte) []byte {
	if len(data) > 0 && data[len(data)-1] != '\n' {
		return append(bytes.Clone(data), '\n')
	}
	return data
}

// templateInput fills the wizard's form model from a checked template,
// for the pages that show it (the summary, if a browser looks later).
// The heads' IDs and certificates stay as they are.
func templateInput(sc *site.Config, in *siteInput) {
	in.PairName = sc.Pair.Name
	for h := range min(2, len(sc.Nodes)) {
		n, d := &in.Nodes[h], sc.Nodes[h]
		n.Name, n.MgmtNIC, n.Mgmt, n.Gateway = d.Name, d.Management.Interface, d.Management.Address, d.Management.Gateway
		n.DNS, n.Repl, n.Links = strings.Join(d.Management.DNS, ", "), d.Replication.Address, d.Replication.Links
	}
	in.VIP = sc.VIP.Address
	in.Witness, in.WitnessAddr, in.PingTarget = "witness", sc.Witness.Address, sc.Witness.PingTarget
	if sc.Witness.Address == "" && sc.Witness.PingTarget != "" {
		in.Witness = "ping"
	}
	in.Exports = [maxExports]exportInput{}
	for j, e := range sc.Services.NFS.Exports[:min(maxExports, len(sc.Services.NFS.Exports))] {
		in.Exports[j] = exportInput{Path: e.Path, Clients: strings.Join(e.Clients, ", "), Options: strings.Join(e.Options, ", ")}
	}
}
