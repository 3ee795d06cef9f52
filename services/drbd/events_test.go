package drbd

import (
	"strings"
	"testing"
	"time"
)

// Captured-format samples. The 8.4 lines follow drbdsetup-84's
// print_notifications (drbd-utils user/v84/drbdsetup.c): peer-node-id:0
// and conn-name:peer are faked, there is no "done:".
const events84Initial = `exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary congested:no
exists device name:r0 volume:0 minor:0 disk:UpToDate read:0 written:0
exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 replication:Established peer-disk:UpToDate resync-suspended:no received:0 sent:0
exists resource name:other role:Primary suspended:no
exists -
`

func feedAll(t *tracker, text string) {
	for _, l := range strings.Split(text, "\n") {
		t.feed(l, time.Unix(0, 0))
	}
}

func TestTrackerEvents2(t *testing.T) {
	cases := []struct {
		name  string
		size  uint64
		lines string
		want  State
		sync  bool
	}{
		{"8.4 initial dump", 0, events84Initial, State{Configured: true, Role: "Secondary", PeerRole: "Secondary", Connection: "Connected",
			Replication: "Established", Disk: "UpToDate", PeerDisk: "UpToDate", Suspended: "no", SyncPercent: 100}, true},
		{"8.4 dump not finished", 0, strings.TrimSuffix(events84Initial, "exists -\n"), State{Configured: true, Role: "Secondary", PeerRole: "Secondary", Connection: "Connected",
			Replication: "Established", Disk: "UpToDate", PeerDisk: "UpToDate", Suspended: "no", SyncPercent: 100}, false},
		{"8.4 resync as source, progress from out-of-sync and size", 1 << 20, events84Initial + `change resource name:r0 role:Primary
change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 replication:SyncSource peer-disk:Inconsistent
change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 received:0 sent:262144 out-of-sync:262144
`, State{Configured: true, Role: "Primary", PeerRole: "Secondary", Connection: "Connected", Replication: "SyncSource",
			Disk: "UpToDate", PeerDisk: "Inconsistent", Suspended: "no", SyncPercent: 75, OutOfSyncKiB: 262144}, true},
		{"8.4 peer lost", 0, events84Initial + `change resource name:r0 role:Primary
change connection name:r0 peer-node-id:0 conn-name:peer connection:Connecting role:Unknown
change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 replication:Off peer-disk:DUnknown
- skipped 2
change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 peer-disk:Outdated
`, State{Configured: true, Role: "Primary", PeerRole: "Unknown", Connection: "Connecting", Replication: "Off",
			Disk: "UpToDate", PeerDisk: "Outdated", Suspended: "no"}, true},
		{"resource destroyed (drbdadm down)", 0, events84Initial + "destroy peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0\ndestroy device name:r0 volume:0 minor:0\ndestroy connection name:r0 peer-node-id:0 conn-name:peer\ndestroy resource name:r0\n",
			State{}, true},
		{"timestamps and DRBD 9 done:", 0, `2024-05-01T10:00:00.123456+02:00 exists resource name:r0 role:Secondary suspended:no force-io-failures:no may_promote:no promotion_score:0
2024-05-01T10:00:00.123456+02:00 exists connection name:r0 peer-node-id:1 conn-name:head-b connection:Connected role:Primary
2024-05-01T10:00:00.123456+02:00 exists device name:r0 volume:0 minor:0 backing_dev:/dev/md/tandem disk:Inconsistent client:no quorum:yes
2024-05-01T10:00:00.123456+02:00 exists peer-device name:r0 peer-node-id:1 conn-name:head-b volume:0 replication:SyncTarget peer-disk:UpToDate peer-client:no resync-suspended:no done:45.12
2024-05-01T10:00:00.123456+02:00 exists path name:r0 peer-node-id:1 conn-name:head-b local:ipv4:10.10.0.11:7789 peer:ipv4:10.10.0.12:7789 established:yes
2024-05-01T10:00:00.123456+02:00 exists -
`, State{Configured: true, Role: "Secondary", PeerRole: "Primary", Connection: "Connected", Replication: "SyncTarget",
			Disk: "Inconsistent", PeerDisk: "UpToDate", Suspended: "no", SyncPercent: 45.12}, true},
		{"helper calls are ignored", 0, events84Initial + "call helper name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 helper:fence-peer\nresponse helper name:r0 peer-node-id:0 conn-name:peer volume:0 minor:0 helper:fence-peer status:4\n",
			State{Configured: true, Role: "Secondary", PeerRole: "Secondary", Connection: "Connected",
				Replication: "Established", Disk: "UpToDate", PeerDisk: "UpToDate", Suspended: "no", SyncPercent: 100}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker("r0", 0, func() uint64 { return tc.size })
			feedAll(tr, tc.lines)
			got := tr.st
			got.Updated = time.Time{}
			if got != tc.want {
				t.Errorf("state\n got %+v\nwant %+v", got, tc.want)
			}
			if tr.synced != tc.sync {
				t.Errorf("synced = %v", tr.synced)
			}
		})
	}
}

func TestTrackerLegacyEvents(t *testing.T) {
	tr := newTracker("r0", 0, nil)
	feedAll(tr, `1 ST 0,r0[0] { cs:WFConnection ro:Secondary/Unknown ds:UpToDate/DUnknown r--- }
1 ST 1,other[0] { cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate r--- }
2 ST-prev 0,r0[0] { cs:WFConnection ro:Secondary/Unknown ds:UpToDate/DUnknown r--- }
2 ST-new 0,r0[0] { cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent r--- }
2 ST 0,r0[0] { cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent r--- }
3 SP 0,r0[0] 45.3
4 UH 0,r0[0] fence-peer
`)
	want := State{Configured: true, Role: "Primary", PeerRole: "Secondary", Connection: "Connected", Replication: "SyncSource",
		Disk: "UpToDate", PeerDisk: "Inconsistent", Suspended: "no", SyncPercent: 45.3}
	got := tr.st
	got.Updated = time.Time{}
	if got != want || !tr.synced {
		t.Errorf("got %+v (synced %v)\nwant %+v", got, tr.synced, want)
	}
	feedAll(tr, "5 ST 0,r0[0] { cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown s--- }\n")
	if tr.st.Connection != "Connecting" || tr.st.Replication != "Off" || tr.st.Suspended != "yes" {
		t.Errorf("after link loss: %+v", tr.st)
	}
}

func TestTrackerProcDRBD(t *testing.T) {
	tr := newTracker("r0", 1, nil)
	feedAll(tr, `version: 8.4.11 (api:1/proto:86-101)
srcversion: 19D914EA50F713FCCE48607 

 0: cs:Connected ro:Secondary/Secondary ds:UpToDate/UpToDate C r-----
    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
 1: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----
    ns:0 nr:1048576 dw:1048576 dr:0 al:8 bm:0 lo:0 pe:1 ua:0 ap:0 ep:1 wo:f oos:2097152
	[=====>..............] sync'ed: 33.4% (2048/3072)M
	finish: 0:00:41 speed: 25,000 (25,000) K/sec
`)
	want := State{Configured: true, Role: "Secondary", PeerRole: "Primary", Connection: "Connected", Replication: "SyncTarget",
		Disk: "Inconsistent", PeerDisk: "UpToDate", Suspended: "no", SyncPercent: 33.4}
	got := tr.st
	got.Updated = time.Time{}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// An unconfigured minor reads as not configured.
	tr = newTracker("r0", 0, nil)
	feedAll(tr, " 0: cs:Unconfigured\n")
	if tr.st.Configured {
		t.Errorf("unconfigured minor: %+v", tr.st)
	}
}
