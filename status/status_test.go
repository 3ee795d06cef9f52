package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"tandem.dev/tandem/internal/golden"
)

func sample() Status {
	return Status{
		State:    Maintenance,
		Reason:   "site config is invalid, nothing was touched; fix it and reboot:\nTANDEM-CFG/site.toml:7:1: node[0].name: is required\nTANDEM-CFG/site.toml:9:9: vip.address: 10.0.0.11 is node[0]'s address",
		Node:     "head-a",
		Pair:     "lab",
		Version:  "0.1.0+abc",
		Slot:     "a",
		Board:    "qemu-x86_64",
		Config:   "TANDEM-CFG/site.toml",
		UptimeMS: 61234,
		ReadyMS:  5292,
		RSSKiB:   18192,
		Services: []Service{
			{Name: "mgmt", State: "running", Role: "both", Detail: "10.0.0.11/24"},
			{Name: "bond", State: "degraded", Role: "both", Detail: "active eth1; eth1 up, eth2 down", Error: "degraded: bond0 runs on eth1 only", Restarts: 2,
				FailCount: 3, Escalated: true, Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
		Steps: []Step{
			{Name: "state", OK: true, MS: 328},
			{Name: "watchdog", OK: false, Optional: true, MS: 2000, Error: "no watchdog /dev/watchdog0"},
		},
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, st := range []Status{sample(), {State: Starting, Version: "v", Slot: "b"}} {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var got Status
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, st) {
			t.Errorf("round trip changed the status:\n got %+v\nwant %+v", got, st)
		}
	}
	// The wire names are the contract with scripts and the lab.
	b, _ := json.Marshal(sample())
	for _, key := range []string{`"state":"maintenance"`, `"reason":`, `"node":"head-a"`, `"services":[`, `"ready_ms":5292`, `"rss_kib":18192`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}

type fakeHandler struct {
	st  Status
	ops []string
	err error
}

func (f *fakeHandler) Status() Status { return f.st }
func (f *fakeHandler) Shutdown(op string) error {
	f.ops = append(f.ops, op)
	return f.err
}
func (f *fakeHandler) Switchover(context.Context) (string, error) {
	f.ops = append(f.ops, OpSwitchover)
	if f.err != nil {
		return "", f.err
	}
	return "switchover: head-b is active, head-a standby", nil
}

func (f *fakeHandler) Operate(_ context.Context, req Request) (string, error) {
	f.ops = append(f.ops, fmt.Sprintf("%s force=%v", req.Op, req.Force))
	return "mode set", f.err
}

func TestServeAndCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{st: sample()}
	go Serve(l, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	resp, err := Call(ctx, path, OpStatus)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*resp.Status, sample()) {
		t.Errorf("status over the socket differs:\n got %+v", *resp.Status)
	}
	resp, err = Call(ctx, path, OpSwitchover)
	if err != nil || resp.Message != "switchover: head-b is active, head-a standby" {
		t.Fatalf("switchover: %+v, %v", resp, err)
	}
	if _, err := Call(ctx, path, OpPoweroff); err != nil {
		t.Fatal(err)
	}
	if resp, err := Send(ctx, path, Request{Op: OpStandbyOn, Force: true}); err != nil || resp.Message != "mode set" {
		t.Fatalf("standby-on: %+v, %v", resp, err)
	}
	if _, err := Call(ctx, path, OpMaintenanceOff); err != nil {
		t.Fatal(err)
	}
	h.err = errors.New("already shutting down")
	if _, err := Call(ctx, path, OpReboot); err == nil || !strings.Contains(err.Error(), "already shutting down") {
		t.Errorf("reboot: err = %v", err)
	}
	if _, err := Call(ctx, path, "format-everything"); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("unknown op: err = %v", err)
	}
	if _, err := Call(ctx, path, OpSwitchover); err == nil || !strings.Contains(err.Error(), "already shutting down") {
		t.Errorf("refused switchover: err = %v", err)
	}
	if want := []string{OpSwitchover, OpPoweroff, "standby-on force=true", "maintenance-off force=false", OpReboot, OpSwitchover}; !reflect.DeepEqual(h.ops, want) {
		t.Errorf("shutdowns %v, want %v", h.ops, want)
	}
}

func TestFormat(t *testing.T) {
	var b strings.Builder
	st := sample()
	if err := Format(&b, &st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"state    MAINTENANCE",
		"reason   site config is invalid",
		"         TANDEM-CFG/site.toml:7:1: node[0].name: is required",
		"         TANDEM-CFG/site.toml:9:9: vip.address:",
		"node     head-a",
		"version  0.1.0+abc (slot a, board qemu-x86_64)",
		"ready after 5292 ms",
		"mgmt   both  running",
		"bond   both  degraded",
		"restarts=2 fail-count=3 ESCALATED (tandem cleanup bond clears it)",
		"watchdog (optional): no watchdog",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestFormatPair is the view of a healthy pair from the active head,
// with one RAID member gone on the standby.
func TestFormatPair(t *testing.T) {
	peer := Status{State: Ready, Node: "head-b", Role: "standby", Version: "v", Slot: "a",
		RAID: &RAID{Device: "/dev/md/tandem", State: "clean", Health: "[4/3] [UU_U]", Degraded: 1, Disks: 4},
		DRBD: &DRBD{Resource: "r0", Role: "Secondary", PeerRole: "Primary", Connection: "Connected", Disk: "UpToDate", PeerDisk: "UpToDate"},
		Services: []Service{
			{Name: "raid10", State: "degraded", Role: "both"},
			{Name: "drbd", State: "running", Role: "both"},
			{Name: "vip", State: "stopped", Role: "active"},
		}}
	st := Status{State: Ready, Node: "head-a", Pair: "lab", Role: "active", Version: "v", Slot: "a", UptimeMS: 60000,
		RAID: &RAID{Device: "/dev/md/tandem", State: "active", Health: "[4/4] [UUUU]", Disks: 4, Sync: "resync 12.5%"},
		DRBD: &DRBD{Resource: "r0", Role: "Primary", PeerRole: "Secondary", Connection: "Connected", Disk: "UpToDate", PeerDisk: "UpToDate"},
		Services: []Service{
			{Name: "raid10", State: "running", Role: "both", Detail: "md127 raid10 active [4/4] [UUUU]"},
			{Name: "drbd", State: "running", Role: "both", Detail: "Primary/Secondary Connected UpToDate/UpToDate"},
			{Name: "vip", State: "running", Role: "active", Detail: "10.0.0.10/24 on eth0"},
		},
		Peer: &peer}
	var b bytes.Buffer
	if err := Format(&b, &st); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "pair.txt", b.Bytes())

	st.Peer, st.PeerError = nil, "peer 10.10.0.12:7792: connection refused"
	b.Reset()
	if err := Format(&b, &st); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "pair-peer-unreachable.txt", b.Bytes())
}

// TestFormatHA is the new active head right after a takeover: the peer
// silent on both paths, the witness vote held, and the takeover's
// timeline from the peer's last heartbeat to the VIP.
func TestFormatHA(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := Status{State: Ready, Node: "head-b", Pair: "lab", Role: "active", Version: "v", Slot: "a", UptimeMS: 300000,
		PeerError: "peer 10.10.0.11:7792: i/o timeout",
		HA: &HA{
			At: at, Quorum: true, QuorumBy: "witness vote", Mode: "normal", Announce: "active", Epoch: 3,
			Decision: Decision{Action: "none", Reason: "active; peer not seen, witness vote held", Since: at.Add(-2 * time.Second)},
			Timing:   Timing{IntervalMS: 500, DeadTimeMS: 5000, StopBoundMS: 20000, WatchdogMS: 30000, MarginMS: 1000, TakeoverDelayMS: 51500, AddressDelayMS: 51500},
			Heartbeat: Heartbeat{
				Peer: &HeartbeatPeer{Node: "head-a", Role: "active", Disk: "UpToDate", HoldsVote: true, Epoch: 2, Boots: 1, LastHeard: at.Add(-80 * time.Second)},
				Paths: []HeartbeatPath{
					{Name: "replication", Local: "10.10.0.12:7790", Peer: "10.10.0.11:7790", LastHeard: at.Add(-80 * time.Second), Received: 1200, Sent: 1360, Loss: 1, RTTMS: 2.4, LongestGapMS: 1240},
					{Name: "management", Local: "10.0.0.12:7790", Peer: "10.0.0.11:7790", LastHeard: at.Add(-80 * time.Second), Received: 1190, Sent: 1360, SendErrors: 3, Loss: 1},
				},
				Dropped: HeartbeatDrops{Forged: 4, Replayed: 2, Unproven: 1},
			},
			Vote: Vote{Tiebreaker: "witness", Address: "10.0.0.2:7791", Want: true, Held: true, ExpiresInMS: 13400, Holder: "head-b", Last: "granted", LastAt: at.Add(-300 * time.Millisecond)},
			Failovers: []Failover{{Kind: "takeover", Role: "active", Reason: "peer silent for 51.5s with the witness vote held: outdate the peer, then take over",
				Start: at.Add(-80 * time.Second), TotalMS: 72300, OK: true, Steps: []FailoverStep{
					{Name: "detect", StartMS: 0, MS: 5000}, {Name: "vote", StartMS: 5000, MS: 10100}, {Name: "wait", StartMS: 15100, MS: 51500},
					{Name: "fence", StartMS: 66600, MS: 12}, {Name: "promote", StartMS: 66612, MS: 640}, {Name: "lvm", StartMS: 67252, MS: 1020},
					{Name: "mount", StartMS: 68272, MS: 210}, {Name: "nfsd up", StartMS: 68482, MS: 700}, {Name: "VIP up", StartMS: 69182, MS: 70},
				}}},
		},
	}
	var b bytes.Buffer
	if err := Format(&b, &st); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "ha-takeover.txt", b.Bytes())
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back Status
	if err := json.Unmarshal(raw, &back); err != nil || !reflect.DeepEqual(back, st) {
		t.Errorf("the HA view does not survive JSON (%v):\n%s", err, raw)
	}
	for _, key := range []string{`"quorum":true`, `"forged":4`, `"replayed":2`, `"holder":"head-b"`, `"name":"VIP up"`, `"takeover_delay_ms":51500`} {
		if !bytes.Contains(raw, []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	out := b.String()
	for _, want := range []string{"quorum (witness vote)", "SILENT", "forged 4, replayed 2", "vote HELD by this head", "takeover → active", "VIP up"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// Answers the witness client refused (a replay, a reflection) show
	// on the vote's line, as the heartbeat's drops show on theirs.
	st.HA.Vote.Dropped = 7
	b.Reset()
	if err := Format(&b, &st); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !regexp.MustCompile(`witness\s+10\.0\.0\.2:7791: vote HELD by this head.*; 7 answers dropped\n`).MatchString(out) {
		t.Errorf("the witness answers dropped are not shown:\n%s", out)
	}
	st.HA.Vote.Dropped = 0

	// The same view without quorum says so first.
	st.HA.Quorum, st.HA.Vote.Held, st.HA.Vote.Holder = false, false, "head-a"
	b.Reset()
	if err := Format(&b, &st); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "head-b: NO QUORUM") || !strings.Contains(out, "vote held by head-a") {
		t.Errorf("no-quorum view:\n%s", out)
	}
}

// TestFormatLab: a lab image says so; a production one never does.
func TestFormatLab(t *testing.T) {
	for _, lab := range []bool{false, true} {
		st := Status{State: Ready, Node: "head-a", Version: "v", Slot: "a", Lab: lab}
		var b strings.Builder
		if err := Format(&b, &st); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(b.String(), "LAB IMAGE"); got != lab {
			t.Errorf("lab=%v: LAB IMAGE shown=%v:\n%s", lab, got, b.String())
		}
	}
}
