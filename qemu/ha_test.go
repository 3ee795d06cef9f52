package qemu_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/init/site"
	"tandem.dev/tandem/init/status"
	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/qemu/agent"
	"tandem.dev/tandem/qemu/workload"
)

// haSiteFlag runs the HA scenarios on another site.toml than
// configs/site.lab.toml, e.g. to try shorter lab timings:
// go test ./qemu/ -run TestFailover -args -ha.site=/tmp/site.toml
var haSiteFlag = flag.String("ha.site", "", "site.toml for the HA scenarios (default configs/site.lab.toml)")

func haSite(t *testing.T) ([]byte, *site.Config) {
	t.Helper()
	raw := labSite(t)
	if *haSiteFlag != "" {
		var err error
		if raw, err = os.ReadFile(*haSiteFlag); err != nil {
			t.Fatal(err)
		}
	}
	sc, err := site.Parse("site.toml", raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw, sc
}

// R1 of issue 6: the active head loses power under the client's writes.
//
//  1. The full lab boots with the witness on the client (10.0.0.2, as the
//     site config says). head-a takes the service and the witness vote;
//     each head sees the other on both heartbeat paths.
//  2. The client mounts the export hard over NFSv3 through the VIP and
//     writes checksummed records.
//  3. head-a is killed (QMP quit: a power pull). head-b gets the vote once
//     head-a's lease has run out, waits until head-a would certainly be
//     stopped or reset (the takeover delay: never less), outdates it
//     through DRBD's fence-peer hook and starts the service.
//  4. The client's writes went on: no error, nothing lost or corrupt. The
//     stall and head-b's takeover timeline are logged.
func TestFailoverActiveHeadKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	raw, sc := haSite(t)
	interval := time.Duration(sc.HA.HeartbeatIntervalMS) * time.Millisecond
	dead := time.Duration(sc.HA.DeadTimeMS) * time.Millisecond
	lease := time.Duration(sc.Witness.LeaseMS) * time.Millisecond
	lab := startLabWith(t, ctx, qemu.LabConfig{Topology: qemu.Full, SiteTOML: raw})
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")

	// 1. The witness runs on the client; head-a serves and holds its vote.
	clientUp(t, ctx, lab, client)
	startWitness(t, ctx, client, raw)
	activeRE := regexp.MustCompile(`tandem: role: active after (\d+) ms`)
	if _, err := a.Console.WaitFor(ctx, activeRE); err != nil {
		t.Fatal(err)
	}
	stA := waitStatus(t, ctx, a, func(s status.Status) bool {
		return s.Role == "active" && s.DRBD != nil && s.DRBD.Connection == "Connected" && s.DRBD.PeerDisk == "UpToDate" &&
			s.HA != nil && s.HA.Vote.Held && s.HA.Heartbeat.Seen && pathsUp(s.HA) == 2
	})
	if stA.HA.QuorumBy != "peer and witness" || stA.Peer == nil || stA.Peer.HA == nil || stA.Peer.HA.Announce != "standby" {
		t.Fatalf("head-a's view of the pair: quorum by %q, peer %+v", stA.HA.QuorumBy, stA.Peer)
	}
	delay := time.Duration(stA.HA.Timing.TakeoverDelayMS) * time.Millisecond
	t.Logf("pair up: head-a active with the witness vote (%d ms left), epoch %d; takeover delay %v, dead time %v, lease %v",
		stA.HA.Vote.ExpiresInMS, stA.HA.Epoch, delay, dead, lease)
	out := guest(t, ctx, b, "tandem", "status")
	for _, want := range []string{`quorum \(peer\)`, `head-a: quorum \(peer and witness\)`, `heartbeat\s+SEEN head-a: active`,
		`replication\s+10\.10\.0\.12:\d+\s+10\.10\.0\.11:\d+\s+up`, `management\s+10\.0\.0\.12:\d+\s+10\.0\.0\.11:\d+\s+up`,
		`dropped: forged 0, replayed 0`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("tandem status on head-b does not match %q:\n%s", want, out)
		}
	}
	if out := guest(t, ctx, a, "tandem", "status"); !regexp.MustCompile(`witness\s+10\.0\.0\.2:7791: vote HELD by this head`).MatchString(out) {
		t.Errorf("tandem status on head-a does not show the witness vote:\n%s", out)
	}

	// 2. The client writes through the VIP over a hard NFSv3 mount. The
	// run spans the takeover's worst case and some writing after it.
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, "mount.nfs", "10.0.0.10:/srv/tandem/vm", "/tmp/v3", "-o", "vers=3,hard,proto=tcp,nolock")
	const before, after = 15 * time.Second, 30 * time.Second
	worst := max(dead, lease) + interval + delay + time.Minute // the stack's start and the client's reconnect
	startWorkload(t, ctx, client, "/tmp/v3", before+worst+after)
	sleepCtx(ctx, before)

	// 3. Power pull on the active head.
	mark := b.Console.Len()
	killed := time.Now()
	if err := a.Quit(); err != nil {
		t.Fatal(err)
	}
	t.Logf("head-a killed (QMP quit)")
	wctx, wcancel := context.WithTimeout(ctx, worst+time.Minute)
	line, err := b.Console.WaitForAfter(wctx, mark, activeRE)
	wcancel()
	if err != nil {
		t.Fatalf("head-b did not take over within %v of the kill: %v", worst+time.Minute, err)
	}
	took := time.Since(killed)
	t.Logf("head-b active %.1f s after the kill (%s)", took.Seconds(), strings.TrimSpace(line))
	// Safety: the takeover waits out the takeover delay after the
	// silence; an earlier one could meet a live old active.
	if took < delay {
		t.Errorf("head-b took over %.1f s after the kill, before the takeover delay of %v", took.Seconds(), delay)
	}
	stB := waitStatus(t, ctx, b, func(s status.Status) bool {
		return s.Role == "active" && s.HA != nil && len(s.HA.Failovers) > 0 && s.DRBD != nil && s.DRBD.Role == "Primary"
	})
	f := stB.HA.Failovers[0]
	var steps []string
	for _, s := range f.Steps {
		steps = append(steps, fmt.Sprintf("%s %.2fs", s.Name, float64(s.MS)/1000))
	}
	t.Logf("head-b's takeover: %s in %.1f s (from head-a's last heartbeat): %s", f.Kind, float64(f.TotalMS)/1000, strings.Join(steps, ", "))
	for _, want := range []string{"detect", "vote", "wait", "fence", "promote", "mount", "nfsd up", "VIP up"} {
		if !slices.ContainsFunc(f.Steps, func(s status.FailoverStep) bool { return s.Name == want }) {
			t.Errorf("the takeover's timeline lacks %q: %+v", want, f.Steps)
		}
	}
	if f.Kind != "takeover" || !f.OK || stB.HA.Epoch <= stA.HA.Epoch || !stB.HA.Vote.Held || stB.HA.Heartbeat.Alive {
		t.Errorf("head-b after the takeover: kind %s ok %v, epoch %d (head-a had %d), vote held %v, peer alive %v",
			f.Kind, f.OK, stB.HA.Epoch, stA.HA.Epoch, stB.HA.Vote.Held, stB.HA.Heartbeat.Alive)
	}
	// head-b outdated head-a through DRBD's fence-peer hook.
	if rec := guest(t, ctx, b, "busybox", "cat", "/var/lib/tandem/drbd/r0.fenced"); !strings.Contains(rec, `"verdict":"down"`) {
		t.Errorf("no fence record for head-a on head-b: %s", rec)
	}
	if wlog := guest(t, ctx, client, "busybox", "cat", "/tmp/witness.log"); !regexp.MustCompile(`witness: granted.*holder=head-b`).MatchString(wlog) {
		t.Errorf("the witness never granted head-b its vote:\n%s", wlog)
	}

	// 4. The client's writes rode it out.
	r := waitWorkload(t, ctx, client, "/tmp/v3", worst+after+3*time.Minute)
	t.Logf("NFSv3: %s", r)
	if !r.Clean() || r.Acked == 0 {
		t.Errorf("the client saw errors or lost records across the takeover: %+v", r)
	}
	var stall *workload.Stall
	for i, s := range r.Stalls {
		if off := s.From.Sub(r.Start); off >= before-5*time.Second && off <= before+5*time.Second {
			stall = &r.Stalls[i]
		}
	}
	if stall == nil {
		t.Fatalf("no stall at the kill (%v into the run): %+v", before, r.Stalls)
	}
	t.Logf("R1 stall: %.1f s (the kill to the client's next acknowledged write)", stall.Took.Seconds())
	if r.End.Sub(stall.To) < 5*time.Second {
		t.Errorf("the client barely wrote after the takeover: stall ended %v before the run's end", r.End.Sub(stall.To))
	}
}

// startWitness puts the site config on the client and runs `tandem
// witness` there in the background, logging to /tmp/witness.log.
func startWitness(t *testing.T, ctx context.Context, client *qemu.VM, siteTOML []byte) {
	t.Helper()
	res, err := client.Agent().Do(ctx, agent.Request{Argv: []string{"busybox", "sh", "-c", "busybox cat > /tmp/site.toml"}, Stdin: siteTOML})
	if err != nil || res.Exit != 0 {
		t.Fatalf("client: writing the site config: %v %s", err, res.Stderr)
	}
	guest(t, ctx, client, "busybox", "sh", "-c",
		"(tandem witness --site /tmp/site.toml > /tmp/witness.log 2>&1 < /dev/null &) > /dev/null 2>&1")
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := run(ctx, client, "busybox", "cat", "/tmp/witness.log")
		if err == nil && strings.Contains(string(res.Stdout), "witness: serving") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the witness did not start on the client: %v %s", err, res.Stdout)
		}
		sleepCtx(ctx, time.Second)
	}
}

// pathsUp counts the heartbeat paths that hear the peer.
func pathsUp(h *status.HA) int {
	n := 0
	for _, p := range h.Heartbeat.Paths {
		if p.Alive {
			n++
		}
	}
	return n
}
