package stack

import (
	"slices"
	"strings"
	"testing"

	"tandem.dev/tandem/board"
	"tandem.dev/tandem/site"
)

func TestBuild(t *testing.T) {
	ipoib, err := board.Load("generic-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		node        string
		edit        func(*site.Config)
		board       *board.Board
		wantActive  string
		wantStandby string
		wantErr     string
	}{
		{name: "lab head", node: "head-a",
			wantActive:  "mgmt bond raid10 drbd drbd-primary lvm xfs nfs vip",
			wantStandby: "mgmt bond raid10 drbd"},
		{name: "no NFS: the VIP follows the filesystem", node: "head-b",
			edit:        func(sc *site.Config) { sc.Services.NFS.Enabled = false },
			wantActive:  "mgmt bond raid10 drbd drbd-primary lvm xfs vip",
			wantStandby: "mgmt bond raid10 drbd"},
		{name: "a node the config does not name", node: "head-c", wantErr: `node "head-c" is not in the site config`},
		{name: "a bond mode IPoIB cannot do", node: "head-a", board: ipoib,
			edit:    func(sc *site.Config) { sc.Nodes[0].Replication.Mode = "balance-rr" },
			wantErr: "balance-rr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := site.Load("../../configs/site.lab.toml")
			if err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(sc)
			}
			st, err := Build(sc, tc.node, Options{Board: tc.board, PairKey: make([]byte, 32)})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			active, standby := st.StartOrder()
			if got := strings.Join(active, " "); got != tc.wantActive {
				t.Errorf("active start order %q, want %q", got, tc.wantActive)
			}
			if got := strings.Join(standby, " "); got != tc.wantStandby {
				t.Errorf("standby start order %q, want %q", got, tc.wantStandby)
			}
			if stop := st.Graph.StopOrder(); stop[0] != "vip" || !slices.Equal(stop, reversed(st.Graph.StartOrder())) {
				t.Errorf("stop order %v is not the start order reversed with the VIP first", stop)
			}
		})
	}
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}
