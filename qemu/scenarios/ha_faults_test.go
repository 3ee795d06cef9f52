package scenarios_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/qemu"
	"tandem.dev/tandem/status"
)

// R2 and R8 (docs/ha.md): faults that must change nothing, and the
// operator's modes.
//
//  1. The full lab boots with the witness on the client; head-a serves.
//     The client writes checksummed records through the VIP over a hard
//     NFSv3 mount for the whole story.
//  2. R2: one replication link is cut at head-a. The bond carries on over
//     the other: DRBD stays Connected on both heads, no head changes role
//     and no failover is recorded, for several dead times. The link is
//     restored and the bond uses both again.
//  3. R8: an attacker on the management segment replays head-a's
//     captured heartbeats to head-b, and sends forged copies (one byte
//     changed: head-a yielding, a far newer epoch, a damaged MAC). head-b
//     counts every one as replayed or forged, and nothing else changes.
//  4. A layer fails on the standby: DRBD is taken down by hand on head-b.
//     Its monitor finds it, the supervisor restarts it there, DRBD
//     resyncs, and the service stays on head-a.
//  5. Node standby: `tandem standby on` on head-a hands the service to
//     head-b at once, as a switchover does, and head-a stays out of it
//     until `tandem standby off`.
//  6. Maintenance: with `tandem maintenance on` on head-b, the VIP deleted
//     by hand is reported but left alone; `tandem maintenance off`, and
//     the supervisor puts it back.
//  7. A planned poweroff of the active head (head-b) hands the service to
//     head-a first (a switchover, not a takeover from a dead head after
//     the dead time).
//  8. The client saw no error and lost nothing.
func TestFailoverOperatorModesAndFaultsThatMoveNothing(t *testing.T) {
	ctx, lab, sc := startHALab(t, 20*time.Minute)
	dead := time.Duration(sc.HA.DeadTimeMS) * time.Millisecond
	a, b, client := lab.VM("head-a"), lab.VM("head-b"), lab.VM("client")

	// 1. The pair serves; the client writes.
	before := pairReady(t, ctx, a)
	failoversA := len(before.HA.Failovers)
	guest(t, ctx, client, "busybox", "mkdir", "-p", "/tmp/v3")
	guest(t, ctx, client, "mount.nfs", "10.0.0.10:/srv/tandem/vm", "/tmp/v3", "-o", "vers=3,hard,proto=tcp,nolock")
	startWorkload(t, ctx, client, "/tmp/v3", 30*time.Minute) // stopped at the end

	// unchanged fails unless both heads keep their roles, DRBD stays
	// Connected and neither records a failover.
	unchanged := func(when string) {
		t.Helper()
		for _, h := range []struct {
			vm        *qemu.VM
			role      string
			failovers int
		}{{a, "active", failoversA}, {b, "standby", -1}} {
			st := nodeStatus(t, ctx, h.vm)
			if st.Role != h.role || st.DRBD == nil || st.DRBD.Connection != "Connected" || st.HA == nil {
				t.Fatalf("%s: %s is %s, DRBD %+v", when, h.vm.Name, st.Role, st.DRBD)
			}
			if h.failovers >= 0 && len(st.HA.Failovers) != h.failovers {
				t.Fatalf("%s: %s recorded a role change: %+v", when, h.vm.Name, st.HA.Failovers[0])
			}
		}
	}

	// 2. R2: one replication link cut for four dead times.
	if err := a.SetLink("rep0", false); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(4 * dead)
	for time.Now().Before(until) {
		unchanged("rep0 cut")
		sleepCtx(ctx, time.Second)
	}
	if bond := guest(t, ctx, a, "busybox", "cat", "/proc/net/bonding/bond0"); strings.Count(bond, "MII Status: up") != 2 {
		// bond0 itself and one slave are up; the cut slave is down.
		t.Errorf("head-a's bond with rep0 cut:\n%s", bond)
	}
	if err := a.SetLink("rep0", true); err != nil {
		t.Fatal(err)
	}
	// The carrier comes back. The bond's ARP monitor cannot prove a
	// backup link healthy on a point-to-point cable (its probes leave by
	// the active link only), so it marks rep0 up again when it needs it.
	deadline := time.Now().Add(time.Minute)
	for strings.TrimSpace(guest(t, ctx, a, "busybox", "cat", "/sys/class/net/eth1/carrier")) != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("head-a's eth1 has no carrier a minute after rep0 came back")
		}
		sleepCtx(ctx, time.Second)
	}
	unchanged("rep0 restored")
	t.Logf("R2: one replication link cut for %v: no role change, DRBD Connected throughout", 4*dead)

	// 3. R8: capture head-a's heartbeats to head-b on the management
	// segment, then replay and forge them.
	from, to := netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")
	var (
		mu       sync.Mutex
		captured [][]byte
	)
	lab.Hub.SetTap(func(f []byte) {
		if _, ok := heartbeatPayload(f, from, to, uint16(sc.HA.HeartbeatPort)); ok {
			mu.Lock()
			if len(captured) < 8 {
				captured = append(captured, f)
			}
			mu.Unlock()
		}
	})
	sleepCtx(ctx, 6*time.Second)
	lab.Hub.SetTap(nil)
	mu.Lock()
	frames := captured
	mu.Unlock()
	if len(frames) < 5 {
		t.Fatalf("captured %d heartbeats from head-a to head-b in 6 s", len(frames))
	}
	drops := nodeStatus(t, ctx, b).HA.Heartbeat.Dropped
	var replays, forgeries int
	for _, f := range frames {
		for range 3 {
			lab.Hub.Inject(f)
			replays++
		}
		p, _ := heartbeatPayload(f, from, to, uint16(sc.HA.HeartbeatPort))
		// Each would move the service if head-b believed it: head-a
		// yielding (role none), a far newer epoch; and a damaged MAC.
		for _, e := range []struct {
			off int
			val byte
		}{{5, 0}, {48, 0xff}, {len(p) - 1, p[len(p)-1] ^ 0x5a}} {
			g := forge(f, len(f)-len(p)+e.off, e.val)
			lab.Hub.Inject(g)
			forgeries++
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	deadline = time.Now().Add(30 * time.Second)
	var now status.HeartbeatDrops
	for {
		now = nodeStatus(t, ctx, b).HA.Heartbeat.Dropped
		if now.Forged-drops.Forged >= uint64(forgeries) && now.Replayed-drops.Replayed >= uint64(replays) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("head-b counted %d forged (of %d sent) and %d replayed (of %d)",
				now.Forged-drops.Forged, forgeries, now.Replayed-drops.Replayed, replays)
		}
		sleepCtx(ctx, time.Second)
	}
	for range 3 {
		unchanged("after forged and replayed heartbeats")
		sleepCtx(ctx, dead)
	}
	t.Logf("R8: %d replayed and %d forged heartbeats sent; head-b counts forged %d, replayed %d; nothing changed",
		replays, forgeries, now.Forged-drops.Forged, now.Replayed-drops.Replayed)
	if out := guest(t, ctx, b, "tandem", "status"); !strings.Contains(out, "forged") {
		t.Errorf("tandem status on head-b does not show the dropped heartbeats:\n%s", out)
	}

	// 4. A layer fails on the standby: restarted there, nothing moves.
	restarts := func(st status.Status, name string) (int, string) {
		for _, sv := range st.Services {
			if sv.Name == name {
				return sv.Restarts, sv.State
			}
		}
		return -1, ""
	}
	r0, _ := restarts(nodeStatus(t, ctx, b), "drbd")
	guest(t, ctx, b, "drbdadm", "-c", "/run/tandem/drbd/r0.res", "down", "r0")
	st := waitStatus(t, ctx, b, func(s status.Status) bool {
		n, state := restarts(s, "drbd")
		return n > r0 && state == "running" && s.DRBD != nil && s.DRBD.Connection == "Connected" && s.DRBD.Disk == "UpToDate"
	})
	n, _ := restarts(st, "drbd")
	t.Logf("DRBD taken down by hand on the standby: restarted there (%d restarts), resynced; alert meanwhile: %q", n, st.HA.Alert)
	unchanged("after DRBD failed on the standby")
	pairReady(t, ctx, a)

	// 5. Node standby moves the service and keeps it away.
	out := guest(t, ctx, a, "tandem", "standby", "on")
	if !strings.Contains(out, "head-b is active") {
		t.Errorf("tandem standby on, on head-a: %q", out)
	}
	st = waitStatus(t, ctx, a, func(s status.Status) bool {
		return s.Role == "standby" && s.HA != nil && s.HA.Mode == "standby" && s.Peer != nil && s.Peer.Role == "active"
	})
	t.Logf("standby on head-a: %s (%s)", strings.TrimSpace(out), st.HA.Decision.Reason)
	sleepCtx(ctx, 2*dead) // a head in standby does not take the service back
	if st := nodeStatus(t, ctx, a); st.Role != "standby" || st.HA.Mode != "standby" {
		t.Fatalf("head-a in node standby is %s, mode %s", st.Role, st.HA.Mode)
	}
	out = guest(t, ctx, a, "tandem", "standby", "off")
	if st := nodeStatus(t, ctx, a); st.HA.Mode != "normal" || st.Role != "standby" {
		t.Errorf("after %q head-a is %s, mode %s; the service stays where it is", out, st.Role, st.HA.Mode)
	}

	// 6. Maintenance: monitors report, nothing acts.
	pairReady(t, ctx, b)
	guest(t, ctx, b, "tandem", "maintenance", "on")
	vipIs := func(s status.Status, state string) bool {
		for _, sv := range s.Services {
			if sv.Name == "vip" {
				return sv.State == state
			}
		}
		return false
	}
	vipFail := func(s status.Status) bool { return vipIs(s, "failed") }
	vipGone := time.Now()
	guest(t, ctx, b, "ip", "addr", "del", sc.VIP.Address, "dev", "eth0")
	st = waitStatus(t, ctx, b, vipFail)
	if st.HA.Mode != "maintenance" || st.Role != "active" {
		t.Errorf("head-b in maintenance with the VIP gone: %s, mode %s", st.Role, st.HA.Mode)
	}
	sleepCtx(ctx, 3*time.Duration(sc.HA.Monitor.VIP.IntervalMS)*time.Millisecond)
	if st := nodeStatus(t, ctx, b); !vipFail(st) || strings.Contains(guest(t, ctx, b, "ip", "addr", "show", "dev", "eth0"), sc.VIP.Prefix().Addr().String()+"/") {
		t.Fatalf("in maintenance, something put the VIP back or the monitor stopped reporting: %+v", st.Services)
	}
	maintOff := time.Now()
	guest(t, ctx, b, "tandem", "maintenance", "off")
	waitStatus(t, ctx, b, func(s status.Status) bool { return vipIs(s, "running") && s.HA.Mode == "normal" })
	if !strings.Contains(guest(t, ctx, b, "ip", "addr", "show", "dev", "eth0"), sc.VIP.Prefix().Addr().String()+"/") {
		t.Fatalf("maintenance off: the VIP is still missing on head-b")
	}
	pairReady(t, ctx, b)
	clientWrites(t, ctx, client, "/tmp/v3")
	t.Logf("maintenance on head-b: the deleted VIP stayed down and reported; restored after maintenance off")

	// 7. A planned poweroff hands the service over first.
	mark := a.Console.Len()
	off := time.Now()
	guest(t, ctx, b, "tandem", "poweroff")
	line, err := a.Console.WaitForAfter(ctx, mark, regexp.MustCompile(`tandem: role: active after (\d+) ms`))
	if err != nil {
		t.Fatal(err)
	}
	handover := time.Since(off)
	// A takeover from a dead head first waits out the dead time and the
	// takeover delay, then starts the same stack; a handover does not wait
	// (the role change's kind, below, says which it was).
	started, _ := strconv.Atoi(regexp.MustCompile(`after (\d+) ms`).FindStringSubmatch(line)[1])
	takeover := time.Duration(st.HA.Timing.DeadTimeMS+st.HA.Timing.TakeoverDelayMS+int64(started)) * time.Millisecond
	t.Logf("planned poweroff of head-b: head-a active after %.1f s (%s); a takeover would take at least %v", handover.Seconds(), strings.TrimSpace(line), takeover)
	select {
	case <-b.Done():
	case <-time.After(3 * time.Minute):
		t.Errorf("head-b did not power off")
	}
	// head-a starts on the control channel's request, or on its own as
	// soon as head-b announces it has stopped, whichever comes first.
	if st := nodeStatus(t, ctx, a); len(st.HA.Failovers) == 0 || st.HA.Failovers[0].Kind != "switchover" && st.HA.Failovers[0].Kind != "start" {
		t.Errorf("head-a's last role change is neither a switchover nor a start (a takeover means no handover): %+v", st.HA.Failovers)
	}

	// 8. The client rode it out.
	r := finishWorkload(t, ctx, client, "/tmp/v3")
	// The stalls, on the client's clock (it boots from the host's): the
	// VIP deleted in maintenance stalls the client on purpose; the
	// handover at the poweroff must not.
	for _, s := range r.Stalls {
		if s.Took < 2*time.Second {
			continue
		}
		t.Logf("client stall %.1f s from %s", s.Took.Seconds(), s.From.UTC().Format("15:04:05.0"))
		if s.From.After(off.Add(-2*time.Second)) && s.From.Before(off.Add(handover)) && s.Took >= takeover {
			t.Errorf("the client stalled %.1f s across the planned poweroff, as long as a takeover from a dead head", s.Took.Seconds())
		}
	}
	t.Logf("phases (host clock): VIP deleted in maintenance %s, maintenance off %s, poweroff %s",
		vipGone.UTC().Format("15:04:05.0"), maintOff.UTC().Format("15:04:05.0"), off.UTC().Format("15:04:05.0"))
}

// clientWrites waits until the workload on dir writes again (its file
// grows), e.g. after an outage made on purpose.
func clientWrites(t testing.TB, ctx context.Context, client *qemu.VM, dir string) {
	t.Helper()
	size := func() string {
		res, _ := run(ctx, client, "busybox", "sh", "-c", "busybox stat -c %s "+dir+"/w/workload-*.dat")
		return strings.TrimSpace(string(res.Stdout))
	}
	first := size()
	deadline := time.Now().Add(3 * time.Minute)
	for size() == first {
		if time.Now().After(deadline) {
			t.Fatalf("the client's writes to %s did not resume", dir)
		}
		sleepCtx(ctx, time.Second)
	}
}

// heartbeatPayload returns the UDP payload of an IPv4 frame from src to
// dst:port, if f is one.
func heartbeatPayload(f []byte, src, dst netip.Addr, port uint16) ([]byte, bool) {
	from, to, p, ok := udpOf(f)
	if !ok || from.Addr() != src || to.Addr() != dst || to.Port() != port {
		return nil, false
	}
	return p, true
}

// udpOf takes an IPv4/UDP frame apart: its addresses, ports and payload
// (to the end of the frame).
func udpOf(f []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	if len(f) < 14+20+8 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return src, dst, nil, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != 17 || ihl < 20 || len(ip) < ihl+8 {
		return src, dst, nil, false
	}
	udp := ip[ihl:]
	src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(udp[0:2]))
	dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(udp[2:4]))
	return src, dst, udp[8:], true
}

// forge copies frame with the byte at off set to val and the UDP
// checksum cleared (none, which IPv4 allows), so the packet reaches the
// heartbeat code and only its MAC can expose it.
func forge(frame []byte, off int, val byte) []byte {
	g := append([]byte(nil), frame...)
	g[off] = val
	ihl := int(g[14]&0x0f) * 4
	binary.BigEndian.PutUint16(g[14+ihl+6:], 0)
	return g
}

// reflectFrame turns a copy of an IPv4/UDP frame back to its sender:
// Ethernet and IP addresses and UDP ports swapped, checksums computed
// again (a swap leaves them right anyway: the sums do not depend on the
// order, but the copy must not rely on that).
func reflectFrame(frame []byte) []byte {
	g := append([]byte(nil), frame...)
	var mac [6]byte
	copy(mac[:], g[0:6])
	copy(g[0:6], g[6:12])
	copy(g[6:12], mac[:])
	ip := g[14:]
	ihl := int(ip[0]&0x0f) * 4
	var addr [4]byte
	copy(addr[:], ip[12:16])
	copy(ip[12:16], ip[16:20])
	copy(ip[16:20], addr[:])
	udp := ip[ihl:]
	udp[0], udp[1], udp[2], udp[3] = udp[2], udp[3], udp[0], udp[1]
	fixChecksums(g)
	return g
}

// fixChecksums sets the IPv4 header and UDP checksums of frame.
func fixChecksums(frame []byte) {
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], inetSum(ip[:ihl]))
	udp := ip[ihl:min(int(binary.BigEndian.Uint16(ip[2:4])), len(ip))]
	udp[6], udp[7] = 0, 0
	pseudo := append(append([]byte(nil), ip[12:20]...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	sum := inetSum(append(pseudo, udp...))
	if sum == 0 {
		sum = 0xffff // 0 means "no checksum"
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
}
