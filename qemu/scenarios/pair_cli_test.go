package scenarios_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/internal/testimage"
	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/status"
)

// A scripted install, and an attacker on the management network, in the
// lab (issue 15):
//
//  1. Two heads boot unconfigured, with DHCP; the client is a host on the
//     same network (a third unconfigured head, too).
//  2. The attacker, on the client VM, tries 1000 random setup codes on
//     head-a's wizard (`tandem guess-codes`): none gets in; every fifth
//     burns the code and head-a's console shows a new one.
//  3. From the host, through a loopback forward to head-a only, `tandem
//     pair` with the newest codes and both fingerprints and a site.toml
//     without key; head-b loses power as soon as it has staged the
//     config. The command fails; both heads are unconfigured (head-b's
//     staged config is gone after power-on), or, if head-b's commit beat
//     the cut, both end configured. Unconfigured, one more `tandem pair`
//     pairs them.
//  4. With the witness started from `tandem witness-key`, the pair serves.
func TestPairFromTerminal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	lab, a, b, client, ca, cb := freshPairLab(t, ctx)

	// 2. 1000 guesses from the client.
	shown := strings.Count(a.Console.Text(), "setup code:")
	start := time.Now()
	res, err := client.Agent().Run(ctx, "tandem", "guess-codes", "--head", wizardAddr(t, ca).String(), "--fingerprint", ca.Fingerprint, "--tries", "1000")
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Tries, Accepted, Wrong, Burned, Other, Failed int }
	if err := json.Unmarshal(res.Stdout, &g); err != nil || res.Exit != 0 {
		t.Fatalf("tandem guess-codes: exit %d, %v: %s%s", res.Exit, err, res.Stdout, res.Stderr)
	}
	t.Logf("1000 guesses from the client in %.0f s: %+v", time.Since(start).Seconds(), g)
	if g.Tries != 1000 || g.Accepted != 0 || g.Burned != 200 || g.Wrong != 800 {
		t.Errorf("1000 guesses: %+v; want none in, 200 codes burned (every fifth guess)", g)
	}
	// The console shows each new code (it may still be printing them).
	for deadline := time.Now().Add(time.Minute); strings.Count(a.Console.Text(), "setup code:")-shown < 200; {
		if time.Now().After(deadline) {
			t.Fatalf("head-a's console shows %d new codes after 200 burned", strings.Count(a.Console.Text(), "setup code:")-shown)
		}
		sleepCtx(ctx, time.Second)
	}
	ca = wizardConsole(t, ctx, a) // the newest code

	// 3. tandem pair from the host; head-b loses power once it has
	// staged the config. Both heads end unconfigured, or (if head-b's
	// commit beat the power cut) both configured once head-b is back.
	fwd, err := lab.Forward(ctx, wizardAddr(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	mark := b.Console.Len()
	cmd, out := tandemPair(t, ctx, fwd, ca, cb, "")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Console.WaitForAfter(ctx, mark, regexp.MustCompile(`wizard: the site config is staged, not committed yet`)); err != nil {
		t.Fatalf("head-b never staged the config: %v\n%s", err, out)
	}
	if err := b.Quit(); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	t.Logf("tandem pair with head-b's power pulled after its stage: %v\n%s", werr, out)
	if werr == nil {
		t.Fatalf("tandem pair succeeded although head-b lost power halfway:\n%s", out)
	}
	if b, err = lab.PowerOn("head-b"); err != nil {
		t.Fatal(err)
	}
	if st := nodeStatus(t, ctx, a); st.State != status.Unconfigured {
		// Only if head-b committed before the cut may head-a follow:
		// both configured, once head-b is back.
		t.Logf("head-b committed before the power cut; head-a: %s", st.State)
		waitStatus(t, ctx, b, func(s status.Status) bool { return s.State == status.Ready })
	} else {
		cb = wizardConsole(t, ctx, b) // head-b came back unconfigured: its new code
		if st := nodeStatus(t, ctx, b); st.State != status.Unconfigured {
			t.Fatalf("head-b after power-on: %s (%s); head-a is unconfigured", st.State, st.Reason)
		}
		if res, _ := run(ctx, b, "busybox", "ls", "/var/lib/tandem"); strings.Contains(string(res.Stdout), "site.toml") {
			t.Errorf("head-b kept a site config: %s", res.Stdout)
		}
		t.Logf("both heads unconfigured after the power cut; pairing again")
		ca = wizardConsole(t, ctx, a)
		cmd, out = tandemPair(t, ctx, fwd, ca, cb, "")
		start = time.Now()
		err = cmd.Run()
		t.Logf("tandem pair (%.0f s):\n%s", time.Since(start).Seconds(), out)
		if err != nil {
			t.Fatalf("tandem pair: %v", err)
		}
	}

	// 4. The pair serves.
	active, st := pairServes(t, ctx, lab, a, b)
	t.Logf("the pair serves: %s active, node %s", active.Name, st.Node)
}

// pairCLISite is the scripted install's site.toml: the lab's disks, the
// addresses the heads have now (kept, so that tandem pair follows the
// create through to the end), no key.
func pairCLISite(a, b netip.Addr) string {
	return fmt.Sprintf(`version = 1

[pair]
name = "scripted"

[[node]]
name = "nas-a"
disks = ["serial:head-a-data0", "serial:head-a-data1", "serial:head-a-data2", "serial:head-a-data3"]
[node.management]
interface = "eth0"
address = "%s/24"
[node.replication]
links = ["eth1", "eth2"]
address = "192.168.255.1/24"

[[node]]
name = "nas-b"
disks = ["serial:head-b-data0", "serial:head-b-data1", "serial:head-b-data2", "serial:head-b-data3"]
[node.management]
interface = "eth0"
address = "%s/24"
[node.replication]
links = ["eth1", "eth2"]
address = "192.168.255.2/24"

[storage.raid]
create_if_blank = true

[storage.filesystem]
mkfs_if_blank = true

[vip]
address = "10.0.0.10/24"

[witness]
address = "10.0.0.2:7791"

[services.nfs]
enabled = true
[[services.nfs.export]]
path = "/srv/tandem/share"
clients = ["10.0.0.0/24"]
options = ["rw", "sync", "no_root_squash", "no_subtree_check"]
fsid = 1
`, a, b)
}

// tandemPair is the host's `tandem pair` of head a (through the loopback
// forward fwd) with head b, from both consoles' codes and fingerprints;
// out collects what it prints. via, when set, is the address the
// operator was fooled into taking for head b's (a man in the middle): it
// goes as --peer, and head b's fingerprint is not given.
func tandemPair(t *testing.T, ctx context.Context, fwd string, a, b qemu.WizardBlock, via string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	siteFile := filepath.Join(t.TempDir(), "site.toml")
	if err := os.WriteFile(siteFile, []byte(pairCLISite(wizardAddr(t, a).Addr(), wizardAddr(t, b).Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"pair", "--head", fwd, "--fingerprint", a.Fingerprint, "--site", siteFile, "--timeout", "10m"}
	if via != "" {
		args = append(args, "--peer", via)
	} else {
		args = append(args, "--peer", wizardAddr(t, b).Addr().String(), "--peer-fingerprint", b.Fingerprint)
	}
	cmd := exec.CommandContext(ctx, testimage.Binary(t), args...)
	cmd.Env = append(os.Environ(), "TANDEM_PAIR_CODE="+a.Code, "TANDEM_PAIR_PEER_CODE="+b.Code)
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}
