package kmod

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// copiedIndexes are shipped by the kernel package and copied unchanged.
var copiedIndexes = []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"}

// WriteIndex writes modules.dep, modules.softdep and modules.alias into
// dir for the modules named in only (all modules if only is nil), and
// copies the built-in lists and modules.order when the kernel ships them.
// only must be closed under hard dependencies (see Closure), otherwise
// modules.dep would name files that are not there.
func (s *Set) WriteIndex(dir string, only []string) error {
	mods, err := s.subset(only)
	if err != nil {
		return fmt.Errorf("write module index: %w", err)
	}
	in := map[string]bool{}
	for _, m := range mods {
		in[m.Name] = true
	}

	var dep, soft, alias bytes.Buffer
	soft.WriteString("# Soft dependencies extracted from modules themselves.\n")
	alias.WriteString("# Aliases extracted from modules themselves.\n")
	byPath := slices.Clone(mods)
	slices.SortFunc(byPath, func(a, b *Module) int { return strings.Compare(a.Path, b.Path) })
	for _, m := range byPath {
		deps, err := s.hardOrder(m.Name)
		if err != nil {
			return fmt.Errorf("write module index: %w", err)
		}
		// depmod lists dependencies in reverse load order: direct users
		// first, the deepest dependency last (modprobe walks it backwards).
		slices.Reverse(deps)
		paths := make([]string, 0, len(deps))
		for _, d := range deps {
			if !in[d] {
				return fmt.Errorf("write module index: %s needs %s, which is not in the subset", m.Name, d)
			}
			paths = append(paths, s.Modules[d].Path)
		}
		fmt.Fprintf(&dep, "%s:", m.Path)
		for _, p := range paths {
			fmt.Fprintf(&dep, " %s", p)
		}
		dep.WriteByte('\n')
	}
	for _, m := range mods { // mods is sorted by name
		if len(m.SoftPre)+len(m.SoftPost) > 0 {
			fmt.Fprintf(&soft, "softdep %s", m.Name)
			if len(m.SoftPre) > 0 {
				fmt.Fprintf(&soft, " pre: %s", strings.Join(m.SoftPre, " "))
			}
			if len(m.SoftPost) > 0 {
				fmt.Fprintf(&soft, " post: %s", strings.Join(m.SoftPost, " "))
			}
			soft.WriteByte('\n')
		}
		for _, a := range m.Aliases {
			fmt.Fprintf(&alias, "alias %s %s\n", a, m.Name)
		}
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write module index: %w", err)
	}
	for name, b := range map[string][]byte{"modules.dep": dep.Bytes(), "modules.softdep": soft.Bytes(), "modules.alias": alias.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write module index: %w", err)
		}
	}
	for _, name := range copiedIndexes {
		src, dst := filepath.Join(s.Dir, name), filepath.Join(dir, name)
		same, err := sameFile(src, dst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // the kernel does not ship it
		case err != nil:
			return fmt.Errorf("write module index: %w", err)
		case same: // writing the index in place
			continue
		}
		if err := copyFile(src, dst); err != nil {
			return fmt.Errorf("write module index: %w", err)
		}
	}
	return nil
}

// subset returns the named modules (all if names is nil), sorted by name.
func (s *Set) subset(names []string) ([]*Module, error) {
	var mods []*Module
	if names == nil {
		for _, m := range s.Modules {
			mods = append(mods, m)
		}
	} else {
		seen := map[string]bool{}
		for _, n := range names {
			m, ok := s.Modules[Normalize(n)]
			if !ok {
				return nil, fmt.Errorf("%w %q", errUnknown, n)
			}
			if !seen[m.Name] {
				seen[m.Name] = true
				mods = append(mods, m)
			}
		}
	}
	slices.SortFunc(mods, func(a, b *Module) int { return strings.Compare(a.Name, b.Name) })
	return mods, nil
}

// hardOrder returns name's transitive hard dependencies in load order,
// name itself excluded.
func (s *Set) hardOrder(name string) ([]string, error) {
	c := &closure{s: s, state: map[string]int{}, hardOnly: true}
	if err := c.visit(name); err != nil {
		return nil, err
	}
	return c.order[:len(c.order)-1], nil // visit appends name last
}

// Copy copies the named modules, and everything Closure adds to them,
// from srcModDir to dstModDir keeping relative paths, then writes the
// indexes there. Use Closure for the load order.
func Copy(srcModDir, dstModDir string, names []string) error {
	s, err := Scan(srcModDir)
	if err != nil {
		return err
	}
	return s.CopyTo(dstModDir, names)
}

// CopyTo is Copy for an already scanned Set (Scan takes ~0.5 s).
func (s *Set) CopyTo(dstModDir string, names []string) error {
	order, err := s.Closure(names)
	if err != nil {
		return fmt.Errorf("copy modules: %w", err)
	}
	for _, n := range order {
		rel := filepath.FromSlash(s.Modules[n].Path)
		dst := filepath.Join(dstModDir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("copy modules: %w", err)
		}
		if err := copyFile(filepath.Join(s.Dir, rel), dst); err != nil {
			return fmt.Errorf("copy modules: %w", err)
		}
	}
	// An empty order (everything built in) still gets empty indexes, not all.
	if order == nil {
		order = []string{}
	}
	if err := s.WriteIndex(dstModDir, order); err != nil {
		return fmt.Errorf("copy modules: %w", err)
	}
	return nil
}

func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
