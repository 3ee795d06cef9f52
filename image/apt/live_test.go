package apt

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRealMirrorResolve resolves a NAS package set against the mirror of
// the host's apt sources. It needs the network, so it runs only with
// TANDEM_APT_LIVE=1.
func TestRealMirrorResolve(t *testing.T) {
	if os.Getenv("TANDEM_APT_LIVE") != "1" {
		t.Skip("set TANDEM_APT_LIVE=1 to resolve against the host's mirror")
	}
	all, err := HostSources("/")
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := SuiteSources(all, "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cache := os.Getenv("TANDEM_APT_CACHE") // reuse between runs if set
	if cache == "" {
		cache = t.TempDir()
	}
	c := &Client{CacheDir: cache}

	start := time.Now()
	idx, err := c.FetchIndex(ctx, srcs)
	if err != nil {
		t.Fatal(err)
	}
	cold := time.Since(start)
	start = time.Now()
	if _, err := c.FetchIndex(ctx, srcs); err != nil {
		t.Fatal(err)
	}
	warm := time.Since(start)

	// Parse alone, from the cached uncompressed indexes.
	files, _ := filepath.Glob(filepath.Join(c.CacheDir, "index", "*"))
	var total int
	start = time.Now()
	var pkgs []*Package
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
		p, err := ParsePackages(b, Source{})
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p...)
	}
	parsed := time.Since(start)
	NewIndex(c.arch(), srcs, pkgs)
	indexed := time.Since(start)

	roots := strings.Fields("drbd-utils mdadm lvm2 xfsprogs e2fsprogs nfs-kernel-server samba winbind linux-image-amd64 systemd-boot-efi")
	start = time.Now()
	res, err := idx.Resolve(roots, ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	resolved := time.Since(start)
	t.Logf("sources: %d, index: %d package versions", len(srcs), idx.Len())
	t.Logf("index fetch cold %v, warm %v; parse %d MB in %v (+NewIndex %v)", cold.Round(time.Millisecond),
		warm.Round(time.Millisecond), total>>20, parsed.Round(time.Millisecond), (indexed - parsed).Round(time.Millisecond))
	t.Logf("resolve: %d packages, %.1f MB in %v", len(res.Packages), float64(res.TotalSize())/1e6, resolved.Round(time.Microsecond))

	big := slices.Clone(res.Packages)
	slices.SortFunc(big, func(a, b *Package) int { return int(b.Size - a.Size) })
	for _, p := range big[:min(20, len(big))] {
		t.Logf("  %-32s %8.1f MB  %s", p.Name, float64(p.Size)/1e6, strings.Join(res.Why(p.Name), " > "))
	}
	for _, p := range res.Packages {
		if strings.HasPrefix(p.Name, "python3") || strings.HasPrefix(p.Name, "perl") || strings.HasPrefix(p.Name, "libperl") {
			t.Logf("  heavy? %-28s %8.1f MB  %s", p.Name, float64(p.Size)/1e6, strings.Join(res.Why(p.Name), " > "))
		}
	}
	if os.Getenv("TANDEM_APT_LIVE_FETCH") == "1" {
		start = time.Now()
		var last Event
		c.Progress = func(e Event) { last = e }
		paths, err := c.Fetch(ctx, res.Locked())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("fetch: %d/%d packages, %.1f/%.1f MB in %v", last.Done, last.Total,
			float64(last.Bytes)/1e6, float64(last.TotalBytes)/1e6, time.Since(start).Round(time.Millisecond))
		start = time.Now()
		if _, err := c.Fetch(ctx, res.Locked()); err != nil {
			t.Fatal(err)
		}
		t.Logf("fetch again (cached, verified): %d files in %v", len(paths), time.Since(start).Round(time.Millisecond))
	}
	for _, p := range res.Packages {
		if p.Name == "linux-image-amd64" || strings.HasPrefix(p.Name, "linux-image-6") {
			t.Logf("  kernel: %s from %s", p, p.Suite)
		}
	}
}
