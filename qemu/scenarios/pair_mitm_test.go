package scenarios_test

import (
	"bytes"
	"context"
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

// A man in the middle on the management network (issue 15):
//
//  1. Two heads boot unconfigured, with DHCP; the client VM is on the
//     same network and runs two relays (`tandem relay-pairing`) to
//     head-b: one pure, one that swaps each head's certificate
//     fingerprint in the pairing messages for its own. Each terminates
//     TLS with its own certificate.
//  2. The fooled operator runs `tandem pair` from the host with a relay's
//     address as head-b's and head-b's real code, without
//     --peer-fingerprint. Through either relay it fails with a clear
//     message; head-a's and head-b's consoles say why; both heads stay
//     unconfigured.
//  3. `tandem pair` straight to head-b pairs them, and the pair serves.
func TestPairThroughAManInTheMiddle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dhcp := qemu.WizardDHCP()
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Full, HostNIC: true, DHCP: &dhcp})
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")
	ca, cb := wizardConsole(t, ctx, a), wizardConsole(t, ctx, b)
	if err := lab.ClientUp(ctx, netip.MustParsePrefix("10.0.0.2/24")); err != nil {
		t.Fatal(err)
	}
	fwd, err := lab.Forward(ctx, wizardAddr(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	// 1. The relays on the client, in the background.
	for _, r := range []struct{ port, alter string }{{"8443", "none"}, {"8444", "fingerprints"}} {
		guest(t, ctx, client, "busybox", "sh", "-c", fmt.Sprintf(
			"tandem relay-pairing --listen 10.0.0.2:%s --to %s --alter %s > /tmp/relay-%[1]s.log 2>&1 < /dev/null &",
			r.port, wizardAddr(t, cb), r.alter))
	}
	t.Cleanup(func() {
		if t.Failed() {
			cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer ccancel()
			for _, port := range []string{"8443", "8444"} {
				if res, err := client.Agent().Run(cctx, "busybox", "cat", "/tmp/relay-"+port+".log"); err == nil {
					t.Logf("relay on :%s:\n%s", port, res.Stdout)
				}
			}
		}
	})

	// 2. tandem pair through each relay.
	for _, tc := range []struct {
		name, port string
		wantOut    string         // in tandem pair's output
		consoleA   *regexp.Regexp // on head-a's console
		consoleB   *regexp.Regexp
	}{
		{name: "pure relay", port: "8443",
			wantOut:  "something between the heads is relaying the connection",
			consoleA: regexp.MustCompile(`wizard: pairing as initiator failed.*the peer's identity does not match its TLS certificate`),
			consoleB: regexp.MustCompile(`wizard: pairing hello refused.*the peer's identity does not match its TLS certificate`)},
		{name: "relay swapping the fingerprints", port: "8444",
			wantOut:  "something between the heads relayed or altered the pairing (it is bound to both heads' certificates). Type the code its console shows now, and check that the address is the other head's own: its certificate fingerprint must be the one its console shows. After 5 wrong codes it shows a new one.\nWith --peer-fingerprint",
			consoleA: regexp.MustCompile(`wizard: pairing as initiator failed.*key confirmation failed: wrong setup code, or the session is not between the two heads themselves`),
			consoleB: regexp.MustCompile(`wizard: pairing as responder.*key confirmation failed: wrong setup code, or the session is not between the two heads themselves`)},
	} {
		ca, cb = wizardConsole(t, ctx, a), wizardConsole(t, ctx, b)
		markA, markB := a.Console.Len(), b.Console.Len()
		cmd, out := tandemPairVia(t, ctx, fwd, ca, cb, "10.0.0.2:"+tc.port)
		err := cmd.Run()
		t.Logf("%s: tandem pair: %v\n%s", tc.name, err, out)
		if err == nil {
			t.Fatalf("%s: tandem pair paired the heads through the man in the middle", tc.name)
		}
		if !strings.Contains(out.String(), tc.wantOut) {
			t.Errorf("%s: tandem pair does not say %q", tc.name, tc.wantOut)
		}
		for _, c := range []struct {
			vm   *qemu.VM
			mark int
			re   *regexp.Regexp
		}{{a, markA, tc.consoleA}, {b, markB, tc.consoleB}} {
			wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
			line, err := c.vm.Console.WaitForAfter(wctx, c.mark, c.re)
			wcancel()
			if err != nil {
				t.Errorf("%s: %s's console: %v\n%s", tc.name, c.vm.Name, err, c.vm.Console.Tail(20))
			} else {
				t.Logf("%s: %s's console: %s", tc.name, c.vm.Name, line)
			}
		}
		for _, vm := range []*qemu.VM{a, b} {
			if st := nodeStatus(t, ctx, vm); st.State != status.Unconfigured {
				t.Fatalf("%s: %s is %s (%s) after the man in the middle", tc.name, vm.Name, st.State, st.Reason)
			}
		}
	}
	t.Logf("both relays refused by both heads in %.0f s", time.Since(start).Seconds())

	// 3. Straight to head-b, with its newest code: they pair and serve.
	ca, cb = wizardConsole(t, ctx, a), wizardConsole(t, ctx, b)
	cmd, out := tandemPairVia(t, ctx, fwd, ca, cb, wizardAddr(t, cb).Addr().String())
	pstart := time.Now()
	err = cmd.Run()
	t.Logf("tandem pair straight to head-b (%.0f s):\n%s", time.Since(pstart).Seconds(), out)
	if err != nil {
		t.Fatalf("tandem pair: %v", err)
	}
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
	t.Logf("the pair serves: %s active, node %s; %.0f s after the relays started", active.Name, st.Node, time.Since(start).Seconds())
}

// tandemPairVia is tandemPair as the fooled operator runs it: head b's
// code, but peer as its address and no --peer-fingerprint.
func tandemPairVia(t *testing.T, ctx context.Context, fwd string, a, b qemu.WizardBlock, peer string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	siteFile := filepath.Join(t.TempDir(), "site.toml")
	if err := os.WriteFile(siteFile, []byte(pairCLISite(wizardAddr(t, a).Addr(), wizardAddr(t, b).Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, testimage.Binary(t), "pair", "--head", fwd, "--fingerprint", a.Fingerprint,
		"--peer", peer, "--site", siteFile, "--timeout", "10m")
	cmd.Env = append(os.Environ(), "TANDEM_PAIR_CODE="+a.Code, "TANDEM_PAIR_PEER_CODE="+b.Code)
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}
