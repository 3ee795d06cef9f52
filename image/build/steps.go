package build

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/image/apt"
	"tandem.dev/tandem/image/deb"
	"tandem.dev/tandem/image/disk"
	"tandem.dev/tandem/image/initramfs"
	"tandem.dev/tandem/image/kmod"
	"tandem.dev/tandem/image/manifest"
	"tandem.dev/tandem/image/rootfs"
	"tandem.dev/tandem/image/squashfs"
)

// buildState carries what one step hands to the next.
type buildState struct {
	lock      *apt.Lock
	debs      map[string]string // package name → cached .deb
	trees     map[string]string // package name → extracted tree
	kver      string
	kernelDir string // extracted kernel package
	modSet    *kmod.Set
	rootMods  []string
	initMods  []string
	rootKey   string
	rootDir   string
	sqfs      string
	initrd    string
	version   string
}

func (b *builder) client() *apt.Client {
	c := &apt.Client{
		HTTP:     &http.Client{Timeout: 10 * time.Minute},
		CacheDir: b.cache,
		Keyring:  b.sp.Debian.Keyring,
		Arch:     b.sp.Debian.Arch,
		Progress: func(e apt.Event) {
			switch {
			case e.TotalBytes > 0:
				b.p.Tick(e.Done == e.Total, "%s %d/%d packages, %s/%s", e.Phase, e.Done, e.Total, mb(e.Bytes), mb(e.TotalBytes))
			default:
				b.p.Tick(e.Done == e.Total, "%s %s", e.Phase, e.Name)
			}
		},
	}
	return c
}

func (b *builder) roots() []string {
	r := append([]string(nil), b.sp.Packages.Install...)
	return append(r, b.sp.Kernel.Package, b.sp.Boot.Package)
}

func (b *builder) lockPath() string {
	if b.o.LockPath != "" {
		return b.o.LockPath
	}
	if strings.HasPrefix(b.sp.File, "embedded:") || !exists(b.sp.File) {
		return "image.lock"
	}
	return strings.TrimSuffix(b.sp.File, filepath.Ext(b.sp.File)) + ".lock"
}

// packages reuses the lockfile when it covers the spec, else resolves
// against the mirror and writes a new one.
func (b *builder) packages(ctx context.Context) error {
	roots := b.roots()
	opts := apt.ResolveOptions{Exclude: b.sp.ExcludedNames()}
	lp := b.lockPath()
	srcs, err := b.sources()
	if err != nil {
		return err
	}
	if !b.o.UpdateLock {
		l, err := apt.ReadLock(lp)
		switch {
		case err == nil && l.Covers(roots, opts) && l.Arch == b.sp.Debian.Arch:
			if err := l.Bind(srcs); err != nil {
				return fmt.Errorf("build: %s: %w (run with --update-lock to resolve again)", lp, err)
			}
			b.state.lock = l
			b.p.Printf("lockfile %s: %d packages (no index download needed)", lp, len(l.Packages))
			return nil
		case err == nil:
			b.p.Printf("lockfile %s does not match the spec's packages: resolving again", lp)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("build: %w", err)
		}
	}
	for _, s := range srcs {
		b.p.Printf("source %s %s %s", s.URI, s.Suite, strings.Join(s.Components, " "))
	}
	idx, err := b.client().FetchIndex(ctx, srcs)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	res, err := idx.Resolve(roots, opts)
	if err != nil {
		return fmt.Errorf("build: %s: %w", b.sp.File, err)
	}
	for _, x := range res.Excluded {
		b.p.Printf("excluded %s (wanted by %s): %s", x.Name, shortList(x.WantedBy, 3), b.excludeReason(x.Name))
	}
	l := res.Lock(roots, opts)
	if err := apt.WriteLock(lp, l); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	b.state.lock = l
	b.p.Printf("resolved %d packages, %s; lockfile %s written", len(l.Packages), mb(res.TotalSize()), lp)
	return nil
}

func (b *builder) excludeReason(name string) string {
	for _, x := range b.sp.Packages.Exclude {
		if x.Name == name {
			return x.Reason
		}
	}
	return ""
}

func (b *builder) sources() ([]apt.Source, error) {
	d := b.sp.Debian
	if d.Mirror != "" {
		s, err := apt.ParseMirror(d.Mirror, d.Suite, d.Components)
		if err != nil {
			return nil, fmt.Errorf("build: %s: debian.mirror: %w", b.sp.File, err)
		}
		s.NoValidUntil = !d.ValidUntilChecked()
		return []apt.Source{s}, nil
	}
	root := b.o.AptRoot
	if root == "" {
		root = "/"
	}
	host, err := apt.HostSources(root)
	if err != nil {
		return nil, fmt.Errorf("build: reading this host's apt sources: %w", err)
	}
	srcs, err := apt.SuiteSources(host, d.Suite)
	if err != nil {
		return nil, fmt.Errorf("build: no Debian mirror: set debian.mirror in %s, or add a %s source to this host's apt sources: %w", b.sp.File, d.Suite, err)
	}
	for i := range srcs {
		srcs[i].NoValidUntil = srcs[i].NoValidUntil || !d.ValidUntilChecked()
	}
	return srcs, nil
}

func (b *builder) fetch(ctx context.Context) error {
	paths, err := b.client().Fetch(ctx, b.state.lock.Packages)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	b.state.debs = paths
	b.res.Packages = len(paths)
	return nil
}

// extract unpacks each .deb once into extract/<sha256>; the tree is reused
// by every later build.
func (b *builder) extract(ctx context.Context) error {
	pk := b.state.lock.Packages
	b.state.trees = map[string]string{}
	var (
		mu     sync.Mutex
		done   int
		fresh  int
		first  error
		wg     sync.WaitGroup
		jobs   = make(chan apt.Locked)
		worker = func() {
			defer wg.Done()
			for l := range jobs {
				dir := filepath.Join(b.cache, "extract", fmt.Sprintf("%d-%s", cacheFormat, l.SHA256))
				made := false
				var err error
				if !exists(dir) {
					err = b.extractOne(b.state.debs[l.Name], dir)
					made = true
				}
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("build: extracting %s %s: %w", l.Name, l.Version, err)
				}
				b.state.trees[l.Name] = dir
				done++
				if made {
					fresh++
				}
				b.p.Tick(done == len(pk), "extracted %d/%d packages (%d new)", done, len(pk), fresh)
				mu.Unlock()
			}
		}
	)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go worker()
	}
	for _, l := range pk {
		if ctx.Err() != nil {
			break
		}
		jobs <- l
	}
	close(jobs)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func (b *builder) extractOne(debPath, dir string) error {
	tmp, err := os.MkdirTemp(filepath.Join(b.cache, "tmp"), "extract-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := deb.Extract(debPath, tmp, deb.Options{Logger: b.log}); err != nil {
		return err
	}
	return publish(tmp, dir)
}

// kernel finds the kernel release and vmlinuz, and works out which modules
// go into the root (the board's set) and the initramfs (finding the root).
func (b *builder) kernel(ctx context.Context) error {
	var kpkg string
	for _, l := range b.state.lock.Packages {
		if strings.HasPrefix(l.Name, "linux-image-") && !strings.HasSuffix(l.Name, "-amd64-unsigned") && l.Name != b.sp.Kernel.Package {
			kpkg = l.Name
		}
	}
	if kpkg == "" {
		kpkg = b.sp.Kernel.Package
	}
	dir := b.state.trees[kpkg]
	mods, _ := filepath.Glob(filepath.Join(dir, "usr/lib/modules/*"))
	if len(mods) != 1 {
		return fmt.Errorf("build: kernel package %s: want exactly one usr/lib/modules/<release>, found %d", kpkg, len(mods))
	}
	b.state.kver = filepath.Base(mods[0])
	b.state.kernelDir = dir
	if !exists(b.vmlinuz()) {
		return fmt.Errorf("build: kernel package %s has no boot/vmlinuz-%s", kpkg, b.state.kver)
	}
	set, err := kmod.Scan(mods[0])
	if err != nil {
		return fmt.Errorf("build: kernel modules: %w", err)
	}
	b.state.modSet = set
	if b.state.rootMods, err = set.Closure(b.bd.All()); err != nil {
		return fmt.Errorf("build: board %s: %w", b.bd.Name, err)
	}
	if b.state.initMods, err = set.Closure(b.bd.Modules.Initramfs); err != nil {
		return fmt.Errorf("build: board %s: %w", b.bd.Name, err)
	}
	b.res.Kernel = b.state.kver
	b.p.Printf("kernel %s (%s): %d modules in the root, %d in the initramfs", b.state.kver, kpkg, len(b.state.rootMods), len(b.state.initMods))
	return nil
}

func (b *builder) vmlinuz() string {
	return filepath.Join(b.state.kernelDir, "boot", "vmlinuz-"+b.state.kver)
}

// rootPackages are the packages whose files make up the root: everything
// but the kernel image (its modules are copied selectively) and the boot
// loader (it goes onto the ESP).
func (b *builder) rootPackages() []apt.Locked {
	var out []apt.Locked
	for _, l := range b.state.lock.Packages {
		if strings.HasPrefix(l.Name, "linux-image-") || l.Name == b.sp.Boot.Package {
			continue
		}
		out = append(out, l)
	}
	return out
}

func (b *builder) rootfs(ctx context.Context) error {
	pk := b.rootPackages()
	var sums []string
	for _, l := range pk {
		sums = append(sums, l.Name+"="+l.SHA256)
	}
	b.state.rootKey = hashOf("rootfs", cacheFormat, sums, b.state.kver, b.state.rootMods, b.sp.Rootfs)
	b.state.rootDir = filepath.Join(b.cache, "rootfs", b.state.rootKey)
	if exists(b.state.rootDir) {
		b.p.Printf("cached rootfs %s", b.state.rootKey[:12])
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(b.cache, "tmp"), "rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	var trees []string
	for _, l := range pk {
		trees = append(trees, b.state.trees[l.Name])
	}
	conflicts, err := rootfs.Overlay(tmp, trees)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	for _, c := range conflicts {
		b.log.Debug("file conflict", "detail", c)
	}
	if len(conflicts) > 0 {
		b.p.Printf("%d files shipped by more than one package (the later package wins)", len(conflicts))
	}
	modDir := filepath.Join(tmp, "usr/lib/modules", b.state.kver)
	if err := kmod.Copy(filepath.Join(b.state.kernelDir, "usr/lib/modules", b.state.kver), modDir, b.state.rootMods); err != nil {
		return fmt.Errorf("build: modules into root: %w", err)
	}
	if err := rootfs.Apply(tmp, b.sp.Rootfs, b.log); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	b.p.Printf("rootfs from %d packages, %d users, %d groups, %d dirs, %d symlinks declared", len(pk),
		len(b.sp.Rootfs.Users), len(b.sp.Rootfs.Groups), len(b.sp.Rootfs.Dirs), len(b.sp.Rootfs.Symlinks))
	return publish(tmp, b.state.rootDir)
}

func (b *builder) squashfs(ctx context.Context) error {
	out := filepath.Join(b.cache, "squashfs", hashOf("squashfs", cacheFormat, b.state.rootKey, b.epoch.Unix())+".sqfs")
	b.state.sqfs = out
	if !exists(out) {
		start := time.Now()
		// A unique temp name: builds running side by side share the cache.
		tf, err := os.CreateTemp(filepath.Dir(out), ".sqfs-*")
		if err != nil {
			return err
		}
		tf.Close()
		tmp := tf.Name()
		defer os.Remove(tmp)
		if err := squashfs.Build(ctx, b.state.rootDir, tmp, squashfs.Options{Epoch: b.epoch}); err != nil {
			return fmt.Errorf("build: squashfs: %w", err)
		}
		if err := publish(tmp, out); err != nil {
			return err
		}
		b.p.Printf("compressed the rootfs (zstd) in %.1fs", time.Since(start).Seconds())
	}
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	b.res.SquashfsSize = fi.Size()
	b.p.Printf("root squashfs %s", mb(fi.Size()))
	return nil
}

// initramfs holds /init (this binary), the manifest, and only the modules
// that finding and mounting the root needs.
func (b *builder) initramfs(ctx context.Context) error {
	var sums []string
	for _, l := range b.state.lock.Packages {
		sums = append(sums, l.SHA256)
	}
	b.state.version = Version + "+" + hashOf(b.sp.Raw, b.bd.Name, sums, b.initSum, b.epoch.Unix())[:12]
	b.res.Version = b.state.version
	m := manifest.Manifest{
		Version:          b.state.version,
		Kernel:           b.state.kver,
		Board:            b.bd.Name,
		Console:          b.bd.Console,
		InitramfsModules: b.state.initMods,
		BootModules:      b.bootModules(),
		Watchdog:         b.bd.Watchdog,
		LabChannel:       b.bd.LabChannel,
	}
	mdata, err := m.Marshal()
	if err != nil {
		return err
	}
	modTmp, err := os.MkdirTemp(filepath.Join(b.cache, "tmp"), "initmods-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(modTmp)
	if err := kmod.Copy(filepath.Join(b.state.kernelDir, "usr/lib/modules", b.state.kver), modTmp, b.state.initMods); err != nil {
		return fmt.Errorf("build: initramfs modules: %w", err)
	}
	ib := initramfs.New(b.epoch)
	ib.AddHostFile("init", b.initBin, 0o755)
	ib.AddCharDev("dev/console", 0o600, 5, 1)
	ib.AddFile(strings.TrimPrefix(manifest.Path, "/"), mdata, 0o644)
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "newroot"} {
		ib.AddDir(d, 0o755)
	}
	if err := ib.AddTree("usr/lib/modules/"+b.state.kver, modTmp); err != nil {
		return fmt.Errorf("build: initramfs: %w", err)
	}
	ib.AddSymlink("lib", "usr/lib")
	f, err := os.CreateTemp(filepath.Join(b.cache, "tmp"), "initrd-*.cpio")
	if err != nil {
		return err
	}
	out := f.Name()
	if _, err := ib.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("build: initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	b.state.initrd = out
	fi, _ := os.Stat(out)
	b.p.Printf("initramfs %s (uncompressed: faster to boot under emulation)", mb(fi.Size()))
	return nil
}

// bootModules are the board's boot modules in load order, minus what the
// initramfs already loaded.
func (b *builder) bootModules() []string {
	boot, err := b.state.modSet.Closure(b.bd.Modules.Boot)
	if err != nil {
		return b.bd.Modules.Boot
	}
	seen := map[string]bool{}
	for _, m := range b.state.initMods {
		seen[m] = true
	}
	var out []string
	for _, m := range boot {
		if !seen[m] {
			out = append(out, m)
		}
	}
	return out
}

func (b *builder) disk(ctx context.Context) error {
	defer os.Remove(b.state.initrd)
	efi, err := os.ReadFile(filepath.Join(b.state.trees[b.sp.Boot.Package], "usr/lib/systemd/boot/efi/systemd-bootx64.efi"))
	if err != nil {
		return fmt.Errorf("build: systemd-boot from %s: %w", b.sp.Boot.Package, err)
	}
	kernel, err := os.ReadFile(b.vmlinuz())
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	initrd, err := os.ReadFile(b.state.initrd)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	in := disk.Inputs{
		Version:      b.state.version,
		Seed:         []byte(hashOf(b.sp.Raw, b.bd.Name)),
		Epoch:        b.epoch,
		SystemdBoot:  efi,
		Kernel:       kernel,
		Initrd:       initrd,
		Cmdline:      strings.TrimSpace(b.bd.Cmdline + " " + b.sp.Kernel.Cmdline),
		RootSquashfs: b.state.sqfs,
		SiteTOML:     b.o.SiteConfig,
		ImageSize:    int64(b.sp.Disk.Size),
		ESPSize:      int64(b.sp.Disk.ESP),
		RootSize:     int64(b.sp.Disk.Root),
		ConfigSize:   int64(b.sp.Disk.Config),
	}
	if err := os.MkdirAll(filepath.Dir(b.o.Output), 0o755); err != nil {
		return fmt.Errorf("build: output directory: %w", err)
	}
	if err := disk.Write(ctx, b.o.Output, in, func(s string) { b.p.Printf("%s", s) }); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	sum, err := fileSHA256(b.o.Output)
	if err != nil {
		return err
	}
	fi, err := os.Stat(b.o.Output)
	if err != nil {
		return err
	}
	b.res.Path, b.res.Size, b.res.SHA256 = b.o.Output, fi.Size(), sum
	return nil
}
