package scenarios_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"tandem.dev/tandem/internal/browsertest"
	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/status"
	"tandem.dev/tandem/wizard"
)

// An integrator's first install (issue 15), in the lab:
//
//  1. Two heads flashed with the same image boot with no site config, on
//     a management network with a DHCP server (the lab hub's). Each
//     console shows "not configured", the wizard's URL at its leased
//     address, a setup code and its certificate's fingerprint. The
//     client is a third host on that network (and, booting the same
//     image unconfigured, a third head that answers discovery).
//  2. One of head-b's disks holds an ext4 filesystem.
//  3. The operator's browser (headless chromium) reaches head-a's wizard
//     through a loopback port forward only, compares the certificate
//     with the console's fingerprint and accepts exactly that one, and
//     signs in with head-a's code.
//  4. It picks head-b among the announced heads by its fingerprint and
//     types head-b's code: the heads pair between themselves.
//  5. The hardware page never pre-selects the disk with data; choosing it
//     is refused until its destruction is confirmed.
//  6. A VIP outside the management subnet is refused next to its field,
//     then corrected; create; the progress page runs until the pair
//     serves; the summary names the witness command.
//  7. The witness is set up on the client from `tandem witness-key`; the
//     pair serves NFS through the VIP; the client writes through a
//     switchover with no error; head-b's confirmed disk is in its array.
//  8. The setup codes no longer work: the wizard says the head is
//     configured.
func TestWizardPairsTwoFreshHeads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	powered := time.Now()
	// 1. The consoles.
	lab, a, b, client, ca, cb := freshPairLab(t, ctx)
	t.Logf("head-a: %s code %s, certificate %s", ca.URL, ca.Code, ca.Fingerprint)
	t.Logf("head-b: %s code %s", cb.URL, cb.Code)

	// 2. A disk with data on head-b.
	dataDisk := "head-b-data3"
	dev := strings.TrimSpace(guest(t, ctx, b, "busybox", "sh", "-c",
		`for d in /sys/block/*; do [ "$(busybox cat $d/serial 2>/dev/null)" = "$0" ] && echo /dev/${d##*/}; done; true`, dataDisk))
	if dev == "" {
		t.Fatalf("head-b has no disk %s", dataDisk)
	}
	guest(t, ctx, b, "mkfs.ext4", "-q", "-F", dev)

	// 3. The browser, through a loopback forward, trusting the
	// certificate whose fingerprint the console shows.
	fwd, err := lab.Forward(ctx, wizardAddr(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(fwd, "127.0.0.1:") {
		t.Fatalf("the forward listens on %s, not on loopback", fwd)
	}
	cert, err := peerCert(fwd)
	if err != nil {
		t.Fatalf("head-a's wizard through %s: %v\nhead-a's network:\n%s", fwd, err,
			guest(t, ctx, a, "busybox", "sh", "-c", "ip addr; ip route; ip neigh; busybox netstat -tln; busybox netstat -uln"))
	}
	if got := wizard.FormatFingerprint(sha256Of(cert.Raw)); got != ca.Fingerprint {
		t.Fatalf("the wizard's certificate is %s, head-a's console shows %s", got, ca.Fingerprint)
	}
	base := "https://" + fwd
	pg := browsertest.Page{T: t, Ctx: browsertest.New(t, 20*time.Minute, browsertest.SPKIHash(cert)), Shots: browsertest.NewScreenshots(t)}
	pg.Do("open head-a's wizard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#code")))
	pg.Shots.Take(pg.Ctx, "sign-in")
	pg.Submit("sign in", chromedp.SetValue(chromedp.CSS("#code"), ca.Code), chromedp.Submit(chromedp.CSS("#code")))
	pg.Expect("after head-a's code", "Find the other head")

	// 4. head-b, by its fingerprint.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(pg.Body(), cb.Fingerprint) {
		if time.Now().After(deadline) {
			pg.Shots.Take(pg.Ctx, "failed")
			t.Fatalf("head-b (%s) never showed up in head-a's list:\n%s", cb.Fingerprint, pg.Body())
		}
		sleepCtx(ctx, 2*time.Second)
		pg.Do("refresh the list", chromedp.Reload())
	}
	pg.Shots.Take(pg.Ctx, "peers")
	pg.Submit("choose head-b", chromedp.Submit(chromedp.Search(`//tr[contains(., "`+cb.Fingerprint+`")]//button`)))
	pg.Expect("the peer code page", cb.Fingerprint)
	pg.Submit("type head-b's code", chromedp.SetValue(chromedp.CSS("#code"), cb.Code), chromedp.Submit(chromedp.CSS("#code")))
	pg.Expect("after head-b's code", "Network interfaces")

	// 5. The disk with data.
	checked, err := chromedp.Run(pg.Ctx, chromedp.Evaluate[bool](`document.querySelector('input[name=disk1][value="`+dataDisk+`"]').checked`))
	if err != nil || checked {
		t.Fatalf("head-b's disk with data is pre-selected (%v, %v)", checked, err)
	}
	pg.Shots.Take(pg.Ctx, "hardware")
	pg.Do("choose the disk with data", chromedp.Click(chromedp.CSS(`input[name=disk1][value="`+dataDisk+`"]`)))
	pg.Submit("hardware", chromedp.Submit(chromedp.CSS(`input[name=mgmt0]`)))
	pg.Expect("a disk with data without the confirmation", `tick "Destroy the data on `+dataDisk+`"`)
	pg.Do("confirm", chromedp.Click(chromedp.CSS(`input[name=destroy1][value="`+dataDisk+`"]`)))
	pg.Submit("hardware", chromedp.Submit(chromedp.CSS(`input[name=mgmt0]`)))
	pg.Expect("after the hardware", "Site settings")

	// 6. The site form, a mistake, create.
	// The client writes as root, as hypervisors do: no_root_squash.
	pg.Do("fill the site form", chromedp.SetValue(chromedp.CSS("#vip"), "10.9.0.10/24"), chromedp.SetValue(chromedp.CSS("#witness_addr"), "10.0.0.2:7791"),
		chromedp.SetValue(chromedp.CSS("#export0_options"), "rw, sync, no_root_squash, no_subtree_check"))
	pg.Submit("site", chromedp.Submit(chromedp.CSS("#vip")))
	if e := pg.Text("#vip-err"); !strings.Contains(e, "10.9.0.10") {
		t.Errorf("the VIP outside the subnet: %q next to the field", e)
	}
	pg.Shots.Take(pg.Ctx, "site-error")
	pg.Do("correct the VIP", chromedp.SetValue(chromedp.CSS("#vip"), "10.0.0.10/24"))
	pg.Submit("site", chromedp.Submit(chromedp.CSS("#vip")))
	pg.Expect("after the correction", "Review and create the pair")
	pg.Shots.Take(pg.Ctx, "review")
	pg.Submit("create", chromedp.Submit(chromedp.CSS(`form[action="/create"] button`)))
	created := time.Now()
	pg.Do("wait for the pair to serve", chromedp.WaitVisible(chromedp.CSS(`#done a`)))
	serving := time.Now()
	pg.Shots.Take(pg.Ctx, "progress")
	pg.Submit("summary", chromedp.Click(chromedp.CSS(`#done a`)))
	pg.Expect("the summary", "tandem witness-key")
	pg.Shots.Take(pg.Ctx, "summary")
	t.Logf("power on → pair serving through the wizard: %.0f s (create → serving %.0f s)", serving.Sub(powered).Seconds(), serving.Sub(created).Seconds())

	// 7. The witness, NFS through the VIP, a switchover.
	raw := guest(t, ctx, a, "busybox", "cat", "/var/lib/tandem/site.toml")
	if rawB := guest(t, ctx, b, "busybox", "cat", "/var/lib/tandem/site.toml"); rawB != raw {
		t.Fatalf("the heads committed different site configs:\n%s\n---\n%s", raw, rawB)
	}
	active, _ := pairServes(t, ctx, lab, a, b)
	standby := b
	if active == b {
		standby = a
	}
	plan, err := qemu.PlanClient([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, plan.MountNFSv3("/tmp/v3")...)
	startWorkload(t, ctx, client, "/tmp/v3", 10*time.Minute)
	started := time.Now()
	sleepCtx(ctx, 10*time.Second)
	switchAt := time.Since(started)
	if res, err := active.Agent().Run(ctx, "tandem", "switchover"); err != nil || res.Exit != 0 {
		t.Fatalf("tandem switchover on %s: exit %d, %v: %s%s", active.Name, res.Exit, err, res.Stdout, res.Stderr)
	}
	pairReady(t, ctx, standby)
	sleepCtx(ctx, 10*time.Second)
	r := finishWorkload(t, ctx, client, "/tmp/v3")
	t.Logf("switchover on a wizard-made pair: client stall %.1f s", switchoverStalls(r, []time.Duration{switchAt})[0].Seconds())
	if raid := nodeStatus(t, ctx, b).RAID; raid == nil || !strings.Contains(fmt.Sprint(raid.Members), dataDisk) {
		t.Errorf("head-b's array does not hold the confirmed disk %s: %+v", dataDisk, raid)
	}

	// 8. The codes are gone.
	pg.Do("open the wizard again", chromedp.Navigate(base+"/login"))
	if body := pg.Body(); !strings.Contains(body, "This head is configured") && !strings.Contains(body, "is set up") || strings.Contains(body, "Setup code of this head") {
		t.Errorf("head-a's wizard after the setup still offers a sign-in:\n%s", body)
	}
	for _, vm := range []*qemu.VM{a, b} {
		if st := nodeStatus(t, ctx, vm); st.State != status.Ready {
			t.Errorf("%s: %s (%s)", vm.Name, st.State, st.Reason)
		}
	}
}

// wizardConsole waits for the wizard's block on vm's console and returns
// the last one shown (a burnt code is replaced by a new block).
func wizardConsole(t *testing.T, ctx context.Context, vm *qemu.VM) qemu.WizardBlock {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	b, _, err := vm.Console.WaitWizardBlock(wctx, 0)
	if err != nil {
		t.Fatalf("%s: no pairing wizard on the console: %v\n%s", vm.Name, err, vm.Console.Tail(30))
	}
	return b
}

// wizardAddr is the block's wizard address.
func wizardAddr(t *testing.T, b qemu.WizardBlock) netip.AddrPort {
	t.Helper()
	ap, err := b.AddrPort()
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// peerCert is the certificate the TLS server at addr shows, unverified:
// the operator compares its fingerprint with the console's.
func peerCert(addr string) (*x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func sha256Of(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// freshPairLab boots two unconfigured heads and the client on a network
// with the hub's DHCP server and the host's port, waits for both heads'
// wizard blocks and gives the client 10.0.0.2, the witness's address.
func freshPairLab(t *testing.T, ctx context.Context) (lab *qemu.Lab, a, b, client *qemu.VM, ca, cb qemu.WizardBlock) {
	t.Helper()
	dhcp := qemu.WizardDHCP()
	lab = startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Full, HostNIC: true, DHCP: &dhcp})
	a, b, client = lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")
	ca, cb = wizardConsole(t, ctx, a), wizardConsole(t, ctx, b)
	if err := lab.ClientUp(ctx, netip.MustParsePrefix("10.0.0.2/24")); err != nil {
		t.Fatal(err)
	}
	return lab, a, b, client, ca, cb
}

// pairServes starts the witness on the client from `tandem witness-key`
// on head a and waits until the freshly paired heads serve; it returns
// the active head and its status.
func pairServes(t *testing.T, ctx context.Context, lab *qemu.Lab, a, b *qemu.VM) (*qemu.VM, status.Status) {
	t.Helper()
	guest(t, ctx, a, "tandem", "witness-key", "-o", "/tmp/witness.toml")
	if err := lab.StartWitness(ctx, []byte(guest(t, ctx, a, "busybox", "cat", "/tmp/witness.toml"))); err != nil {
		t.Fatal(err)
	}
	keepWitnessLog(t, lab.VM("client"))
	active := a
	if nodeStatus(t, ctx, b).Role == "active" {
		active = b
	}
	return active, pairReady(t, ctx, active)
}
