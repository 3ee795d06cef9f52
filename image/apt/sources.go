package apt

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Source is one Debian archive suite: the index lives at
// <URI>/dists/<Suite>/ and the pool paths of its packages are relative to URI.
type Source struct {
	URI        string   // archive root, without trailing slash
	Suite      string   // e.g. bookworm-security
	Components []string // e.g. main, contrib
	// SignedBy is a keyring path or an inline armored key block; empty means
	// Client.Keyring.
	SignedBy string
	// Arches restricts the source (arch= / Architectures:); empty means any.
	Arches []string
	// NoValidUntil accepts a Release whose Valid-Until has passed
	// (check-valid-until=no / Check-Valid-Until: no), for a snapshot
	// mirror, which serves old indexes on purpose.
	NoValidUntil bool
}

// HostSources reads the deb sources configured under root (usually "/"):
// etc/apt/sources.list, etc/apt/sources.list.d/*.list and *.sources.
// deb-src entries, disabled stanzas and files with other suffixes are
// ignored. Entries for the same (URI, suite) are merged.
func HostSources(root string) ([]Source, error) {
	dir := filepath.Join(root, "etc", "apt")
	var all []Source
	main := filepath.Join(dir, "sources.list")
	if b, err := os.ReadFile(main); err == nil {
		srcs, err := parseOneLine(b)
		if err != nil {
			return nil, fmt.Errorf("apt: %s: %w", main, err)
		}
		all = append(all, srcs...)
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("apt: read host sources: %w", err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "sources.list.d"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("apt: read host sources: %w", err)
	}
	// ReadDir sorts by name, which is also apt's order.
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		var parse func([]byte) ([]Source, error)
		switch {
		case strings.HasSuffix(name, ".list"):
			parse = parseOneLine
		case strings.HasSuffix(name, ".sources"):
			parse = parseDeb822
		default:
			continue
		}
		p := filepath.Join(dir, "sources.list.d", name)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("apt: read host sources: %w", err)
		}
		srcs, err := parse(b)
		if err != nil {
			return nil, fmt.Errorf("apt: %s: %w", p, err)
		}
		all = append(all, srcs...)
	}
	// Keyring paths are relative to the same root as the sources.
	for i, s := range all {
		if root != "/" && root != "" && strings.HasPrefix(s.SignedBy, "/") && !strings.Contains(s.SignedBy, "\n") {
			all[i].SignedBy = joinEach(root, s.SignedBy)
		}
	}
	return mergeSources(all), nil
}

// joinEach prefixes root to each absolute path of a Signed-By list, leaving
// fingerprints alone.
func joinEach(root, list string) string {
	f := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' })
	for i, p := range f {
		if strings.HasPrefix(p, "/") {
			f[i] = filepath.Join(root, p)
		}
	}
	return strings.Join(f, ",")
}

// SuiteSources keeps the sources of a release: suite itself plus its
// -updates and -security suites (kernel security fixes live there).
func SuiteSources(srcs []Source, suite string) ([]Source, error) {
	var out []Source
	for _, s := range srcs {
		if s.Suite == suite || s.Suite == suite+"-updates" || s.Suite == suite+"-security" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("apt: no apt source for suite %q (have %s)", suite, suiteList(srcs))
	}
	return out, nil
}

// ParseMirror makes a Source from an explicit mirror given in the image
// spec. components defaults to main.
func ParseMirror(uri, suite string, components []string) (Source, error) {
	u, err := url.Parse(strings.TrimSpace(uri))
	if err != nil {
		return Source{}, fmt.Errorf("apt: mirror %q: %w", uri, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Source{}, fmt.Errorf("apt: mirror %q: want an http or https URL", uri)
	}
	if suite == "" || strings.ContainsAny(suite, " /") {
		return Source{}, fmt.Errorf("apt: mirror %q: bad suite %q", uri, suite)
	}
	if len(components) == 0 {
		components = []string{"main"}
	}
	return Source{
		URI:        strings.TrimRight(u.String(), "/"),
		Suite:      suite,
		Components: slices.Clone(components),
	}, nil
}

// parseOneLine parses the classic format:
// deb [opt=val ...] uri suite [component ...]
func parseOneLine(b []byte) ([]Source, error) {
	var out []Source
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		typ, rest, _ := strings.Cut(line, " ")
		typ = strings.TrimSpace(typ)
		rest = strings.TrimSpace(rest)
		if typ == "deb-src" {
			continue
		}
		if typ != "deb" {
			return nil, fmt.Errorf("line %d: unknown type %q", n, typ)
		}
		var opts map[string]string
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated [options]", n)
			}
			opts = map[string]string{}
			for _, kv := range strings.Fields(rest[1:end]) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, fmt.Errorf("line %d: bad option %q", n, kv)
				}
				opts[strings.ToLower(k)] = v
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want URI and suite", n)
		}
		s := Source{URI: strings.TrimRight(f[0], "/"), Suite: f[1], Components: fields(strings.Join(f[2:], " ")), SignedBy: opts["signed-by"]}
		if a := opts["arch"]; a != "" {
			s.Arches = strings.Split(a, ",")
		}
		s.NoValidUntil = isNo(opts["check-valid-until"])
		if flatRepo(s) {
			continue
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// parseDeb822 parses the .sources format: stanzas of Types/URIs/Suites/
// Components/Signed-By/Enabled/Architectures fields.
func parseDeb822(b []byte) ([]Source, error) {
	var out []Source
	stanzas, err := parseStanzas(string(b), true)
	if err != nil {
		return nil, err
	}
	for _, st := range stanzas {
		if strings.EqualFold(st.get("Enabled"), "no") {
			continue
		}
		if !slices.Contains(strings.Fields(st.get("Types")), "deb") {
			continue
		}
		uris := strings.Fields(st.get("URIs"))
		suites := strings.Fields(st.get("Suites"))
		if len(uris) == 0 || len(suites) == 0 {
			return nil, fmt.Errorf("stanza with Types: deb lacks URIs or Suites")
		}
		for _, u := range uris {
			for _, su := range suites {
				s := Source{
					URI:        strings.TrimRight(u, "/"),
					Suite:      su,
					Components: fields(st.get("Components")),
					SignedBy:   st.get("Signed-By"),
					Arches:     fields(st.get("Architectures")),
					// apt's own spelling of the option.
					NoValidUntil: isNo(st.get("Check-Valid-Until")),
				}
				if flatRepo(s) {
					continue
				}
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// flatRepo reports a flat repository ("suite/" and no components), which a
// Debian image never needs; skipping keeps the index layout uniform.
func flatRepo(s Source) bool {
	if strings.HasSuffix(s.Suite, "/") {
		slog.Debug("apt: skipping flat repository", "uri", s.URI, "suite", s.Suite)
		return true
	}
	return false
}

// isNo reads apt's boolean "no" (no, false, off, 0).
func isNo(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "no", "false", "off", "0", "without", "disable":
		return true
	}
	return false
}

// fields is strings.Fields but nil for none, so absent and empty compare
// equal.
func fields(s string) []string {
	if f := strings.Fields(s); len(f) > 0 {
		return f
	}
	return nil
}

func mergeSources(in []Source) []Source {
	var out []Source
	idx := map[[2]string]int{}
	for _, s := range in {
		k := [2]string{s.URI, s.Suite}
		i, ok := idx[k]
		if !ok {
			idx[k] = len(out)
			s.Components = slices.Clone(s.Components)
			out = append(out, s)
			continue
		}
		// The check stays unless every entry turns it off.
		out[i].NoValidUntil = out[i].NoValidUntil && s.NoValidUntil
		for _, c := range s.Components {
			if !slices.Contains(out[i].Components, c) {
				out[i].Components = append(out[i].Components, c)
			}
		}
	}
	return out
}

func suiteList(srcs []Source) string {
	var names []string
	for _, s := range srcs {
		if !slices.Contains(names, s.Suite) {
			names = append(names, s.Suite)
		}
	}
	if len(names) == 0 {
		return "no sources"
	}
	return strings.Join(names, ", ")
}
