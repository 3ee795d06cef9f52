package apt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tandem.dev/tandem/internal/compress"
)

const maxInRelease = 64 << 20

// FetchIndex downloads and verifies the indexes of sources and merges them;
// earlier sources win ties between equal versions. InRelease is fetched on
// every call; Packages files come from CacheDir when InRelease still lists
// the cached hash.
func (c *Client) FetchIndex(ctx context.Context, sources []Source) (*Index, error) {
	if len(sources) == 0 {
		return nil, errors.New("apt: no sources")
	}
	start := time.Now()
	results := make([][]*Package, len(sources))
	errs := make([]error, len(sources))
	var mu sync.Mutex // orders events
	done := 0
	var bytesGot atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, s := range sources {
		wg.Go(func() {
			results[i], errs[i] = c.fetchSource(ctx, s, &bytesGot)
			if errs[i] != nil {
				cancel() // one failure fails the build: stop the others
				return
			}
			mu.Lock()
			done++
			c.emit(Event{Phase: "index", Done: done, Total: len(sources), Bytes: bytesGot.Load(), Name: s.URI + " " + s.Suite})
			mu.Unlock()
		})
	}
	wg.Wait()
	// Report the root cause, not the cancellations it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var all []*Package
	for _, r := range results {
		all = append(all, r...)
	}
	idx := NewIndex(c.arch(), slices.Clone(sources), all)
	c.log().Info("apt: index ready", "sources", len(sources), "packages", idx.Len(),
		"downloaded", bytesGot.Load(), "took", time.Since(start).Round(time.Millisecond))
	return idx, nil
}

func (c *Client) fetchSource(ctx context.Context, s Source, got *atomic.Int64) ([]*Package, error) {
	if len(s.Arches) > 0 && !slices.Contains(s.Arches, c.arch()) {
		c.log().Debug("apt: source not for this architecture", "uri", s.URI, "suite", s.Suite)
		return nil, nil
	}
	base := s.URI + "/dists/" + s.Suite + "/"
	if len(s.Components) == 0 {
		return nil, fmt.Errorf("apt: source %s %s has no components", s.URI, s.Suite)
	}
	var inrel []byte
	err := c.get(ctx, base+"InRelease", func(r io.Reader) error {
		b, err := io.ReadAll(io.LimitReader(r, maxInRelease))
		inrel = b
		return err
	})
	if err != nil {
		return nil, err
	}
	got.Add(int64(len(inrel)))
	kr, err := c.keyringFor(s.SignedBy)
	if err != nil {
		return nil, fmt.Errorf("apt: %sInRelease: %w", base, err)
	}
	text, _, err := verifyInRelease(inrel, kr)
	if err != nil {
		return nil, fmt.Errorf("apt: %sInRelease: %w", base, err)
	}
	rel, err := parseRelease(text)
	if err != nil {
		return nil, fmt.Errorf("apt: %sInRelease: %w", base, err)
	}
	// A validly signed Release of another suite could be replayed here.
	if rel.suite != s.Suite && rel.codename != s.Suite {
		return nil, fmt.Errorf("apt: %sInRelease: is for suite %q (codename %q), want %q", base, rel.suite, rel.codename, s.Suite)
	}
	// Only here, where a fresh index is read: a build from a lockfile
	// reads no Release, so an old locked snapshot still builds.
	if !s.NoValidUntil {
		if err := rel.checkValidUntil(c.now()); err != nil {
			return nil, fmt.Errorf("apt: %sInRelease: %w", base, err)
		}
	}
	var out []*Package
	for _, comp := range s.Components {
		dirs := []string{comp + "/binary-" + c.arch()}
		if rel.separateAll && rel.hasPackages(comp+"/binary-all") {
			dirs = append(dirs, comp+"/binary-all")
		}
		for _, dir := range dirs {
			data, err := c.indexFile(ctx, base, rel, dir, got)
			if err != nil {
				return nil, err
			}
			pkgs, err := ParsePackages(data, s)
			if err != nil {
				return nil, err
			}
			out = append(out, pkgs...)
		}
	}
	return out, nil
}

func (r *release) hasPackages(dir string) bool {
	for _, ext := range []string{".xz", ".gz", ""} {
		if _, ok := r.files[dir+"/Packages"+ext]; ok {
			return true
		}
	}
	return false
}

// indexFile returns the uncompressed Packages of dir, verified against the
// signed Release. The cache holds the uncompressed text under the hash of
// the compressed file, so an unchanged InRelease costs no download and no
// decompression.
func (c *Client) indexFile(ctx context.Context, base string, rel *release, dir string, got *atomic.Int64) ([]byte, error) {
	name := dir + "/Packages"
	var ext string
	var want fileHash
	found := false
	for _, ext = range []string{".xz", ".gz", ""} {
		if want, found = rel.files[name+ext]; found {
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("apt: %sInRelease lists no %s (wrong component or architecture?)", base, name)
	}
	plain, hasPlain := rel.files[name]
	var cached string
	if c.CacheDir != "" {
		cached = filepath.Join(c.CacheDir, "index", want.sha256)
		if b, err := os.ReadFile(cached); err == nil {
			if !hasPlain || checkHash(b, plain) == nil {
				return b, nil
			}
			c.log().Warn("apt: cached index is corrupt, fetching again", "file", cached)
		}
	}
	urls := []string{base + name + ext}
	if rel.byHash {
		// by-hash cannot change under us while the mirror syncs.
		urls = []string{base + path.Dir(name) + "/by-hash/SHA256/" + want.sha256, base + name + ext}
	}
	var raw []byte
	var err error
	for i, u := range urls {
		err = c.get(ctx, u, func(r io.Reader) error {
			var buf bytes.Buffer
			buf.Grow(int(want.size))
			if _, err := io.Copy(&buf, io.LimitReader(r, want.size+1)); err != nil {
				return err
			}
			raw = buf.Bytes()
			return checkHash(raw, want)
		})
		if err == nil || i == len(urls)-1 || !isNotFound(err) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	got.Add(int64(len(raw)))
	data, err := compress.Bytes(raw, ext)
	if err != nil {
		return nil, fmt.Errorf("apt: %s%s%s: %w", base, name, ext, err)
	}
	if hasPlain {
		if err := checkHash(data, plain); err != nil {
			return nil, fmt.Errorf("apt: %s%s%s uncompressed: %w", base, name, ext, err)
		}
	}
	if cached != "" {
		if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
			return nil, fmt.Errorf("apt: index cache: %w", err)
		}
		// Not fsynced: a torn file fails its hash check and is refetched.
		if err := writeFileAtomic(cached, data, false); err != nil {
			return nil, fmt.Errorf("apt: index cache: %w", err)
		}
	}
	return data, nil
}

func checkHash(b []byte, want fileHash) error {
	if int64(len(b)) != want.size {
		return &permanentError{fmt.Errorf("size %d, Release says %d", len(b), want.size)}
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != want.sha256 {
		return &permanentError{fmt.Errorf("sha256 mismatch: got %s, Release says %s", got, want.sha256)}
	}
	return nil
}
