package apt

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"

	"pault.ag/go/debian/version"
)

// Index is the merged package universe of a set of sources for one
// architecture.
type Index struct {
	Arch    string
	Sources []Source

	byName   map[string][]*Package // highest version first
	provides map[string][]provider
	count    int
}

type provider struct {
	pkg *Package
	ver string // versioned Provides, else ""
}

// ParsePackages parses the text of a Packages index whose packages come
// from src.
func ParsePackages(data []byte, src Source) ([]*Package, error) {
	var out []*Package
	err := parsePackages(string(data), src, func(p *Package) { out = append(out, p) })
	if err != nil {
		return nil, fmt.Errorf("apt: Packages of %s %s: %w", src.URI, src.Suite, err)
	}
	return out, nil
}

// NewIndex builds an index from packages, in source priority order: when
// two carry the same name and version the first one is kept. Packages of
// other architectures than arch and "all" are dropped.
func NewIndex(arch string, sources []Source, pkgs []*Package) *Index {
	idx := &Index{
		Arch:     arch,
		Sources:  sources,
		byName:   make(map[string][]*Package, len(pkgs)),
		provides: map[string][]provider{},
	}
	for _, p := range pkgs {
		if p.Architecture != arch && p.Architecture != "all" {
			continue
		}
		if _, err := p.version(); err != nil {
			slog.Warn("apt: skipping package with bad version", "package", p.Name, "version", p.Version, "err", err)
			continue
		}
		idx.byName[p.Name] = append(idx.byName[p.Name], p)
	}
	for name, list := range idx.byName {
		if len(list) > 1 {
			// Stable, so that among equal versions the first source wins.
			slices.SortStableFunc(list, func(a, b *Package) int {
				return -version.Compare(a.ver, b.ver)
			})
			list = slices.CompactFunc(list, func(a, b *Package) bool { return a.Version == b.Version })
			idx.byName[name] = list
		}
		idx.count += len(list)
		for _, p := range list {
			if p.Provides == "" {
				continue
			}
			rels, err := parseRelations(p.Provides, arch)
			if err != nil {
				slog.Warn("apt: ignoring bad Provides", "package", p.String(), "err", err)
				continue
			}
			for _, g := range rels {
				for _, r := range g {
					idx.provides[r.name] = append(idx.provides[r.name], provider{pkg: p, ver: r.ver})
				}
			}
		}
	}
	// Map iteration is random: order providers for deterministic choices.
	for _, list := range idx.provides {
		slices.SortFunc(list, func(a, b provider) int {
			return cmp.Or(cmp.Compare(a.pkg.Name, b.pkg.Name), -version.Compare(a.pkg.ver, b.pkg.ver))
		})
	}
	return idx
}

// Len is the number of package versions in the index.
func (idx *Index) Len() int { return idx.count }

// Lookup returns the highest version of a real package, or nil.
func (idx *Index) Lookup(name string) *Package {
	if l := idx.byName[name]; len(l) > 0 {
		return l[0]
	}
	return nil
}

// Versions returns every version of a real package, highest first.
func (idx *Index) Versions(name string) []*Package {
	return slices.Clone(idx.byName[name])
}

// Essential lists the names of Essential: yes packages, sorted. The builder
// may add them to its roots: nothing declares dependencies on them.
func (idx *Index) Essential() []string {
	var out []string
	for name, l := range idx.byName {
		if l[0].Essential {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (idx *Index) suites() string { return suiteList(idx.Sources) }
