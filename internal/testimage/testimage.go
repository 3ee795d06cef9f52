// Package testimage builds, once per test process, the static tandem
// binary and the default image that builder and QEMU tests share. The
// image comes from the real Debian mirror and the shared build cache.
package testimage

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/configs"
	"tandem.dev/tandem/image/build"
	"tandem.dev/tandem/image/spec"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error

	binOnce sync.Once
	bin     string
	binErr  error

	imgOnce sync.Once
	img     *build.Result
	imgErr  error
)

// Dir is this process's scratch directory; Cleanup removes it.
func Dir(tb testing.TB) string {
	dirOnce.Do(func() { dir, dirErr = os.MkdirTemp("", "tandem-test-") })
	if dirErr != nil {
		tb.Fatal(dirErr)
	}
	return dir
}

// Cleanup removes the scratch directory; call it from TestMain.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// Binary returns a static tandem binary built from this checkout.
func Binary(tb testing.TB) string {
	d := Dir(tb)
	binOnce.Do(func() {
		bin = filepath.Join(d, "tandem")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "tandem.dev/tandem/cmd/tandem")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = &buildErr{err, string(out)}
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return bin
}

type buildErr struct {
	err error
	out string
}

func (e *buildErr) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// DefaultSpec returns the embedded default image spec.
func DefaultSpec(tb testing.TB) *spec.Spec {
	s, err := spec.Parse("embedded:"+configs.ImageSpecName, configs.ImageSpec)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Default builds the default image once per process, resolving packages
// afresh (its lockfile lives in the scratch directory).
func Default(tb testing.TB) *build.Result {
	d := Dir(tb)
	imgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		img, imgErr = build.Build(ctx, build.Options{
			Spec:       DefaultSpec(tb),
			Output:     filepath.Join(d, "default.img"),
			LockPath:   filepath.Join(d, "default.lock"),
			InitBinary: Binary(tb),
			Progress:   testWriter{tb},
		})
	})
	if imgErr != nil {
		tb.Fatal(imgErr)
	}
	return img
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Logf("%s", p)
	return len(p), nil
}

// VMDir is a per-test directory for a VM's overlay, firmware variables and
// console log. It lives under Dir, so Cleanup (which TestMain also runs on
// Ctrl-C) removes it even when the test never finishes.
func VMDir(tb testing.TB) string {
	d, err := os.MkdirTemp(Dir(tb), "vm-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}
