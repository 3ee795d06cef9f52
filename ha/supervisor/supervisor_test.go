package supervisor

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"tandem.dev/tandem/ha"
	"tandem.dev/tandem/ha/decide"
	"tandem.dev/tandem/ha/heartbeat"
	"tandem.dev/tandem/services/drbd"
	"tandem.dev/tandem/status"
)

func TestParams(t *testing.T) {
	tests := []struct {
		name                       string
		intervalMS, deadMS, stopMS int
		ping                       string
		watchdog                   time.Duration
		delay, addr                time.Duration
		tb                         decide.Tiebreaker
	}{
		// With the witness, DRBD's fencing protects the data: no wait for
		// the disk, interval + margin for the address.
		{"defaults", 500, 3000, 20000, "", 30 * time.Second, 0, 1500 * time.Millisecond, decide.Witness},
		{"slow interval", 1000, 5000, 8000, "", 30 * time.Second, 0, 2 * time.Second, decide.Witness},
		// A ping target adds the stop bound and the watchdog: 1 + 1 + 20 + 30 s.
		{"ping target", 1000, 3000, 20000, "192.0.2.1", 30 * time.Second, 52 * time.Second, 52 * time.Second, decide.PingTarget},
		{"ping target, short watchdog", 500, 5000, 5000, "192.0.2.1", 6 * time.Second, 12500 * time.Millisecond, 12500 * time.Millisecond, decide.PingTarget},
	}
	for _, tc := range tests {
		sc := testSite(t)
		sc.HA.HeartbeatIntervalMS, sc.HA.DeadTimeMS, sc.HA.StopBoundMS = tc.intervalMS, tc.deadMS, tc.stopMS
		sc.Witness.PingTarget = tc.ping
		p := Params(sc, tc.watchdog)
		if got, addr := p.TakeoverDelay(), p.AddressDelay(); got != tc.delay || addr != tc.addr || p.Tiebreaker != tc.tb || p.WatchdogTimeout != tc.watchdog {
			t.Errorf("%s: takeover delay %v (want %v), address delay %v (want %v), tiebreaker %v, watchdog %v", tc.name, got, tc.delay, addr, tc.addr, p.Tiebreaker, p.WatchdogTimeout)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestEpochFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ha", "epoch")
	if e, err := readEpoch(path); e != 0 || err != nil {
		t.Fatalf("no file: %d, %v; want 0 and no error", e, err)
	}
	for _, e := range []uint64{1, 7, 1 << 40} {
		if err := writeEpoch(path, e); err != nil {
			t.Fatal(err)
		}
		if got, err := readEpoch(path); got != e || err != nil {
			t.Errorf("wrote %d, read %d, %v", e, got, err)
		}
	}
	if err := os.WriteFile(path, []byte("seven\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readEpoch(path); err == nil {
		t.Error("a garbled epoch file reads without error")
	}
}

// A takeover's first steps split the time from the peer's last heartbeat
// to the decision.
func TestDetectTimeline(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s*1000) * time.Millisecond) }
	tests := []struct {
		name                  string
		lost, voted, decided  time.Time
		detect, vote, waiting int64 // ms
	}{
		{"vote after the silence", at(5.2), at(15.1), at(66.6), 5200, 9900, 51500},
		{"vote already held", at(5.2), at(1), at(57), 5200, 0, 51800},
		{"vote before last heard", at(3), at(-10), at(55), 3000, 0, 52000},
		{"decided at once", at(5), at(5), at(5), 5000, 0, 0},
	}
	for _, tc := range tests {
		got := detectTimeline(t0, tc.lost, tc.voted, tc.decided)
		want := []status.FailoverStep{
			{Name: "detect", StartMS: 0, MS: tc.detect},
			{Name: "vote", StartMS: tc.detect, MS: tc.vote},
			{Name: "wait", StartMS: tc.detect + tc.vote, MS: tc.waiting},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, want)
		}
	}
}

func TestStackSteps(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	done := []layerDone{{"drbd-primary", ms(1100), ""}, {"lvm", ms(2100), ""}, {"xfs", ms(2300), ""},
		{"nfs", ms(3000), ""}, {"vip", ms(3070), "vip: no link"}}
	got := stackSteps(t0, ms(1000), done, true)
	want := []status.FailoverStep{
		{Name: "promote", StartMS: 1000, MS: 100}, {Name: "lvm up", StartMS: 1100, MS: 1000}, {Name: "mount", StartMS: 2100, MS: 200},
		{Name: "nfsd up", StartMS: 2300, MS: 700}, {Name: "VIP up", StartMS: 3000, MS: 70, Error: "vip: no link"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("up:\n got %+v\nwant %+v", got, want)
	}
	down := stackSteps(t0, t0, []layerDone{{"vip", ms(30), ""}, {"nfs", ms(250), ""}, {"xfs", ms(300), ""}, {"lvm", ms(520), ""}, {"drbd-primary", ms(640), ""}}, false)
	var names []string
	for _, s := range down {
		names = append(names, s.Name)
	}
	if want := []string{"VIP down", "nfsd down", "unmount", "lvm down", "demote"}; !reflect.DeepEqual(names, want) {
		t.Errorf("down: %v, want %v", names, want)
	}
	if down[4].StartMS != 520 || down[4].MS != 120 {
		t.Errorf("demote step %+v", down[4])
	}
}

// Reasons that only count down are one decision for the log.
func TestCountdownIsOneDecision(t *testing.T) {
	a := countdown.ReplaceAllString("peer silent, witness vote held: waiting 51.49s more for the old active to stop or be reset", "…")
	b := countdown.ReplaceAllString("peer silent, witness vote held: waiting 3.5s more for the old active to stop or be reset", "…")
	c := countdown.ReplaceAllString("peer silent, witness vote held: waiting 1m2.5s more for the old active to stop or be reset", "…")
	if a != b || a != c {
		t.Errorf("%q, %q and %q differ", a, b, c)
	}
}

// At a cold start the head that is not preferred gives the preferred one
// a minute to catch up, and no longer.
func TestHoldForPreferred(t *testing.T) {
	base := decide.Inputs{Local: ha.Standby, Disk: ha.UpToDate, PeerSeen: true, PeerAlive: true, PeerRole: ha.Standby, PeerDisk: ha.Outdated}
	mod := func(f func(*decide.Inputs)) decide.Inputs { in := base; f(&in); return in }
	tests := []struct {
		name string
		in   decide.Inputs
		conn drbd.ConnState
		hold bool
	}{
		{"preferred peer outdated", base, "Connecting", true},
		{"preferred peer resyncing", mod(func(in *decide.Inputs) { in.PeerDisk = ha.Inconsistent }), "Connected", true},
		{"split brain", base, "StandAlone", false},
		{"peer cannot catch up", mod(func(in *decide.Inputs) { in.PeerDisk = ha.Diskless }), "Connected", false},
		{"peer yields", mod(func(in *decide.Inputs) { in.PeerRole = ha.None }), "Connected", false},
		{"this head is preferred", mod(func(in *decide.Inputs) { in.Preferred = true }), "Connected", false},
		{"peer silent", mod(func(in *decide.Inputs) { in.PeerSeen, in.PeerAlive = false, false }), "Connecting", false},
	}
	t0 := time.Now()
	for _, tc := range tests {
		h := &Supervisor{log: slog.New(slog.DiscardHandler), peer: "head-a"}
		h.drbdState.Connection = drbd.ConnState(tc.conn)
		if got := h.holdForPreferred(t0, tc.in); got != tc.hold {
			t.Errorf("%s: hold %v, want %v", tc.name, got, tc.hold)
		}
		if !tc.hold {
			continue
		}
		if !h.holdForPreferred(t0.Add(preferredHold-time.Second), tc.in) {
			t.Errorf("%s: the hold ended early", tc.name)
		}
		if h.holdForPreferred(t0.Add(preferredHold), tc.in) {
			t.Errorf("%s: still holding after %v", tc.name, preferredHold)
		}
	}
}

func TestUntilSilent(t *testing.T) {
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	snap := func(heard, heardUs time.Duration, peer bool) heartbeat.Snapshot {
		s := heartbeat.Snapshot{At: now, DeadTime: heartbeat.Duration(3 * time.Second)}
		if peer {
			s.Peer = &heartbeat.PeerStatus{LastHeard: now.Add(-heard), HeardUs: now.Add(-heardUs)}
		}
		return s
	}
	for _, c := range []struct {
		name string
		s    heartbeat.Snapshot
		want time.Duration
	}{
		{"never heard of", snap(0, 0, false), time.Hour},
		{"just heard", snap(0, 0, true), ms(3001)},
		{"heard 2.5 s ago", snap(ms(2500), ms(100), true), ms(501)},
		{"it stopped echoing us first", snap(ms(100), ms(2900), true), ms(101)},
		{"already silent a dead time", snap(ms(3500), ms(3500), true), time.Hour},
	} {
		if got := untilSilent(c.s); got != c.want {
			t.Errorf("%s: untilSilent = %v, want %v", c.name, got, c.want)
		}
	}
}
