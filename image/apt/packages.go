package apt

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"pault.ag/go/debian/version"
)

// Package is one binary package stanza of a Packages index.
type Package struct {
	Name         string
	Version      string
	Architecture string
	Filename     string // pool path, relative to SourceURI
	SHA256       string
	Size         int64
	Depends      string // raw relation fields, parsed on demand
	PreDepends   string
	Provides     string
	Essential    bool
	Priority     string
	MultiArch    string
	SourceURI    string // archive root the package came from
	Suite        string

	ver    version.Version
	verErr error
	parsed bool
}

// version returns the parsed version, memoised: sorting and resolving
// compare the same versions many times.
func (p *Package) version() (version.Version, error) {
	if !p.parsed {
		p.ver, p.verErr = version.Parse(p.Version)
		p.parsed = true
	}
	return p.ver, p.verErr
}

// String is "name version" for messages.
func (p *Package) String() string { return p.Name + " " + p.Version }

// parsePackages reads a Packages file. It is hand-written rather than
// pault.ag/go/debian/control because it keeps only a dozen fields and
// slices the input instead of copying: a Debian main index is ~60k stanzas.
func parsePackages(data string, src Source, fn func(*Package)) error {
	var p *Package
	var last *string // field that continuation lines extend, if kept
	line := 0
	end := func() error {
		if p == nil {
			return nil
		}
		if p.Name == "" || p.Version == "" || p.Filename == "" {
			return fmt.Errorf("line %d: stanza lacks Package, Version or Filename", line)
		}
		fn(p)
		p = nil
		return nil
	}
	for len(data) > 0 {
		line++
		var l string
		if i := strings.IndexByte(data, '\n'); i >= 0 {
			l, data = data[:i], data[i+1:]
		} else {
			l, data = data, ""
		}
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		if l == "" {
			if err := end(); err != nil {
				return err
			}
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			if last != nil {
				*last += " " + strings.TrimSpace(l)
			}
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return fmt.Errorf("line %d: want \"Field: value\"", line)
		}
		v = strings.TrimSpace(v)
		if p == nil {
			p = &Package{SourceURI: src.URI, Suite: src.Suite}
		}
		last = nil
		switch k {
		case "Package":
			p.Name = v
		case "Version":
			p.Version = v
		case "Architecture":
			p.Architecture = v
		case "Filename":
			p.Filename = v
		case "SHA256":
			p.SHA256 = v
		case "Size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("line %d: Size: %w", line, err)
			}
			p.Size = n
		case "Depends":
			p.Depends, last = v, &p.Depends
		case "Pre-Depends":
			p.PreDepends, last = v, &p.PreDepends
		case "Provides":
			p.Provides, last = v, &p.Provides
		case "Essential":
			p.Essential = v == "yes"
		case "Priority":
			p.Priority = v
		case "Multi-Arch":
			p.MultiArch = v
		}
	}
	return end()
}

// relation is one alternative of a dependency: name[:arch] [(op ver)].
type relation struct {
	name, arch, op, ver string
}

func (r relation) String() string {
	s := r.name
	if r.arch != "" {
		s += ":" + r.arch
	}
	if r.op != "" {
		s += " (" + r.op + " " + r.ver + ")"
	}
	return s
}

// parseRelations parses a Depends-style field into AND-groups of
// OR-alternatives. Alternatives restricted to other architectures
// ("[!amd64]") are dropped; build profiles ("<!nocheck>") are ignored.
func parseRelations(s, arch string) ([][]relation, error) {
	var out [][]relation
	for _, group := range strings.Split(s, ",") {
		if strings.TrimSpace(group) == "" {
			continue
		}
		var alts []relation
		for _, alt := range strings.Split(group, "|") {
			r, keep, err := parseRelation(alt, arch)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", strings.TrimSpace(group), err)
			}
			if keep {
				alts = append(alts, r)
			}
		}
		if len(alts) > 0 {
			out = append(out, alts)
		}
	}
	return out, nil
}

func parseRelation(s, arch string) (r relation, keep bool, err error) {
	s = strings.TrimSpace(s)
	// Anything after the optional "[arch list]" is a build profile: ignored.
	end := strings.IndexAny(s, " \t([<")
	if end < 0 {
		end = len(s)
	}
	r.name, s = s[:end], strings.TrimSpace(s[end:])
	r.name, r.arch, _ = strings.Cut(r.name, ":")
	if r.name == "" {
		return r, false, fmt.Errorf("empty package name")
	}
	if strings.HasPrefix(s, "(") {
		c := strings.IndexByte(s, ')')
		if c < 0 {
			return r, false, fmt.Errorf("unterminated version constraint")
		}
		in := strings.TrimSpace(s[1:c])
		s = strings.TrimSpace(s[c+1:])
		i := 0
		for i < len(in) && strings.IndexByte("<=>", in[i]) >= 0 {
			i++
		}
		r.op, r.ver = in[:i], strings.TrimSpace(in[i:])
		switch r.op {
		case "<<", "<=", "=", ">=", ">>":
		case "<": // obsolete spellings, still legal
			r.op = "<="
		case ">":
			r.op = ">="
		default:
			return r, false, fmt.Errorf("bad operator %q", r.op)
		}
		if r.ver == "" {
			return r, false, fmt.Errorf("missing version after %s", r.op)
		}
	}
	keep = true
	if strings.HasPrefix(s, "[") {
		c := strings.IndexByte(s, ']')
		if c < 0 {
			return r, false, fmt.Errorf("unterminated architecture list")
		}
		keep = archListMatches(strings.Fields(s[1:c]), arch)
	}
	return r, keep, nil
}

func archListMatches(list []string, arch string) bool {
	neg := len(list) > 0 && strings.HasPrefix(list[0], "!")
	if neg {
		return !slices.Contains(list, "!"+arch)
	}
	return slices.Contains(list, arch)
}

// satisfies reports whether version have meets "op want".
func satisfies(have version.Version, op, want string) (bool, error) {
	if op == "" {
		return true, nil
	}
	w, err := version.Parse(want)
	if err != nil {
		return false, fmt.Errorf("version %q: %w", want, err)
	}
	c := version.Compare(have, w)
	switch op {
	case "<<":
		return c < 0, nil
	case "<=":
		return c <= 0, nil
	case "=":
		return c == 0, nil
	case ">=":
		return c >= 0, nil
	case ">>":
		return c > 0, nil
	}
	return false, fmt.Errorf("bad operator %q", op)
}
