// Package hosttool finds the host programs that tests check their output
// with (unsquashfs, sgdisk, fsck.vfat, QEMU). Locally -short skips such
// tests; in CI (CI=true) and without -short a missing tool is a failure
// that names the package to install, never a silent skip.
package hosttool

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Require returns the path of name, from Debian package pkg.
func Require(t testing.TB, name, pkg string) string {
	t.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skipf("-short: skipping a check that needs %s", name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("host tool %s missing (CI=%q): run scripts/setup or apt-get install -y %s", name, os.Getenv("CI"), pkg)
	}
	return p
}

// RequireRootKernel gates a test that needs root and the host's kernel
// (loop devices, mounts, network namespaces): it runs only with
// TANDEM_LOOP_TESTS=1, as scripts/test sets it, and then a missing
// privilege is a failure, never a skip. what says what the test needs.
func RequireRootKernel(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("TANDEM_LOOP_TESTS") != "1" {
		t.Skipf("set TANDEM_LOOP_TESTS=1 (root; %s) to run this on the host's kernel", what)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("TANDEM_LOOP_TESTS=1 needs root (%s)", what)
	}
}

// SparseFile makes a sparse file of size bytes at path.
func SparseFile(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// Loop attaches img to a free loop device with losetup and returns the
// device; the test's end detaches it (after the cleanups registered
// later, such as an unmount).
func Loop(t testing.TB, losetup, img string) string {
	t.Helper()
	out, err := exec.Command(losetup, "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup refused: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	return dev
}
