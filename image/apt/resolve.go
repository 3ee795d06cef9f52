package apt

import (
	"fmt"
	"slices"
	"strings"

	"pault.ag/go/debian/version"
)

// ResolveOptions tunes Resolve.
type ResolveOptions struct {
	// Exclude names packages (real or virtual) the image deliberately
	// omits: a dependency on one counts as satisfied and is recorded in
	// Resolution.Excluded.
	Exclude []string
}

// Resolution is a dependency closure.
type Resolution struct {
	Arch     string
	Packages []*Package // sorted by name, one version per name
	Excluded []Exclusion
	// Reason maps each selected package to the package that first pulled it
	// in; roots map to "".
	Reason map[string]string
}

// Exclusion records who depended on an excluded package.
type Exclusion struct {
	Name     string
	WantedBy []string // sorted
}

// TotalSize is the sum of the .deb sizes.
func (r *Resolution) TotalSize() int64 {
	var n int64
	for _, p := range r.Packages {
		n += p.Size
	}
	return n
}

// Why returns the chain root → … → name that pulled name in, or nil if it
// was not selected.
func (r *Resolution) Why(name string) []string {
	var chain []string
	for {
		parent, ok := r.Reason[name]
		if !ok || slices.Contains(chain, name) {
			return nil
		}
		chain = append(chain, name)
		if parent == "" {
			slices.Reverse(chain)
			return chain
		}
		name = parent
	}
}

type resolver struct {
	idx      *Index
	selected map[string]*Package
	reason   map[string]string
	excluded map[string]bool
	wanted   map[string]map[string]bool
	queue    []*Package
}

// Resolve computes the closure of roots over Depends and Pre-Depends.
// A root is "name", "name=version" or "name (op version)". Among
// alternatives the first satisfiable one is taken unless another is already
// selected; Recommends, Suggests, Conflicts and Breaks are not considered.
// One version per package name is selected: the highest that satisfies the
// first constraint met.
func (idx *Index) Resolve(roots []string, opts ResolveOptions) (*Resolution, error) {
	r := &resolver{
		idx:      idx,
		selected: map[string]*Package{},
		reason:   map[string]string{},
		excluded: map[string]bool{},
		wanted:   map[string]map[string]bool{},
	}
	for _, e := range opts.Exclude {
		r.excluded[strings.TrimSpace(e)] = true
	}
	// Roots go first so that their explicit versions win over dependencies.
	for _, root := range roots {
		if err := r.addRoot(root); err != nil {
			return nil, err
		}
	}
	for len(r.queue) > 0 {
		p := r.queue[0]
		r.queue = r.queue[1:]
		for _, field := range []string{p.PreDepends, p.Depends} {
			groups, err := parseRelations(field, idx.Arch)
			if err != nil {
				return nil, fmt.Errorf("apt: %s: %w", p, err)
			}
			for _, g := range groups {
				if err := r.satisfy(p, g); err != nil {
					return nil, err
				}
			}
		}
	}
	res := &Resolution{Arch: idx.Arch, Reason: r.reason}
	for _, p := range r.selected {
		res.Packages = append(res.Packages, p)
	}
	slices.SortFunc(res.Packages, func(a, b *Package) int { return strings.Compare(a.Name, b.Name) })
	for name, by := range r.wanted {
		e := Exclusion{Name: name}
		for b := range by {
			e.WantedBy = append(e.WantedBy, b)
		}
		slices.Sort(e.WantedBy)
		res.Excluded = append(res.Excluded, e)
	}
	slices.SortFunc(res.Excluded, func(a, b Exclusion) int { return strings.Compare(a.Name, b.Name) })
	return res, nil
}

func parseRoot(root string) (relation, error) {
	root = strings.TrimSpace(root)
	if name, ver, ok := strings.Cut(root, "="); ok && !strings.Contains(root, "(") {
		return relation{name: strings.TrimSpace(name), op: "=", ver: strings.TrimSpace(ver)}, nil
	}
	if strings.ContainsAny(root, ",|") {
		return relation{}, fmt.Errorf("apt: root %q: want one package, not a list", root)
	}
	rel, _, err := parseRelation(root, "")
	if err != nil {
		return relation{}, fmt.Errorf("apt: root %q: %w", root, err)
	}
	return rel, nil
}

func (r *resolver) addRoot(root string) error {
	rel, err := parseRoot(root)
	if err != nil {
		return err
	}
	if r.excluded[rel.name] {
		return fmt.Errorf("apt: package %q is both requested and excluded", rel.name)
	}
	if ok, err := r.satisfiedBySelected(rel); err != nil {
		return fmt.Errorf("apt: root %q: %w", root, err)
	} else if ok {
		return nil
	}
	p, err := r.candidate(rel)
	if err != nil {
		return fmt.Errorf("apt: root %q: %w", root, err)
	}
	if p != nil {
		r.add(p, "")
		return nil
	}
	if len(r.idx.byName[rel.name]) == 0 && len(r.idx.provides[rel.name]) == 0 {
		return fmt.Errorf("apt: package %q not found in %s", rel.name, r.idx.suites())
	}
	return fmt.Errorf("apt: package %q: %s", rel.String(), r.explain(rel))
}

func (r *resolver) add(p *Package, by string) {
	r.selected[p.Name] = p
	r.reason[p.Name] = by
	r.queue = append(r.queue, p)
}

func (r *resolver) satisfy(p *Package, group []relation) error {
	for _, alt := range group {
		ok, err := r.satisfiedBySelected(alt)
		if err != nil {
			return fmt.Errorf("apt: %s: %w", p, err)
		}
		if ok {
			return nil
		}
	}
	for _, alt := range group {
		if x := r.excludedFor(alt); x != "" {
			if r.wanted[x] == nil {
				r.wanted[x] = map[string]bool{}
			}
			r.wanted[x][p.Name] = true
			return nil
		}
		c, err := r.candidate(alt)
		if err != nil {
			return fmt.Errorf("apt: %s: %w", p, err)
		}
		if c != nil {
			r.add(c, p.Name)
			return nil
		}
	}
	var why []string
	for _, alt := range group {
		why = append(why, r.explain(alt))
	}
	return fmt.Errorf("apt: %s depends on %q: %s", p, groupString(group), strings.Join(why, "; "))
}

// excludedFor returns the excluded name that stands for alt: alt itself, or
// for a virtual package whose providers are all excluded, the first one.
func (r *resolver) excludedFor(alt relation) string {
	if r.excluded[alt.name] {
		return alt.name
	}
	provs := r.idx.provides[alt.name]
	if len(r.idx.byName[alt.name]) > 0 || len(provs) == 0 {
		return ""
	}
	for _, pr := range provs {
		if !r.excluded[pr.pkg.Name] {
			return ""
		}
	}
	return provs[0].pkg.Name
}

// archOK: the image is single-architecture, so ":any" and ":native" are
// met by native and "all" packages, the only ones in the index.
func (r *resolver) archOK(rel relation) bool {
	switch rel.arch {
	case "", "any", "native", r.idx.Arch:
		return true
	}
	return false
}

func (r *resolver) satisfiedBySelected(rel relation) (bool, error) {
	if !r.archOK(rel) {
		return false, nil
	}
	if s := r.selected[rel.name]; s != nil {
		ok, err := satisfies(s.ver, rel.op, rel.ver)
		if err != nil || ok {
			return ok, err
		}
	}
	for _, pr := range r.idx.provides[rel.name] {
		if r.selected[pr.pkg.Name] != pr.pkg {
			continue
		}
		if ok, err := providerMeets(pr, rel); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// providerMeets: an unversioned Provides meets only unversioned
// dependencies (Debian policy 7.5).
func providerMeets(pr provider, rel relation) (bool, error) {
	if rel.op == "" {
		return true, nil
	}
	if pr.ver == "" {
		return false, nil
	}
	v, err := version.Parse(pr.ver)
	if err != nil {
		return false, fmt.Errorf("%s provides %s version %q: %w", pr.pkg, rel.name, pr.ver, err)
	}
	return satisfies(v, rel.op, rel.ver)
}

// candidate picks a package to satisfy rel given the current selection:
// the highest matching version of the real package, else a provider chosen
// by Priority and then name. nil means none.
func (r *resolver) candidate(rel relation) (*Package, error) {
	if !r.archOK(rel) {
		return nil, nil
	}
	if r.selected[rel.name] == nil {
		for _, p := range r.idx.byName[rel.name] {
			ok, err := satisfies(p.ver, rel.op, rel.ver)
			if err != nil {
				return nil, err
			}
			if ok && !r.excluded[p.Name] {
				return p, nil
			}
		}
	}
	var best *Package
	for _, pr := range r.idx.provides[rel.name] {
		if s := r.selected[pr.pkg.Name]; (s != nil && s != pr.pkg) || r.excluded[pr.pkg.Name] {
			continue
		}
		ok, err := providerMeets(pr, rel)
		if err != nil {
			return nil, err
		}
		if ok && (best == nil || priorityRank(pr.pkg.Priority) < priorityRank(best.Priority)) {
			best = pr.pkg
		}
	}
	return best, nil
}

// explain says why rel cannot be met, for error messages.
func (r *resolver) explain(rel relation) string {
	if !r.archOK(rel) {
		return fmt.Sprintf("%s: only %s is indexed", rel, r.idx.Arch)
	}
	if s := r.selected[rel.name]; s != nil {
		return fmt.Sprintf("%s is already selected", s)
	}
	var have []string
	for _, p := range r.idx.byName[rel.name] {
		have = append(have, p.Version)
	}
	for _, pr := range r.idx.provides[rel.name] {
		s := pr.pkg.Name + " provides it"
		if pr.ver != "" {
			s = fmt.Sprintf("%s provides %s", pr.pkg.Name, pr.ver)
		}
		have = append(have, s)
	}
	if len(have) == 0 {
		return fmt.Sprintf("no package %q in %s", rel.name, r.idx.suites())
	}
	return fmt.Sprintf("no version of %s matches (have %s)", rel, strings.Join(have, ", "))
}

func groupString(g []relation) string {
	s := make([]string, len(g))
	for i, r := range g {
		s[i] = r.String()
	}
	return strings.Join(s, " | ")
}

func priorityRank(p string) int {
	switch p {
	case "required":
		return 0
	case "important":
		return 1
	case "standard":
		return 2
	case "optional":
		return 3
	case "extra":
		return 4
	}
	return 5
}
