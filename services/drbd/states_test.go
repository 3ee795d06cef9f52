package drbd

import (
	"testing"
	"time"
)

func TestParseConnState(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ConnState
		ok   bool
	}{
		{"Connected", Connected, true},
		{"StandAlone", StandAlone, true},
		{"TearDown", TearDown, true},
		{"WFConnection", Connecting, true}, // 8.4's words for the handshake
		{"WFReportParams", Connected, true},
		{"SyncSource", "SyncSource", false}, // 8.4: a replication state
		{"", "", false},
	} {
		if got, ok := parseConnState(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("parseConnState(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestKnown(t *testing.T) {
	for _, tc := range []struct {
		known bool
		got   bool
		what  string
	}{
		{true, Primary.Known(), "Primary"},
		{true, Unknown.Known(), "Unknown"},
		{false, Role("").Known(), "empty role"},
		{false, Role("primary").Known(), "lower-case role"},
		{true, Connecting.Known(), "Connecting"},
		{false, WFConnection.Known(), "8.4's WFConnection (never in State)"},
		{false, ConnState("Established").Known(), "a replication state"},
		{true, Detaching.Known(), "Detaching"},
		{true, DUnknown.Known(), "DUnknown"},
		{false, DiskState("Bogus").Known(), "Bogus"},
	} {
		if tc.got != tc.known {
			t.Errorf("%s: Known() = %v", tc.what, tc.got)
		}
	}
}

// Both dialects give the same typed State, and a word DRBD may add later
// is kept verbatim.
func TestTrackerTypes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"events2", []string{
			"exists resource name:r0 role:Secondary suspended:no",
			"exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connecting role:Unknown",
			"exists device name:r0 volume:0 minor:0 disk:Outdated",
			"exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Off peer-disk:DUnknown",
			"exists -",
		}, "Secondary/Unknown Connecting Outdated/DUnknown"},
		{"legacy", []string{"1 ST 0,r0[0] { cs:WFConnection ro:Secondary/Unknown ds:Outdated/DUnknown r--- }"},
			"Secondary/Unknown Connecting Outdated/DUnknown"},
		{"proc", []string{" 0: cs:WFReportParams ro:Primary/Unknown ds:UpToDate/DUnknown C r-----"},
			"Primary/Unknown Connected UpToDate/DUnknown"},
		{"new word", []string{
			"exists resource name:r0 role:Primary suspended:no",
			"exists device name:r0 volume:0 minor:0 disk:Frobnicated",
			"exists -",
		}, "Primary/- - Frobnicated/-"},
	} {
		tr := newTracker("r0", 0, nil)
		for _, l := range tc.lines {
			tr.feed(l, time.Now())
		}
		if got := tr.st.String(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
