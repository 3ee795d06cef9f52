package apt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// DebPath is where Fetch keeps a package: CacheDir/debs/<sha256>.deb.
func (c *Client) DebPath(p Locked) string {
	return filepath.Join(c.CacheDir, "debs", p.SHA256+".deb")
}

// Fetch makes sure every package is in the cache, downloading the missing
// ones (parallelDebs at a time) and verifying size and sha256 of cached and
// new files alike. It needs no index: a lockfile's Packages suffice. It
// returns package name → .deb path.
func (c *Client) Fetch(ctx context.Context, pkgs []Locked) (map[string]string, error) {
	if c.CacheDir == "" {
		return nil, errors.New("apt: Fetch needs Client.CacheDir")
	}
	var total int64
	for _, p := range pkgs {
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("apt: package %q: %w", p.Name, err)
		}
		total += p.Size
	}
	dir := filepath.Join(c.CacheDir, "debs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("apt: deb cache: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu       sync.Mutex
		out      = make(map[string]string, len(pkgs))
		done     int
		bytes    int64
		firstErr error
	)
	jobs := make(chan Locked)
	var wg sync.WaitGroup
	for range min(parallelDebs, len(pkgs)) {
		wg.Go(func() {
			for p := range jobs {
				file, err := c.fetchDeb(ctx, p)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
					continue
				}
				out[p.Name] = file
				done++
				bytes += p.Size
				// Emitted under mu so that events arrive in Done order.
				c.emit(Event{Phase: "fetch", Done: done, Total: len(pkgs), Bytes: bytes, TotalBytes: total, Name: p.Name})
				mu.Unlock()
			}
		})
	}
feed:
	for _, p := range pkgs {
		select {
		case jobs <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apt: fetch packages: %w", err)
	}
	return out, nil
}

func (c *Client) fetchDeb(ctx context.Context, p Locked) (string, error) {
	file := c.DebPath(p)
	if err := verifyFile(file, p); err == nil {
		return file, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		c.log().Warn("apt: cached package is corrupt, fetching again", "file", file, "err", err)
		os.Remove(file)
	}
	err := c.get(ctx, p.URL(), func(r io.Reader) error {
		return c.writeDeb(r, file, p)
	})
	if err != nil {
		return "", fmt.Errorf("%w (package %s %s)", err, p.Name, p.Version)
	}
	return file, nil
}

// writeDeb streams r into a temp file, checks it, and renames it into
// place; on any failure nothing is left behind. No fsync: a torn file
// fails verification on the next run and is fetched again.
func (c *Client) writeDeb(r io.Reader, file string, p Locked) (err error) {
	f, err := os.CreateTemp(filepath.Dir(file), ".tmp-*.deb")
	if err != nil {
		return &permanentError{err}
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, p.Size+1))
	if err != nil {
		return err
	}
	if err := checkSum(n, h.Sum(nil), p); err != nil {
		return &permanentError{err}
	}
	if err := f.Close(); err != nil {
		return &permanentError{err}
	}
	if err := os.Rename(f.Name(), file); err != nil {
		return &permanentError{err}
	}
	return nil
}

func verifyFile(file string, p Locked) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != p.Size {
		return fmt.Errorf("size %d, want %d", st.Size(), p.Size)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	return checkSum(n, h.Sum(nil), p)
}

func checkSum(n int64, sum []byte, p Locked) error {
	if n != p.Size {
		return fmt.Errorf("size %d, want %d", n, p.Size)
	}
	if got := hex.EncodeToString(sum); got != p.SHA256 {
		return fmt.Errorf("sha256 mismatch: got %s, want %s", got, p.SHA256)
	}
	return nil
}
