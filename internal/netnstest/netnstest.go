// Package netnstest runs a test of real netlink and socket paths inside a
// private network namespace, so the host's interfaces are never touched.
package netnstest

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// envInside names the test that runs in the namespace.
const envInside = "TANDEM_NETNS_TEST"

// Inside reports whether t runs in its private network namespace. If it
// does not, Inside re-runs the test binary for t alone under
// `unshare -n`, reports its output or failure, and returns false: the
// caller returns. It skips with -short, and where namespaces are not
// allowed (not root, no unshare).
func Inside(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envInside) == t.Name() {
		return true
	}
	if testing.Short() {
		t.Skip("-short")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare(1) for a private network namespace")
	}
	cmd := exec.Command(unshare, "-n", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), envInside+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("Operation not permitted")) {
			t.Skipf("no network namespaces here: %s", out)
		}
		t.Fatalf("in a new netns: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	return false
}
