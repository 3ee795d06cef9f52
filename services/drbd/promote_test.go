package drbd

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// A takeover's promotion can race DRBD's own loss of the peer: DRBD
// still says Connected, sends the request to a peer that never answers,
// drops the connection and refuses "peer is not outdated". Once the
// connection is down, a second request lets the fence-peer handler
// decide. While DRBD stays Connected (a live peer that refuses) the
// refusal stands, and so does any other refusal.
func TestPromoteRetriesWhenThePeerDropsMidRequest(t *testing.T) {
	const refused = "0: State change failed: (-7) Refusing to be Primary while peer is not outdated\n"
	dropped := strings.NewReplacer("connection:Connected role:Secondary", "connection:Connecting role:Unknown",
		"replication:Established peer-disk:UpToDate", "replication:Off peer-disk:DUnknown").Replace(events84Initial)
	cases := []struct {
		name      string
		states    []result // events2 --now, in order
		primary   []result
		wantErr   error
		wantCalls int
	}{
		{"peer dropped mid-request: asked again", []result{ok(events84Initial), ok(events84Initial), ok(dropped)},
			[]result{failed(11, refused), ok("")}, nil, 2},
		{"second refusal stands", []result{ok(events84Initial), ok(dropped)},
			[]result{failed(11, refused), failed(11, refused)}, ErrPeerNotOutdated, 2},
		{"still connected: the refusal stands", []result{ok(events84Initial)},
			[]result{failed(11, refused)}, ErrPeerNotOutdated, 1},
		{"already disconnected: the handler has decided", []result{ok(dropped)},
			[]result{failed(11, refused)}, ErrPeerNotOutdated, 1},
		{"another refusal is not retried", []result{ok(events84Initial), ok(dropped)},
			[]result{failed(11, "0: State change failed: (-1) Multiple primaries not allowed by config\n")}, ErrTwoPrimaries, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake().on("drbdsetup events2 --now --statistics r0", tc.states...).on("drbdadm primary r0", tc.primary...)
			r := newTest(t, labConfig(t, "head-b"), f, events84Initial)
			err := r.Promote(context.Background())
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			n := 0
			for _, c := range f.calls {
				if c == "drbdadm primary r0" {
					n++
				}
			}
			if n != tc.wantCalls {
				t.Errorf("drbdadm primary ran %d times, want %d (calls %v)", n, tc.wantCalls, f.calls)
			}
			if r.want() != (err == nil) {
				t.Errorf("wantPrimary = %v after err %v", r.want(), err)
			}
		})
	}
}

// A takeover drops a peer DRBD still counts, and only such a peer: the
// forced disconnect asks nothing of it. Reconnect undoes only that drop.
func TestDropPeer(t *testing.T) {
	dropped := strings.NewReplacer("connection:Connected role:Secondary", "connection:Connecting role:Unknown",
		"replication:Established peer-disk:UpToDate", "replication:Off peer-disk:DUnknown").Replace(events84Initial)
	for _, tc := range []struct {
		name   string
		events string
		want   []string
	}{
		{"still counted: dropped, then listening again", events84Initial, []string{"drbdadm disconnect --force r0", "drbdadm connect r0"}},
		{"already dropped: left alone", dropped, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake().on("drbdsetup events2 --now --statistics r0", ok(tc.events))
			r := newTest(t, labConfig(t, "head-b"), f, tc.events)
			if err := r.DropPeer(context.Background()); err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second finds nothing to undo
				if err := r.Reconnect(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			var adm []string
			for _, c := range f.calls {
				if strings.HasPrefix(c, "drbdadm ") {
					adm = append(adm, c)
				}
			}
			if strings.Join(adm, "; ") != strings.Join(tc.want, "; ") {
				t.Errorf("drbdadm calls %q, want %q", adm, tc.want)
			}
		})
	}
	for conn, counted := range map[ConnState]bool{Connected: true, "SomethingNew": true, Connecting: false, StandAlone: false, NetworkFailure: false, "": false} {
		if peerCounted(conn) != counted {
			t.Errorf("peerCounted(%q) = %v, want %v", conn, !counted, counted)
		}
	}
}
