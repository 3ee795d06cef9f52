package drbd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
)

func TestFencePeer(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name    string
		verdict *Verdict
		raw     string // written instead of verdict when set
		ask     func(context.Context) (string, error)
		want    int
		fenced  bool
	}{
		{"no verdict refuses", nil, "", nil, FenceUnknown, false},
		{"peer outdated itself", &Verdict{Peer: "head-b", Says: "outdated", At: now.Add(-time.Second)}, "", nil, FencePeerOutdated, true},
		{"peer dead (witness agrees)", &Verdict{Peer: "head-b", Says: "down", At: now.Add(-10 * time.Second)}, "", nil, FencePeerDown, true},
		{"peer is primary: outdate myself", &Verdict{Peer: "head-b", Says: "primary", At: now}, "", nil, FencePeerPrimary, false},
		{"peer inconsistent", &Verdict{Peer: "head-b", Says: "inconsistent", At: now}, "", nil, FencePeerInconsistent, false},
		{"peer powered off", &Verdict{Peer: "head-b", Says: "stonithed", At: now}, "", nil, FencePeerStonithed, true},
		{"stale verdict refuses", &Verdict{Peer: "head-b", Says: "down", At: now.Add(-2 * VerdictMaxAge)}, "", nil, FenceUnknown, false},
		{"verdict from the future refuses", &Verdict{Peer: "head-b", Says: "down", At: now.Add(time.Hour)}, "", nil, FenceUnknown, false},
		{"garbage refuses", nil, "{not json", nil, FenceUnknown, false},
		// A primary that lost the peer: no takeover verdict, so the supervisor is asked.
		{"supervisor outdated the peer at the witness", nil, "", askSays("outdated", nil), FencePeerOutdated, true},
		{"supervisor cannot: I/O stays frozen", nil, "", askSays("", errors.New("no witness vote")), FenceUnknown, false},
		{"supervisor answers nonsense", nil, "", askSays("fine", nil), FenceUnknown, false},
		{"stale verdict: the supervisor is asked", &Verdict{Peer: "head-b", Says: "down", At: now.Add(-2 * VerdictMaxAge)}, "", askSays("", errors.New("no")), FenceUnknown, false},
		{"fresh takeover verdict wins over asking", &Verdict{Peer: "head-b", Says: "down", At: now}, "", askSays("", errors.New("must not be asked")), FencePeerDown, true},
		{"unknown word refuses", nil, `{"peer":"head-b","says":"probably-fine","at":"2025-01-02T03:04:05Z"}`, nil, FenceUnknown, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := Handler{Resource: "r0", RunDir: t.TempDir(), StateDir: t.TempDir(), Now: func() time.Time { return now },
				Getenv: func(k string) string {
					return map[string]string{"DRBD_RESOURCE": "r0", "DRBD_PEER_ADDRESS": "10.10.0.12"}[k]
				},
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Ask: tc.ask}
			switch {
			case tc.raw != "":
				if err := os.WriteFile(VerdictFile(h.RunDir, "r0"), []byte(tc.raw), 0o600); err != nil {
					t.Fatal(err)
				}
			case tc.verdict != nil:
				if err := WriteVerdict(h.RunDir, "r0", *tc.verdict); err != nil {
					t.Fatal(err)
				}
			}
			if got := h.FencePeer(context.Background()); got != tc.want {
				t.Errorf("exit %d, want %d", got, tc.want)
			}
			rec, fenced := PeerFenced(h.StateDir, "r0")
			if fenced != tc.fenced {
				t.Fatalf("fenced = %v", fenced)
			}
			if fenced && (rec.Peer != "head-b" && tc.ask == nil || rec.PeerAddress != "10.10.0.12" || rec.Exit != tc.want) {
				t.Errorf("record %+v", rec)
			}
			if got := h.UnfencePeer(context.Background()); got != 0 {
				t.Errorf("unfence exit %d", got)
			}
			if _, still := PeerFenced(h.StateDir, "r0"); still {
				t.Error("unfence left the record")
			}
		})
	}
	if err := WriteVerdict(t.TempDir(), "r0", Verdict{Says: "whatever"}); err == nil {
		t.Error("unknown verdict written")
	}
}

func askSays(says string, err error) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return says, err }
}

func TestMonitorLiftsFence(t *testing.T) {
	f := newFake().on("drbdsetup events2 --now --statistics r0", ok(events84Initial))
	r := newTest(t, labConfig(t, "head-a"), f, events84Initial)
	if err := os.WriteFile(FenceFile(r.cfg.StateDir, "r0"), []byte(`{"resource":"r0","exit":5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Monitor(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, fenced := PeerFenced(r.cfg.StateDir, "r0"); fenced {
		t.Error("fence not lifted although the peer is connected and UpToDate")
	}
}
