package pid1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cmdline"
	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// modDB is what the builder writes next to the modules, in depmod's formats
// (paths relative to /lib/modules/<kernel>).
type modDB struct {
	known    map[string]bool     // has a .ko listed in modules.dep
	deps     map[string][]string // hard dependencies, from modules.dep
	pre      map[string][]string // softdep pre:, from modules.softdep
	post     map[string][]string // softdep post:
	aliases  [][2]string         // pattern, module; from modules.alias
	builtins map[string]bool     // from modules.builtin
}

// modName turns "kernel/fs/foo-bar.ko.xz" or "foo-bar" into "foo_bar",
// the name the kernel uses.
func modName(s string) string {
	s = path.Base(strings.TrimSpace(s))
	if i := strings.Index(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}

func newModDB() *modDB {
	return &modDB{
		known: map[string]bool{}, deps: map[string][]string{},
		pre: map[string][]string{}, post: map[string][]string{},
		builtins: map[string]bool{},
	}
}

// readModDB loads dir/modules.dep (required) and the optional softdep,
// alias and builtin files.
func readModDB(dir string) (*modDB, error) {
	db := newModDB()
	parsers := []struct {
		file     string
		required bool
		parse    func(io.Reader) error
	}{
		{"modules.dep", true, db.parseDep},
		{"modules.softdep", false, db.parseSoftdep},
		{"modules.alias", false, db.parseAlias},
		{"modules.builtin", false, db.parseBuiltin},
	}
	for _, p := range parsers {
		f, err := os.Open(filepath.Join(dir, p.file))
		if errors.Is(err, os.ErrNotExist) && !p.required {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("modules: %w", err)
		}
		err = p.parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("modules: %s: %w", p.file, err)
		}
	}
	return db, nil
}

// parseDep reads "kernel/a.ko: kernel/b.ko kernel/c.ko" lines.
func (db *modDB) parseDep(r io.Reader) error {
	return eachLine(r, func(line string) {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return
		}
		n := modName(mod)
		db.known[n] = true
		db.deps[n] = nil
		for _, d := range strings.Fields(deps) {
			db.deps[n] = append(db.deps[n], modName(d))
		}
	})
}

// parseSoftdep reads "softdep mod pre: a b post: c" lines.
func (db *modDB) parseSoftdep(r io.Reader) error {
	return eachLine(r, func(line string) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			return
		}
		n := modName(f[1])
		var list map[string][]string
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				list = db.pre
			case "post:":
				list = db.post
			default:
				if list != nil {
					list[n] = append(list[n], modName(w))
				}
			}
		}
	})
}

// parseAlias reads "alias pattern module" lines.
func (db *modDB) parseAlias(r io.Reader) error {
	return eachLine(r, func(line string) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "alias" {
			db.aliases = append(db.aliases, [2]string{strings.ReplaceAll(f[1], "-", "_"), modName(f[2])})
		}
	})
}

func (db *modDB) parseBuiltin(r io.Reader) error {
	return eachLine(r, func(line string) { db.builtins[modName(line)] = true })
}

func eachLine(r io.Reader, fn func(string)) error {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			fn(line)
		}
	}
	return s.Err()
}

// resolve maps a name from a list or a softdep to module names: the module
// itself, or every module whose alias matches (softdeps often name an alias,
// e.g. "crc32c"). Unknown names come back unchanged so the loader can say so.
func (db *modDB) resolve(name string) []string {
	n := modName(name)
	if db.known[n] || db.builtins[n] {
		return []string{n}
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range db.aliases {
		if ok, _ := path.Match(a[0], n); ok && !seen[a[1]] {
			seen[a[1]] = true
			out = append(out, a[1])
		}
	}
	if len(out) == 0 {
		return []string{n}
	}
	return out
}

// planItem is one module in load order.
type planItem struct {
	Name string
	// Soft items are only wanted by a softdep: failing to load one (e.g.
	// crc32c_intel without SSE4.2) is not an error.
	Soft bool
}

// plan orders the requested modules so that softdep pre: modules and hard
// dependencies come before each module and post: modules after it. The
// requested order is kept otherwise. Cycles are broken, not reported.
func (db *modDB) plan(names []string) []planItem {
	var out []planItem
	index := map[string]int{}
	visiting := map[string]bool{}
	var visit func(name string, soft bool)
	visit = func(name string, soft bool) {
		for _, n := range db.resolve(name) {
			if i, ok := index[n]; ok {
				out[i].Soft = out[i].Soft && soft
				continue
			}
			if visiting[n] {
				continue
			}
			visiting[n] = true
			for _, p := range db.pre[n] {
				visit(p, true)
			}
			for _, d := range db.deps[n] {
				visit(d, soft)
			}
			visiting[n] = false
			index[n] = len(out)
			out = append(out, planItem{Name: n, Soft: soft})
			for _, p := range db.post[n] {
				visit(p, true)
			}
		}
	}
	for _, n := range names {
		visit(n, false)
	}
	return out
}

// loadModules loads names and their dependencies from
// root/lib/modules/<kernel>, softdeps first. Built-in and already loaded
// modules are fine. It loads all it can and returns the joined failures.
func loadModules(log *slog.Logger, root, kernel string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	start := time.Now()
	dir := filepath.Join(root, "lib/modules", kernel)
	db, err := readModDB(dir)
	if err != nil {
		return err
	}
	prober, err := kmodule.NewProber(kmodule.ProbeOpts{RootDir: root, KVer: kernel})
	if err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	cl := cmdline.NewCmdLine() // module.param=value options
	var errs []error
	loaded, present := 0, 0
	for _, it := range db.plan(names) {
		if db.builtins[it.Name] || modulePresent(it.Name) {
			present++
			continue
		}
		if !db.known[it.Name] {
			if !it.Soft {
				errs = append(errs, fmt.Errorf("module %s: not in %s/modules.dep and not built in", it.Name, dir))
			}
			continue
		}
		t := time.Now()
		err := prober.Probe(it.Name, cl.FlagsForModule(it.Name))
		switch {
		case err == nil:
			loaded++
			log.Debug("module loaded", "name", it.Name, "ms", time.Since(t).Milliseconds())
		case it.Soft:
			log.Debug("optional module not loaded", "name", it.Name, "err", err)
		default:
			errs = append(errs, fmt.Errorf("module %s: %w", it.Name, err))
		}
	}
	log.Info("modules loaded", "from", dir, "loaded", loaded, "present", present,
		"failed", len(errs), "ms", time.Since(start).Milliseconds())
	return errors.Join(errs...)
}

// modulePresent reports a loaded module, or a built-in one that shows up in
// sysfs.
func modulePresent(name string) bool {
	return unix.Access("/sys/module/"+name, unix.F_OK) == nil
}
