package scenarios_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/internal/testimage"
	"tandem.dev/tandem/qemu"
)

// A scripted install, and an attacker on the management network, in the
// lab (issue 15):
//
//  1. Two heads boot unconfigured, with DHCP; the client is a host on the
//     same network (a third unconfigured head, too).
//  2. The attacker, on the client VM, tries 1000 random setup codes on
//     head-a's wizard (`tandem guess-codes`): none gets in; every fifth
//     burns the code and head-a's console shows a new one.
//  3. From the host, through a loopback forward to head-a only, one
//     `tandem pair` with the newest codes and both fingerprints and a
//     site.toml without key pairs the heads and pushes the config.
//  4. With the witness started from `tandem witness-key`, the pair serves.
func TestPairFromTerminal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Full, HostNIC: true, DHCP: &qemu.DHCPConfig{
		Subnet: netip.MustParsePrefix("10.0.0.0/24"), Lease: 10 * time.Minute,
		PoolFirst: netip.MustParseAddr("10.0.0.100"), PoolLast: netip.MustParseAddr("10.0.0.149"),
	}})
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")
	ca, cb := wizardConsole(t, ctx, a), wizardConsole(t, ctx, b)
	if err := lab.ClientUp(ctx, netip.MustParsePrefix("10.0.0.2/24")); err != nil {
		t.Fatal(err)
	}

	// 2. 1000 guesses from the client.
	shown := strings.Count(a.Console.Text(), "setup code:")
	start := time.Now()
	res, err := client.Agent().Run(ctx, "tandem", "guess-codes", "--head", ca.addrPort(t).String(), "--fingerprint", ca.Fingerprint, "--tries", "1000")
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

	// 3. tandem pair from the host.
	fwd, err := lab.Forward(ctx, ca.addrPort(t))
	if err != nil {
		t.Fatal(err)
	}
	siteFile := filepath.Join(t.TempDir(), "site.toml")
	if err := os.WriteFile(siteFile, []byte(pairCLISite(ca.addrPort(t).Addr(), cb.addrPort(t).Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, testimage.Binary(t), "pair", "--head", fwd, "--fingerprint", ca.Fingerprint,
		"--peer", cb.addrPort(t).Addr().String(), "--peer-fingerprint", cb.Fingerprint, "--site", siteFile)
	cmd.Env = append(os.Environ(), "TANDEM_PAIR_CODE="+ca.Code, "TANDEM_PAIR_PEER_CODE="+cb.Code)
	start = time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("tandem pair (%.0f s):\n%s", time.Since(start).Seconds(), out)
	if err != nil {
		t.Fatalf("tandem pair: %v", err)
	}

	// 4. The pair serves.
	guest(t, ctx, a, "tandem", "witness-key", "-o", "/tmp/witness.toml")
	if err := lab.StartWitness(ctx, []byte(guest(t, ctx, a, "busybox", "cat", "/tmp/witness.toml"))); err != nil {
		t.Fatal(err)
	}
	keepWitnessLog(t, client)
	active := a
	if nodeStatus(t, ctx, b).Role == "active" {
		active = b
	}
	st := pairReady(t, ctx, active)
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
