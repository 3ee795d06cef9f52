// Package kmod does what depmod would do for a Debian kernel package: the
// package ships no modules.dep (depmod runs in its postinst, which the
// builder never runs), so the dependency, soft-dependency and alias
// indexes are rebuilt here from each module's .modinfo section.
package kmod

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"tandem.dev/tandem/internal/compress"
)

// Module is what the builder needs to know about one loadable module.
type Module struct {
	// Name is normalized: '-' becomes '_'.
	Name string
	// Path is slash-separated and relative to the modules directory,
	// e.g. "kernel/fs/ext4/ext4.ko" (compressed suffix included).
	Path     string
	Depends  []string // hard dependencies, module names as in .modinfo
	SoftPre  []string // soft "pre:" names; may be aliases
	SoftPost []string // soft "post:" names; may be aliases
	Aliases  []string
	Firmware []string
}

// Set indexes the modules of one kernel.
type Set struct {
	// Dir is the scanned modules directory (<root>/usr/lib/modules/<kver>).
	Dir     string
	Modules map[string]*Module
	// Builtin holds the normalized names of modules built into the kernel.
	Builtin map[string]bool

	aliases        map[string][]string // normalized exact alias -> module names
	globs          []aliasGlob         // aliases with wildcards
	builtinAliases map[string]bool     // normalized aliases of built-in modules
}

type aliasGlob struct{ pattern, module string }

// suffixes are the module file endings Scan recognizes, and how to
// decompress each.
var suffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func moduleSuffix(name string) string {
	for _, s := range suffixes {
		if strings.HasSuffix(name, s) {
			return s
		}
	}
	return ""
}

// Normalize returns the canonical module name: kmod treats '-' and '_'
// as the same.
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// normalizeAlias is kmod's alias_normalize: '-' to '_', except inside
// [...] character classes.
func normalizeAlias(a string) string {
	var b strings.Builder
	inClass := false
	for _, c := range a {
		switch {
		case c == '[':
			inClass = true
		case c == ']':
			inClass = false
		case c == '-' && !inClass:
			c = '_'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Scan reads .modinfo of every module below modDir and the built-in lists.
func Scan(modDir string) (*Set, error) {
	var paths []string
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && moduleSuffix(d.Name()) != "" {
			rel, err := filepath.Rel(modDir, p)
			if err != nil {
				return err
			}
			paths = append(paths, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", modDir, err)
	}
	slices.Sort(paths)

	// Reading ~4000 ELF files is I/O plus (for compressed modules)
	// decompression bound; a small worker pool keeps Scan well under a second.
	mods := make([]*Module, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				mods[i], errs[i] = readModule(modDir, paths[i])
			}
		})
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", modDir, err)
	}

	s := &Set{
		Dir:            modDir,
		Modules:        make(map[string]*Module, len(mods)),
		Builtin:        map[string]bool{},
		aliases:        map[string][]string{},
		builtinAliases: map[string]bool{},
	}
	for _, m := range mods {
		if prev, dup := s.Modules[m.Name]; dup {
			return nil, fmt.Errorf("scan modules in %s: module %s twice: %s and %s", modDir, m.Name, prev.Path, m.Path)
		}
		s.Modules[m.Name] = m
		for _, a := range m.Aliases {
			if strings.ContainsAny(a, "*?[") {
				s.globs = append(s.globs, aliasGlob{normalizeAlias(a), m.Name})
			} else {
				na := normalizeAlias(a)
				s.aliases[na] = append(s.aliases[na], m.Name)
			}
		}
	}
	if err := s.readBuiltin(); err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", modDir, err)
	}
	return s, nil
}

// readModule parses one module's .modinfo section.
func readModule(modDir, rel string) (*Module, error) {
	raw, err := os.ReadFile(filepath.Join(modDir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	data, err := compress.Bytes(raw, strings.TrimPrefix(moduleSuffix(rel), ".ko"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", rel)
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: read .modinfo: %w", rel, err)
	}
	m := &Module{Path: rel}
	for kv := range bytes.SplitSeq(info, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue // padding between entries
		}
		switch k {
		case "name":
			m.Name = Normalize(v)
		case "depends":
			for d := range strings.SplitSeq(v, ",") {
				if d != "" {
					m.Depends = append(m.Depends, Normalize(d))
				}
			}
		case "softdep":
			pre, post := parseSoftdep(v)
			m.SoftPre = append(m.SoftPre, pre...)
			m.SoftPost = append(m.SoftPost, post...)
		case "alias":
			m.Aliases = append(m.Aliases, v)
		case "firmware":
			m.Firmware = append(m.Firmware, v)
		}
	}
	if m.Name == "" { // name= appeared in 4.x; older modules only have the file name
		m.Name = Normalize(strings.TrimSuffix(path.Base(rel), moduleSuffix(rel)))
	}
	return m, nil
}

// parseSoftdep splits "pre: a b post: c". Names before any "pre:"/"post:"
// are ignored, as kmod does (6.1's cifs ships "softdep=gcm" and friends).
func parseSoftdep(v string) (pre, post []string) {
	var cur *[]string
	for _, tok := range strings.Fields(v) {
		switch tok {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, tok)
			}
		}
	}
	return pre, post
}

// readBuiltin reads modules.builtin (paths) and modules.builtin.modinfo
// ("name.alias=x" records) so that built-in names and aliases resolve.
func (s *Set) readBuiltin() error {
	b, err := os.ReadFile(filepath.Join(s.Dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read modules.builtin: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if p := strings.TrimSpace(sc.Text()); p != "" {
			s.Builtin[Normalize(strings.TrimSuffix(path.Base(p), ".ko"))] = true
		}
	}
	info, err := os.ReadFile(filepath.Join(s.Dir, "modules.builtin.modinfo"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read modules.builtin.modinfo: %w", err)
	}
	for rec := range bytes.SplitSeq(info, []byte{0}) {
		key, val, ok := strings.Cut(string(rec), "=")
		if !ok {
			continue
		}
		mod, field, ok := strings.Cut(key, ".")
		if !ok {
			continue
		}
		s.Builtin[Normalize(mod)] = true
		if field == "alias" {
			s.builtinAliases[normalizeAlias(val)] = true
		}
	}
	return nil
}

// errUnknown marks a name that is neither a module, an alias nor built in.
var errUnknown = errors.New("unknown module")

// resolve maps a module name or alias to module names, like modprobe:
// a module name wins; otherwise every module declaring the alias, sorted.
// builtin reports a name satisfied by the kernel itself.
func (s *Set) resolve(name string) (mods []string, builtin bool, err error) {
	n := Normalize(name)
	if _, ok := s.Modules[n]; ok {
		return []string{n}, false, nil
	}
	if s.Builtin[n] {
		return nil, true, nil
	}
	a := normalizeAlias(name)
	mods = slices.Clone(s.aliases[a])
	for _, g := range s.globs {
		if ok, _ := path.Match(g.pattern, a); ok {
			mods = append(mods, g.module)
		}
	}
	if len(mods) > 0 {
		slices.Sort(mods)
		return slices.Compact(mods), false, nil
	}
	if s.builtinAliases[a] {
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("%w %q", errUnknown, name)
}

// Closure returns names plus everything they need, transitively: hard
// dependencies and soft pre/post dependencies, in load order (a module
// after its dependencies and "pre:" soft dependencies, before its "post:"
// ones). The order is a function of the input order only. Names may be
// aliases; an alias with several providers (crc32c: crc32c_generic and
// crc32c_intel) yields all of them, and a loader should not treat a
// hardware-specific one failing with ENODEV as fatal. Built-in modules are
// dropped. Unknown names and hard dependencies are errors; unknown soft
// dependencies are skipped, as modprobe does (several modules in 6.1 name
// soft dependencies that Debian builds in or does not build at all).
func (s *Set) Closure(names []string) ([]string, error) {
	c := &closure{s: s, state: map[string]int{}, hard: map[string]map[string]bool{}}
	for _, name := range names {
		mods, _, err := s.resolve(name)
		if err != nil {
			return nil, fmt.Errorf("module closure: %w", err)
		}
		for _, m := range mods {
			if err := c.visit(m); err != nil {
				return nil, fmt.Errorf("module closure: %w", err)
			}
		}
		// Nothing is in progress now, so deferred soft dependencies fit.
		for len(c.deferred) > 0 {
			m := c.deferred[0]
			c.deferred = c.deferred[1:]
			if err := c.visit(m); err != nil {
				return nil, fmt.Errorf("module closure: %w", err)
			}
		}
	}
	return c.order, nil
}

const (
	unvisited = iota
	visiting
	done
)

type closure struct {
	s        *Set
	state    map[string]int
	stack    []string                   // modules being visited, outermost first
	hard     map[string]map[string]bool // memo: transitive hard dependencies
	deferred []string                   // soft dependencies that had to wait
	order    []string
	hardOnly bool // ignore soft dependencies (for modules.dep)
}

// visit appends name after its dependencies.
func (c *closure) visit(name string) error {
	switch c.state[name] {
	case done:
		return nil
	case visiting:
		return fmt.Errorf("dependency cycle: %s -> %s", strings.Join(c.stack, " -> "), name)
	}
	c.state[name] = visiting
	c.stack = append(c.stack, name)
	m := c.s.Modules[name]
	if !c.hardOnly {
		if err := c.visitSoft(m.SoftPre); err != nil {
			return err
		}
	}
	deps, err := c.s.hardDeps(m)
	if err != nil {
		return err
	}
	for _, d := range deps {
		if err := c.visit(d); err != nil {
			return err
		}
	}
	c.stack = c.stack[:len(c.stack)-1]
	c.state[name] = done
	c.order = append(c.order, name)
	if c.hardOnly {
		return nil
	}
	return c.visitSoft(m.SoftPost)
}

// hardDeps resolves m's depends= list, built-ins removed.
func (s *Set) hardDeps(m *Module) ([]string, error) {
	var out []string
	for _, d := range m.Depends {
		mods, builtin, err := s.resolve(d)
		if err != nil {
			return nil, fmt.Errorf("%s depends on %w", m.Name, err)
		}
		if !builtin {
			out = append(out, mods...)
		}
	}
	return out, nil
}

// reachesHard reports whether name hard-depends, transitively, on any
// module in targets.
func (c *closure) reachesHard(name string, targets []string) (bool, error) {
	all, ok := c.hard[name]
	if !ok {
		all = map[string]bool{}
		c.hard[name] = all // a hard cycle ends here instead of recursing forever
		deps, err := c.s.hardDeps(c.s.Modules[name])
		if err != nil {
			return false, err
		}
		for _, d := range deps {
			all[d] = true
			if _, err := c.reachesHard(d, nil); err != nil {
				return false, err
			}
			for k := range c.hard[d] {
				all[k] = true
			}
		}
	}
	for _, t := range targets {
		if all[t] {
			return true, nil
		}
	}
	return false, nil
}

// visitSoft follows soft dependencies. Soft ordering is a preference: a
// soft dependency already in progress is left where it is, and one that
// hard-depends on a module in progress waits until that one is done
// instead of making a cycle.
func (c *closure) visitSoft(names []string) error {
	for _, sd := range names {
		mods, _, err := c.s.resolve(sd)
		if errors.Is(err, errUnknown) {
			slog.Debug("kmod: skipping unknown soft dependency", "name", sd)
			continue
		}
		if err != nil {
			return err
		}
		for _, m := range mods {
			if c.state[m] != unvisited {
				continue
			}
			wait, err := c.reachesHard(m, c.stack)
			if err != nil {
				return err
			}
			if wait {
				c.deferred = append(c.deferred, m)
				continue
			}
			if err := c.visit(m); err != nil {
				return err
			}
		}
	}
	return nil
}
