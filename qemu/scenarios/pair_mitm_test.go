package scenarios_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

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
	lab, a, b, client, ca, cb := freshPairLab(t, ctx)
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
	// Both listen before the operator is fooled.
	guest(t, ctx, client, "busybox", "sh", "-c",
		`i=0; until busybox grep -q "a man in the middle" /tmp/relay-8443.log && busybox grep -q "a man in the middle" /tmp/relay-8444.log; do i=$((i+1)); [ $i -gt 100 ] && exit 1; busybox sleep 0.2; done`)
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
		cmd, out := tandemPair(t, ctx, fwd, ca, cb, "10.0.0.2:"+tc.port)
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
	cmd, out := tandemPair(t, ctx, fwd, ca, cb, "")
	pstart := time.Now()
	err = cmd.Run()
	t.Logf("tandem pair straight to head-b (%.0f s):\n%s", time.Since(pstart).Seconds(), out)
	if err != nil {
		t.Fatalf("tandem pair: %v", err)
	}
	active, st := pairServes(t, ctx, lab, a, b)
	t.Logf("the pair serves: %s active, node %s; %.0f s after the relays started", active.Name, st.Node, time.Since(start).Seconds())
}
