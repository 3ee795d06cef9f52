// Package deb unpacks Debian binary packages in pure Go, the way the image
// builder needs them: merged-/usr, without documentation, never writing
// outside the destination, and without running maintainer scripts.
package deb

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"syscall"

	"tandem.dev/tandem/internal/compress"

	"pault.ag/go/debian/control"
)

// DefaultDrop is the drop list used when Options.Drop is nil: paths that
// are useless on an appliance and only cost image space.
var DefaultDrop = []string{
	"usr/share/doc",
	"usr/share/man",
	"usr/share/info",
	"usr/share/locale",
	"usr/share/lintian",
	"usr/share/bug",
}

// usrMergeDirs are the top-level directories that a merged-/usr system
// keeps only as symlinks into usr/.
var usrMergeDirs = map[string]bool{
	"bin": true, "sbin": true, "lib": true, "lib64": true, "lib32": true, "libx32": true,
}

// Options tunes Extract.
type Options struct {
	// Drop lists path prefixes (relative, after the usrmerge rewrite, e.g.
	// "usr/share/doc") that are not extracted. nil means DefaultDrop; an
	// empty non-nil slice keeps everything.
	Drop []string
	// Logger receives debug messages; nil means slog.Default().
	Logger *slog.Logger
}

// File is one path the package installed.
type File struct {
	// Path is slash-separated, relative to destDir, after the usrmerge
	// rewrite, e.g. "usr/sbin/mdadm".
	Path string
	// Type is the tar type: tar.TypeReg, TypeDir, TypeSymlink or TypeLink.
	Type byte
	// Mode includes fs.ModeSetuid/Setgid/Sticky; no type bits.
	Mode     fs.FileMode
	UID, GID int
	Size     int64
	// Link is the symlink target as shipped (not rewritten), or the hard
	// link target path (rewritten like Path).
	Link string
}

// Result describes an extracted package.
type Result struct {
	// Control is the parsed DEBIAN/control paragraph.
	Control control.Paragraph
	// Conffiles are the conffile paths in the same form as File.Path.
	Conffiles []string
	// ControlFiles holds every file of control.tar by base name
	// (control, md5sums, postinst, ...), so callers can see which
	// maintainer scripts they are not running.
	ControlFiles map[string][]byte
	// Files lists every extracted path in archive order, directories too.
	Files []File
	// Replaced lists non-directory paths that already existed in destDir
	// (from an earlier package) and were overwritten: this package wins.
	Replaced []string
	// Dropped counts archive entries skipped by the drop list.
	Dropped int
}

// Package returns the Package field of the control file.
func (r *Result) Package() string { return r.Control.Values["Package"] }

// Extract unpacks the .deb at debPath into destDir, which must exist.
func Extract(debPath, destDir string, opts Options) (*Result, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return nil, fmt.Errorf("extract deb: %w", err)
	}
	defer f.Close()
	res, err := ExtractReader(f, destDir, opts)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", debPath, err)
	}
	return res, nil
}

// ExtractReader is Extract for a .deb read from r.
func ExtractReader(r io.Reader, destDir string, opts Options) (*Result, error) {
	if opts.Drop == nil {
		opts.Drop = DefaultDrop
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return nil, fmt.Errorf("open destination: %w", err)
	}
	defer root.Close()

	ar, err := newArReader(r)
	if err != nil {
		return nil, err
	}
	res := &Result{ControlFiles: map[string][]byte{}}
	var sawVersion, sawControl, sawData bool
	for {
		name, _, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch {
		case name == "debian-binary":
			v, err := io.ReadAll(io.LimitReader(ar, 64))
			if err != nil {
				return nil, fmt.Errorf("read debian-binary: %w", err)
			}
			if !bytes.HasPrefix(v, []byte("2.")) {
				return nil, fmt.Errorf("unsupported deb format version %q", bytes.TrimSpace(v))
			}
			sawVersion = true
		case strings.HasPrefix(name, "control.tar"):
			if err := withTar(name, ar, res.readControl); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			sawControl = true
		case strings.HasPrefix(name, "data.tar"):
			x := &extractor{root: root, opts: opts, res: res, dirs: map[string]bool{}, chown: os.Geteuid() == 0}
			if err := withTar(name, ar, x.extractAll); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			sawData = true
		case strings.HasPrefix(name, "_"):
			// deb(5): members starting with '_' are reserved and may be ignored.
		default:
			return nil, fmt.Errorf("unexpected ar member %q", name)
		}
	}
	if !sawVersion || !sawControl || !sawData {
		return nil, fmt.Errorf("incomplete deb (debian-binary %v, control %v, data %v)", sawVersion, sawControl, sawData)
	}
	opts.Logger.Debug("deb extracted", "package", res.Package(), "files", len(res.Files),
		"dropped", res.Dropped, "replaced", len(res.Replaced))
	return res, nil
}

// withTar decompresses an ar member according to its suffix and hands the
// tar stream to fn.
func withTar(member string, r io.Reader, fn func(*tar.Reader) error) error {
	ext := path.Ext(member)
	if ext == ".tar" {
		ext = ""
	}
	dr, err := compress.NewReader(r, ext)
	if err != nil {
		return err
	}
	defer dr.Close()
	return fn(tar.NewReader(dr))
}

func (res *Result) readControl(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("read %s: %w", hdr.Name, err)
		}
		res.ControlFiles[path.Base(hdr.Name)] = data
	}
	c, ok := res.ControlFiles["control"]
	if !ok {
		return errors.New("no control file")
	}
	pr, err := control.NewParagraphReader(bytes.NewReader(c), nil)
	if err != nil {
		return fmt.Errorf("parse control: %w", err)
	}
	p, err := pr.Next()
	if err != nil {
		return fmt.Errorf("parse control: %w", err)
	}
	res.Control = *p
	for line := range strings.Lines(string(res.ControlFiles["conffiles"])) {
		f := strings.Fields(line)
		// Lines with flags ("remove-on-upgrade /etc/x") name files the
		// package no longer ships.
		if len(f) != 1 {
			continue
		}
		name, err := cleanName(f[0], true)
		if err != nil {
			return fmt.Errorf("conffiles: %w", err)
		}
		res.Conffiles = append(res.Conffiles, usrMerge(name))
	}
	return nil
}

// cleanName turns a tar member name ("./usr/bin/x") into a clean relative
// path ("usr/bin/x"); "" stands for the root. Anything that could leave the
// root is an error. allowAbs accepts a leading slash (conffiles use one).
func cleanName(name string, allowAbs bool) (string, error) {
	n := strings.TrimPrefix(name, "./")
	if strings.HasPrefix(n, "/") {
		if !allowAbs {
			return "", fmt.Errorf("absolute path %q", name)
		}
		n = strings.TrimLeft(n, "/")
	}
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", fmt.Errorf("path %q escapes the destination", name)
		}
	}
	n = path.Clean(n)
	if n == "." {
		return "", nil
	}
	return n, nil
}

// usrMerge moves a path under a top-level /bin, /sbin or /lib* into usr/.
func usrMerge(p string) string {
	top, _, _ := strings.Cut(p, "/")
	if usrMergeDirs[top] {
		return "usr/" + p
	}
	return p
}

func dropped(p string, drop []string) bool {
	for _, d := range drop {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

type extractor struct {
	root  *os.Root
	opts  Options
	res   *Result
	dirs  map[string]bool // paths verified to be real directories
	chown bool
}

func (x *extractor) extractAll(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := x.extractOne(hdr, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

func (x *extractor) extractOne(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name, false)
	if err != nil {
		return err
	}
	if name == "" {
		return nil // "./": destDir itself, whose metadata is not ours to change
	}
	name = usrMerge(name)
	if dropped(name, x.opts.Drop) {
		x.res.Dropped++
		return nil
	}
	f := File{
		Path: name,
		Type: hdr.Typeflag,
		Mode: hdr.FileInfo().Mode() &^ fs.ModeType,
		UID:  hdr.Uid,
		GID:  hdr.Gid,
	}
	if err := x.mkParents(name); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.dir(name, f)
	case tar.TypeReg:
		f.Size = hdr.Size
		err = x.file(name, f, r)
	case tar.TypeSymlink:
		f.Link = hdr.Linkname
		err = x.symlink(name, f)
	case tar.TypeLink:
		f.Link, err = x.hardlink(name, hdr.Linkname)
	default:
		err = fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	if err != nil {
		return err
	}
	x.res.Files = append(x.res.Files, f)
	return nil
}

// mkParents makes sure every parent of name is a real directory, creating
// missing ones. A symlink in the way is an error: following it could lead
// anywhere, including out of the image.
func (x *extractor) mkParents(name string) error {
	dir := path.Dir(name)
	if dir == "." || x.dirs[dir] {
		return nil
	}
	if err := x.mkParents(dir); err != nil {
		return err
	}
	fi, err := x.root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.root.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create parent: %w", err)
		}
	case err != nil:
		return fmt.Errorf("check parent: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("parent %q is a %s, not a directory", dir, kind(fi))
	}
	x.dirs[dir] = true
	return nil
}

// checkParents is mkParents without creating anything.
func (x *extractor) checkParents(name string) error {
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if x.dirs[dir] {
			continue
		}
		fi, err := x.root.Lstat(dir)
		if err != nil {
			return fmt.Errorf("check parent: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("parent %q is a %s, not a directory", dir, kind(fi))
		}
		x.dirs[dir] = true
	}
	return nil
}

func kind(fi fs.FileInfo) string {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return "symlink"
	case fi.Mode().IsRegular():
		return "file"
	default:
		return fi.Mode().Type().String()
	}
}

// clear removes a non-directory already at name so that this package wins.
func (x *extractor) clear(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check existing: %w", err)
	}
	if fi.IsDir() {
		return errors.New("a directory is in the way")
	}
	if err := x.root.Remove(name); err != nil {
		return fmt.Errorf("replace existing: %w", err)
	}
	x.res.Replaced = append(x.res.Replaced, name)
	x.opts.Logger.Debug("deb replaces existing path", "path", name)
	return nil
}

func (x *extractor) dir(name string, f File) error {
	fi, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.root.Mkdir(name, 0o700); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	case err != nil:
		return fmt.Errorf("check existing: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("a %s is in the way of a directory", kind(fi))
	}
	x.dirs[name] = true
	// O_NOFOLLOW|O_DIRECTORY: metadata goes on this very directory, never
	// on whatever a symlink points at.
	d, err := x.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open dir: %w", err)
	}
	defer d.Close()
	return x.setMeta(d, f)
}

func (x *extractor) file(name string, f File, r io.Reader) error {
	if err := x.clear(name); err != nil {
		return err
	}
	out, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	n, err := io.Copy(out, r)
	if err == nil && n != f.Size {
		err = fmt.Errorf("short content: %d of %d bytes", n, f.Size)
	}
	if err == nil {
		err = x.setMeta(out, f)
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// setMeta applies ownership then mode: chown clears setuid bits, so the
// order matters.
func (x *extractor) setMeta(out *os.File, f File) error {
	if x.chown {
		if err := out.Chown(f.UID, f.GID); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := out.Chmod(f.Mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

func (x *extractor) symlink(name string, f File) error {
	if err := x.clear(name); err != nil {
		return err
	}
	if err := x.root.Symlink(f.Link, name); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if x.chown {
		if err := x.root.Lchown(name, f.UID, f.GID); err != nil {
			return fmt.Errorf("lchown: %w", err)
		}
	}
	return nil
}

// hardlink links name to an earlier entry of the same archive and returns
// the (rewritten) target path.
func (x *extractor) hardlink(name, linkname string) (string, error) {
	target, err := cleanName(linkname, false)
	if err != nil {
		return "", fmt.Errorf("hard link target: %w", err)
	}
	if target == "" {
		return "", errors.New("hard link to the root")
	}
	target = usrMerge(target)
	if dropped(target, x.opts.Drop) {
		return "", fmt.Errorf("hard link target %q is in the drop list", target)
	}
	if err := x.checkParents(target); err != nil {
		return "", fmt.Errorf("hard link target: %w", err)
	}
	fi, err := x.root.Lstat(target)
	if err != nil {
		return "", fmt.Errorf("hard link target: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("hard link target %q is a %s", target, kind(fi))
	}
	if err := x.clear(name); err != nil {
		return "", err
	}
	if err := x.root.Link(target, name); err != nil {
		return "", fmt.Errorf("link: %w", err)
	}
	return target, nil
}
