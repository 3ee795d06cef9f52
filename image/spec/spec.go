// Package spec reads the image spec: what goes into a Tandem image (Debian
// suite, kernel, userland, board, disk sizes, declarative rootfs fix-ups).
package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/internal/tomlpos"
)

// Spec is a decoded, checked image spec.
type Spec struct {
	Name            string   `toml:"name"`
	Board           string   `toml:"board"`
	SourceDateEpoch int64    `toml:"source_date_epoch"`
	Disk            Disk     `toml:"disk"`
	Debian          Debian   `toml:"debian"`
	Kernel          Kernel   `toml:"kernel"`
	Boot            Boot     `toml:"boot"`
	Packages        Packages `toml:"packages"`
	Rootfs          Rootfs   `toml:"rootfs"`

	// File is where the spec came from ("embedded:configs/image.toml" for the default).
	File string `toml:"-"`
	// Raw is the exact spec text; the builder hashes it.
	Raw []byte `toml:"-"`

	doc *tomlpos.Doc
}

// Disk sizes are strings like "2GiB" or "512MiB".
type Disk struct {
	Size   Size `toml:"size"`
	ESP    Size `toml:"esp"`
	Root   Size `toml:"root"`
	Config Size `toml:"config"`
}

// Debian says where packages come from.
type Debian struct {
	Suite      string   `toml:"suite"`
	Components []string `toml:"components"`
	Arch       string   `toml:"arch"`
	// Mirror is optional: without it the host's apt sources are used.
	Mirror  string `toml:"mirror"`
	Keyring string `toml:"keyring"`
	// CheckValidUntil false accepts an index whose Valid-Until has
	// passed, for a snapshot mirror; unset means true.
	CheckValidUntil *bool `toml:"check_valid_until"`
}

// ValidUntilChecked reports whether an expired index is refused when
// packages are resolved (the default).
func (d Debian) ValidUntilChecked() bool { return d.CheckValidUntil == nil || *d.CheckValidUntil }

// Kernel names the Debian kernel package and extra command-line options.
type Kernel struct {
	Package string `toml:"package"`
	Cmdline string `toml:"cmdline"`
}

// Boot names the package that provides systemd-boot.
type Boot struct {
	Package string `toml:"package"`
}

// Packages is the userland.
type Packages struct {
	Install []string `toml:"install"`
	// Exclude: packages deliberately left out even when something depends on them.
	Exclude []Exclusion `toml:"exclude"`
}

// Exclusion leaves a package out, with the reason shown in the build log.
type Exclusion struct {
	Name   string `toml:"name"`
	Reason string `toml:"reason"`
}

// Rootfs holds what maintainer scripts would have done, done declaratively.
type Rootfs struct {
	Hostname string    `toml:"hostname"`
	Groups   []Group   `toml:"group"`
	Users    []User    `toml:"user"`
	Dirs     []Dir     `toml:"dir"`
	Symlinks []Symlink `toml:"symlink"`
}

type Group struct {
	Name string `toml:"name"`
	GID  int    `toml:"gid"`
}

type User struct {
	Name  string `toml:"name"`
	UID   int    `toml:"uid"`
	GID   int    `toml:"gid"`
	Home  string `toml:"home"`
	Shell string `toml:"shell"`
}

type Dir struct {
	Path string `toml:"path"`
	Mode string `toml:"mode"`
}

type Symlink struct {
	Path   string `toml:"path"`
	Target string `toml:"target"`
}

// Size is a byte count written with a binary unit.
type Size int64

var sizeRE = regexp.MustCompile(`^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*$`)

// UnmarshalText accepts "2GiB", "512MiB", "4096".
func (s *Size) UnmarshalText(b []byte) error {
	m := sizeRE.FindStringSubmatch(string(b))
	if m == nil {
		return fmt.Errorf("%q is not a size (use e.g. 512MiB or 2GiB)", b)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return fmt.Errorf("%q: %w", b, err)
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if n > (1<<62)>>shift {
		return fmt.Errorf("%q is too large", b)
	}
	*s = Size(n << shift)
	return nil
}

func (s Size) String() string {
	switch {
	case s >= 1<<30 && s%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", s>>30)
	case s >= 1<<20 && s%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", s>>20)
	}
	return fmt.Sprintf("%dB", int64(s))
}

// Load reads and checks a spec file.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image spec: %w", err)
	}
	return Parse(path, data)
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*$`)
	suiteRE   = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	userRE    = regexp.MustCompile(`^[a-z_][a-z0-9_-]*\$?$`)
	octalRE   = regexp.MustCompile(`^[0-7]{3,4}$`)
	hostRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	mirrorRE  = regexp.MustCompile(`^(https?|file)://`)
	minESP    = Size(64 << 20)
	minConfig = Size(33 << 20) // FAT32 needs ≥ 65525 clusters of 512 bytes
	minRoot   = Size(64 << 20)
)

// Parse decodes and checks spec text. file names it in errors.
func Parse(file string, data []byte) (*Spec, error) {
	var s Spec
	doc, err := tomlpos.Decode(file, data, &s)
	if err != nil {
		return nil, err
	}
	s.File, s.Raw, s.doc = file, data, doc
	s.defaults()
	if err := s.check(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Spec) defaults() {
	if s.Name == "" {
		s.Name = "tandem"
	}
	if s.Debian.Arch == "" {
		s.Debian.Arch = "amd64"
	}
	if len(s.Debian.Components) == 0 {
		s.Debian.Components = []string{"main"}
	}
	if s.Boot.Package == "" {
		s.Boot.Package = "systemd-boot-efi"
	}
	if s.Disk.Size == 0 {
		s.Disk.Size = 2 << 30
	}
	if s.Disk.ESP == 0 {
		s.Disk.ESP = 256 << 20
	}
	if s.Disk.Root == 0 {
		s.Disk.Root = 512 << 20
	}
	if s.Disk.Config == 0 {
		s.Disk.Config = 64 << 20
	}
	if s.Rootfs.Hostname == "" {
		s.Rootfs.Hostname = "tandem"
	}
}

func (s *Spec) check() error {
	var es tomlpos.Errors
	bad := func(key, f string, a ...any) { es = append(es, s.doc.Errorf(key, f, a...)) }

	if !nameRE.MatchString(s.Name) {
		bad("name", "%q: use lower-case letters, digits, '.', '+' and '-'", s.Name)
	}
	if s.Board == "" {
		bad("board", "is required (known boards: %s)", strings.Join(board.Names(), ", "))
	} else if _, err := board.Load(s.Board); err != nil {
		bad("board", "%v", err)
	}
	if s.SourceDateEpoch < 0 {
		bad("source_date_epoch", "must not be negative")
	} else if s.SourceDateEpoch != 0 && s.SourceDateEpoch < 315532800 {
		bad("source_date_epoch", "must be 1980 or later (FAT timestamps start in 1980)")
	}
	if s.Debian.Suite == "" {
		bad("debian.suite", "is required (for example bookworm)")
	} else if !suiteRE.MatchString(s.Debian.Suite) {
		bad("debian.suite", "%q is not a suite name", s.Debian.Suite)
	}
	if s.Debian.Arch != "amd64" {
		bad("debian.arch", "%q: only amd64 is supported", s.Debian.Arch)
	}
	if s.Debian.Mirror != "" && !mirrorRE.MatchString(s.Debian.Mirror) {
		bad("debian.mirror", "%q: must be an http://, https:// or file:// URL", s.Debian.Mirror)
	}
	if s.Kernel.Package == "" {
		bad("kernel.package", "is required (for example linux-image-amd64)")
	}
	s.checkPackages(bad)
	s.checkDisk(bad)
	s.checkRootfs(bad)
	return es.Err()
}

func (s *Spec) checkPackages(bad func(string, string, ...any)) {
	if len(s.Packages.Install) == 0 {
		bad("packages.install", "is empty: a NAS head needs at least drbd-utils, mdadm, lvm2 and xfsprogs")
	}
	seen := map[string]bool{}
	for i, p := range s.Packages.Install {
		key := fmt.Sprintf("packages.install[%d]", i)
		name := pkgName(p)
		switch {
		case !nameRE.MatchString(name):
			bad(key, "%q is not a Debian package name", p)
		case seen[name]:
			bad(key, "%q is listed twice", name)
		}
		seen[name] = true
	}
	for i, x := range s.Packages.Exclude {
		key := fmt.Sprintf("packages.exclude[%d]", i)
		switch {
		case !nameRE.MatchString(x.Name):
			bad(key+".name", "%q is not a Debian package name", x.Name)
		case seen[x.Name]:
			bad(key+".name", "%q is both installed and excluded", x.Name)
		case strings.TrimSpace(x.Reason) == "":
			bad(key+".reason", "say why %q is left out; the build log shows it", x.Name)
		}
	}
}

// pkgName strips a version constraint: "samba (>= 2:4.17)" or "samba=2:4.17".
func pkgName(p string) string {
	p = strings.TrimSpace(p)
	if i := strings.IndexAny(p, " (="); i >= 0 {
		return p[:i]
	}
	return p
}

func (s *Spec) checkDisk(bad func(string, string, ...any)) {
	d := s.Disk
	if d.ESP < minESP {
		bad("disk.esp", "%v is too small (at least %v: two kernels and initramfs images)", d.ESP, minESP)
	}
	if d.Config < minConfig {
		bad("disk.config", "%v is too small for FAT32 (at least %v)", d.Config, minConfig)
	}
	if d.Root < minRoot {
		bad("disk.root", "%v is too small (at least %v)", d.Root, minRoot)
	}
	// 1 MiB alignment at the start, 1 MiB of GPT backup at the end, and
	// room for a state partition of at least 64 MiB.
	need := d.ESP + 2*d.Root + d.Config + 2<<20 + 64<<20
	if d.Size < need {
		bad("disk.size", "%v is too small: ESP + 2 roots + config + state need at least %v", d.Size, need)
	}
	for _, k := range []struct {
		key string
		v   Size
	}{{"disk.size", d.Size}, {"disk.esp", d.ESP}, {"disk.root", d.Root}, {"disk.config", d.Config}} {
		if k.v%(1<<20) != 0 {
			bad(k.key, "%v is not a whole number of MiB", k.v)
		}
	}
}

func (s *Spec) checkRootfs(bad func(string, string, ...any)) {
	r := s.Rootfs
	if !hostRE.MatchString(r.Hostname) {
		bad("rootfs.hostname", "%q is not a valid host name", r.Hostname)
	}
	gids := map[int]bool{}
	names := map[string]bool{}
	for i, g := range r.Groups {
		key := fmt.Sprintf("rootfs.group[%d]", i)
		if !userRE.MatchString(g.Name) || names[g.Name] {
			bad(key+".name", "%q is not a valid, unique group name", g.Name)
		}
		if gids[g.GID] {
			bad(key+".gid", "gid %d is used twice", g.GID)
		}
		names[g.Name], gids[g.GID] = true, true
	}
	uids := map[int]bool{}
	unames := map[string]bool{}
	for i, u := range r.Users {
		key := fmt.Sprintf("rootfs.user[%d]", i)
		if !userRE.MatchString(u.Name) || unames[u.Name] {
			bad(key+".name", "%q is not a valid, unique user name", u.Name)
		}
		if uids[u.UID] {
			bad(key+".uid", "uid %d is used twice", u.UID)
		}
		if !gids[u.GID] {
			bad(key+".gid", "gid %d has no [[rootfs.group]]", u.GID)
		}
		unames[u.Name], uids[u.UID] = true, true
	}
	paths := map[string]bool{}
	checkPath := func(key, p string) {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			bad(key, "%q must be a clean absolute path", p)
		} else if paths[p] {
			bad(key, "%q is declared twice", p)
		}
		paths[p] = true
	}
	for i, d := range r.Dirs {
		key := fmt.Sprintf("rootfs.dir[%d]", i)
		checkPath(key+".path", d.Path)
		if d.Mode != "" && !octalRE.MatchString(d.Mode) {
			bad(key+".mode", "%q: write the mode in octal, like \"0755\"", d.Mode)
		}
	}
	for i, l := range r.Symlinks {
		key := fmt.Sprintf("rootfs.symlink[%d]", i)
		checkPath(key+".path", l.Path)
		if l.Target == "" {
			bad(key+".target", "is required")
		}
	}
}

// PackageNames returns the install list without version constraints.
func (s *Spec) PackageNames() []string {
	out := make([]string, len(s.Packages.Install))
	for i, p := range s.Packages.Install {
		out[i] = pkgName(p)
	}
	return out
}

// ExcludedNames returns the names of excluded packages.
func (s *Spec) ExcludedNames() []string {
	out := make([]string, len(s.Packages.Exclude))
	for i, x := range s.Packages.Exclude {
		out[i] = x.Name
	}
	return out
}

// Perm parses a Dir's octal mode (default 0755), setuid/sticky bits
// included, in the form chmod(2) takes.
func (d Dir) Perm() uint32 {
	if d.Mode == "" {
		return 0o755
	}
	m, _ := strconv.ParseUint(d.Mode, 8, 32)
	return uint32(m)
}
