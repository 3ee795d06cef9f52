// Package build turns an image spec into a flashable, reproducible Tandem
// disk image: packages → extracted trees → rootfs → squashfs, kernel +
// initramfs, then the GPT disk. Every expensive step is cached by the hash
// of its inputs, so a change to Go code only rebuilds the initramfs and
// the disk.
package build

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/image/spec"
	"tandem.dev/tandem/internal/lenprefix"
)

// Version is the Tandem release the builder stamps into images.
const Version = "0.1.0"

// cacheFormat is part of every cache key. Bump it whenever a change alters
// what the rootfs, squashfs or extract steps produce from the same inputs;
// TestReproducible (shared cache vs a fresh one) fails when it is forgotten.
const cacheFormat = 4

// DefaultEpoch is used when neither SOURCE_DATE_EPOCH nor the spec fixes
// the image's timestamps: a constant keeps builds reproducible.
const DefaultEpoch = 1767225600 // 2026-01-01T00:00:00Z

// Options configure one build.
type Options struct {
	Spec *spec.Spec
	// Board overrides the spec's board when set.
	Board string
	// Output is the image path (written atomically).
	Output string
	// CacheDir holds downloads, extracted packages, rootfs trees and squashfs images.
	CacheDir string
	// LockPath is the lockfile; "" means beside the spec (or ./image.lock
	// for the embedded spec).
	LockPath string
	// UpdateLock re-resolves packages even when the lockfile covers the spec.
	UpdateLock bool
	// Epoch fixes every timestamp; zero means SOURCE_DATE_EPOCH, then the
	// spec, then DefaultEpoch.
	Epoch time.Time
	// InitBinary is the static tandem binary that becomes /init; "" means
	// this executable.
	InitBinary string
	// SiteConfig, if set, is placed on TANDEM-CFG as site.toml (the lab uses it).
	SiteConfig []byte
	// AptRoot is where host apt sources are read from ("" means "/").
	AptRoot string
	// Progress receives human-readable progress lines; nil discards them.
	Progress io.Writer
	Logger   *slog.Logger
}

// Result describes a finished image.
type Result struct {
	Path         string
	Size         int64 // bytes in the image file
	SHA256       string
	Version      string
	Kernel       string
	SquashfsSize int64
	Packages     int
	Elapsed      time.Duration
}

// Build runs the whole pipeline.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Spec == nil {
		return nil, errors.New("build: no image spec")
	}
	if o.Output == "" {
		return nil, errors.New("build: no output path")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b := &builder{o: o, sp: o.Spec, log: o.Logger, p: newProgress(o.Progress, 8)}
	if err := b.prepare(); err != nil {
		return nil, err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"packages", b.packages},
		{"fetch", b.fetch},
		{"extract", b.extract},
		{"kernel", b.kernel},
		{"rootfs", b.rootfs},
		{"squashfs", b.squashfs},
		{"initramfs", b.initramfs},
		{"disk", b.disk},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b.p.Phase(s.name)
		if err := s.fn(ctx); err != nil {
			return nil, err
		}
	}
	b.res.Elapsed = b.p.Elapsed()
	return &b.res, nil
}

type builder struct {
	o   Options
	sp  *spec.Spec
	bd  *board.Board
	log *slog.Logger
	p   *progress

	epoch   time.Time
	cache   string
	initBin string
	initSum string

	state buildState
	res   Result
}

func (b *builder) prepare() error {
	name := b.sp.Board
	if b.o.Board != "" {
		name = b.o.Board
	}
	bd, err := board.Load(name)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	b.bd = bd
	if b.epoch, err = resolveEpoch(b.o.Epoch, b.sp.SourceDateEpoch); err != nil {
		return err
	}
	b.cache = b.o.CacheDir
	if b.cache == "" {
		if b.cache, err = DefaultCacheDir(); err != nil {
			return err
		}
	}
	for _, d := range []string{"debs", "extract", "rootfs", "squashfs", "tmp", "index"} {
		if err := os.MkdirAll(filepath.Join(b.cache, d), 0o755); err != nil {
			return fmt.Errorf("build: cache: %w", err)
		}
	}
	b.initBin = b.o.InitBinary
	if b.initBin == "" {
		if b.initBin, err = os.Executable(); err != nil {
			return fmt.Errorf("build: finding the tandem binary: %w", err)
		}
	}
	if err := checkStatic(b.initBin); err != nil {
		return err
	}
	if b.initSum, err = fileSHA256(b.initBin); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	b.p.Printf("spec %s, board %s, epoch %s", b.sp.File, b.bd.Name, b.epoch.UTC().Format(time.RFC3339))
	return nil
}

// resolveEpoch: explicit option, then SOURCE_DATE_EPOCH, then the spec, then the default.
func resolveEpoch(explicit time.Time, fromSpec int64) (time.Time, error) {
	if !explicit.IsZero() {
		return explicit.UTC(), nil
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 315532800 {
			return time.Time{}, fmt.Errorf("build: SOURCE_DATE_EPOCH=%q: want seconds since 1970, 1980 or later", v)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	if fromSpec != 0 {
		return time.Unix(fromSpec, 0).UTC(), nil
	}
	return time.Unix(DefaultEpoch, 0).UTC(), nil
}

// DefaultCacheDir is $XDG_CACHE_HOME/tandem or ~/.cache/tandem.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("build: no cache directory (set --cache): %w", err)
	}
	return filepath.Join(d, "tandem"), nil
}

// checkStatic refuses a dynamically linked init: the initramfs has no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("build: %s is not an ELF binary: %w", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("build: %s is built for %v, the image needs x86-64", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("build: %s is dynamically linked; build it with CGO_ENABLED=0 (see README)", path)
		}
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashOf hashes a list of parts, each length-prefixed, for cache keys.
func hashOf(parts ...any) string {
	h := sha256.New()
	lenprefix.Write(h, parts...)
	return hex.EncodeToString(h.Sum(nil))
}

// publish renames tmp to dst unless dst already exists (another build won).
func publish(tmp, dst string) error {
	if err := os.Rename(tmp, dst); err != nil {
		if _, serr := os.Stat(dst); serr == nil {
			return os.RemoveAll(tmp)
		}
		return err
	}
	return nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func shortList(xs []string, n int) string {
	if len(xs) <= n {
		return strings.Join(xs, ", ")
	}
	return strings.Join(xs[:n], ", ") + fmt.Sprintf(", … (%d more)", len(xs)-n)
}
