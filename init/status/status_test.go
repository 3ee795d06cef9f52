package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
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
				Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
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
	if want := []string{OpSwitchover, OpPoweroff, OpReboot, OpSwitchover}; !reflect.DeepEqual(h.ops, want) {
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
		"restarts=2",
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
