// Package rootfs assembles the root filesystem tree from extracted Debian
// packages and applies, declaratively, what their maintainer scripts would
// have done (users, groups, directories, symlinks).
package rootfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/image/spec"
)

// MergedUsr are the top-level links of a merged-/usr system; packages'
// /bin, /lib… files are rewritten under /usr when they are extracted.
var MergedUsr = []spec.Symlink{
	{Path: "/bin", Target: "usr/bin"},
	{Path: "/sbin", Target: "usr/sbin"},
	{Path: "/lib", Target: "usr/lib"},
	{Path: "/lib64", Target: "usr/lib64"},
}

// Overlay copies each tree into dst in order, hard-linking regular files
// (the trees are a read-only cache; nothing here writes into a linked file).
// A later tree wins a conflict; conflicts are returned for the build log.
func Overlay(dst string, trees []string) (conflicts []string, err error) {
	owner := map[string]string{}
	for _, tree := range trees {
		err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(tree, p)
			if rel == "." {
				return nil
			}
			target := filepath.Join(dst, rel)
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				if fi, err := os.Lstat(target); err == nil && fi.IsDir() {
					return nil
				}
				if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
					return fmt.Errorf("rootfs: %w", err)
				}
				return copyOwnerMode(p, target, info)
			default:
				if prev, ok := owner[rel]; ok {
					if _, err := os.Lstat(target); err == nil {
						conflicts = append(conflicts, fmt.Sprintf("/%s: %s replaces %s", rel, filepath.Base(tree), prev))
						if err := os.Remove(target); err != nil {
							return fmt.Errorf("rootfs: %w", err)
						}
					}
				}
				owner[rel] = filepath.Base(tree)
				if d.Type()&fs.ModeSymlink != 0 {
					l, err := os.Readlink(p)
					if err != nil {
						return err
					}
					return os.Symlink(l, target)
				}
				if err := os.Link(p, target); err != nil {
					return fmt.Errorf("rootfs: %w", err)
				}
				return nil
			}
		})
		if err != nil {
			return conflicts, fmt.Errorf("rootfs: overlay %s: %w", tree, err)
		}
	}
	return conflicts, nil
}

func copyOwnerMode(src, dst string, info fs.FileInfo) error {
	if st, ok := statOwner(info); ok {
		if err := os.Lchown(dst, st.uid, st.gid); err != nil && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	return os.Chmod(dst, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
}

// Apply performs the spec's declarative fix-ups on root, in a fixed order:
// merged-/usr links, directories, symlinks, then the account databases.
// It replaces files rather than writing into them, since regular files in
// root may be hard links into the package cache.
func Apply(root string, r spec.Rootfs, log *slog.Logger) error {
	for _, l := range MergedUsr {
		if err := symlink(root, l); err != nil {
			return err
		}
	}
	dirs := append([]spec.Dir(nil), r.Dirs...)
	for _, m := range manifest.RootMountpoints {
		if _, err := os.Lstat(filepath.Join(root, m)); err != nil {
			dirs = append(dirs, spec.Dir{Path: m})
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].Path < dirs[j].Path })
	for _, d := range dirs {
		p := filepath.Join(root, d.Path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("rootfs: dir %s: %w", d.Path, err)
		}
		if err := chmod(p, d.Perm()); err != nil {
			return fmt.Errorf("rootfs: dir %s: %w", d.Path, err)
		}
		log.Debug("rootfs dir", "path", d.Path, "mode", fmt.Sprintf("%04o", d.Perm()))
	}
	for _, l := range r.Symlinks {
		if err := symlink(root, l); err != nil {
			return err
		}
		log.Debug("rootfs symlink", "path", l.Path, "target", l.Target)
	}
	files := map[string]string{
		"/etc/passwd":   passwd(r.Users),
		"/etc/shadow":   shadow(r.Users),
		"/etc/group":    group(r.Groups),
		"/etc/gshadow":  gshadow(r.Groups),
		"/etc/hostname": r.Hostname + "\n",
		"/etc/hosts":    fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n", r.Hostname),
		// No NSS modules beyond files until the AD layer enables winbind.
		"/etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\nrpc: files\n",
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mode := os.FileMode(0o644)
		if strings.Contains(n, "shadow") {
			mode = 0o640
		}
		if err := replaceFile(filepath.Join(root, n), []byte(files[n]), mode); err != nil {
			return fmt.Errorf("rootfs: %s: %w", n, err)
		}
	}
	log.Info("rootfs: declarative setup", "users", len(r.Users), "groups", len(r.Groups), "dirs", len(r.Dirs), "symlinks", len(r.Symlinks))
	return nil
}

func symlink(root string, l spec.Symlink) error {
	p := filepath.Join(root, l.Path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("rootfs: symlink %s: %w", l.Path, err)
	}
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 {
			if cur, _ := os.Readlink(p); cur == l.Target {
				return nil
			}
		}
		// A package shipped a real directory here: only an empty one may go.
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("rootfs: symlink %s: the path exists and is not empty: %w", l.Path, err)
		}
	}
	if err := os.Symlink(l.Target, p); err != nil {
		return fmt.Errorf("rootfs: symlink %s: %w", l.Path, err)
	}
	return nil
}

func replaceFile(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	_ = os.Remove(p) // never write through a hard link into the cache
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, string(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

func passwd(us []spec.User) string {
	var b strings.Builder
	for _, u := range us {
		fmt.Fprintf(&b, "%s:x:%d:%d:%s:%s:%s\n", u.Name, u.UID, u.GID, u.Name, u.Home, u.Shell)
	}
	return b.String()
}

// shadow locks every account: nobody logs in with a password; the rescue
// shell is a console-only, config-gated feature.
func shadow(us []spec.User) string {
	var b strings.Builder
	for _, u := range us {
		fmt.Fprintf(&b, "%s:!*:1::::::\n", u.Name)
	}
	return b.String()
}

func group(gs []spec.Group) string {
	var b strings.Builder
	for _, g := range gs {
		fmt.Fprintf(&b, "%s:x:%d:\n", g.Name, g.GID)
	}
	return b.String()
}

func gshadow(gs []spec.Group) string {
	var b strings.Builder
	for _, g := range gs {
		fmt.Fprintf(&b, "%s:*::\n", g.Name)
	}
	return b.String()
}
