package drbd

import "slices"

// Role, ConnState and DiskState are DRBD's words as drbdsetup prints
// them. They are strings underneath so that State reads the same in logs
// and status, and so that a word a newer DRBD adds survives verbatim
// (Known tells it apart). The tracker in events.go is the only place
// that turns DRBD's text into them; "" means DRBD has not said.

// Role is a node's role in the resource.
type Role string

// DRBD roles (8.4 and 9).
const (
	Primary   Role = "Primary"
	Secondary Role = "Secondary"
	// Unknown is the peer's role while it is not connected.
	Unknown Role = "Unknown"
)

// Roles lists every role.
var Roles = []Role{Primary, Secondary, Unknown}

// Known reports whether r is one of Roles.
func (r Role) Known() bool { return slices.Contains(Roles, r) }

func parseRole(s string) Role { return Role(s) }

// ConnState is the state of the connection to the peer, in events2's
// words. DRBD 8.4 mixes handshake and resync into one connection state;
// parseConnState folds its handshake words into these, and the tracker
// moves its resync words (SyncSource, ...) to State.Replication.
type ConnState string

// DRBD connection states (9's, which events2 prints for 8.4 too).
const (
	StandAlone     ConnState = "StandAlone"
	Disconnecting  ConnState = "Disconnecting"
	Unconnected    ConnState = "Unconnected"
	Timeout        ConnState = "Timeout"
	BrokenPipe     ConnState = "BrokenPipe"
	NetworkFailure ConnState = "NetworkFailure"
	ProtocolError  ConnState = "ProtocolError"
	TearDown       ConnState = "TearDown"
	Connecting     ConnState = "Connecting"
	Connected      ConnState = "Connected"
)

// DRBD 8.4's handshake states, as /proc/drbd and the legacy events stream
// print them; parseConnState turns them into Connecting and Connected, so
// State never holds them.
const (
	WFConnection   ConnState = "WFConnection"
	WFReportParams ConnState = "WFReportParams"
)

// ConnStates lists every state State.Connection may hold.
var ConnStates = []ConnState{StandAlone, Disconnecting, Unconnected, Timeout, BrokenPipe, NetworkFailure,
	ProtocolError, TearDown, Connecting, Connected}

// Known reports whether c is one of ConnStates.
func (c ConnState) Known() bool { return slices.Contains(ConnStates, c) }

// parseConnState reads a connection state in either dialect; ok is false
// for a word that is not a connection state (8.4's resync states, or one
// this code does not know).
func parseConnState(s string) (c ConnState, ok bool) {
	switch c = ConnState(s); c {
	case WFConnection:
		return Connecting, true
	case WFReportParams:
		return Connected, true
	}
	return c, c.Known()
}

// DiskState is the state of a node's backing disk.
type DiskState string

// DRBD disk states (8.4 and 9; Detaching is 9's).
const (
	Diskless     DiskState = "Diskless"
	Attaching    DiskState = "Attaching"
	Detaching    DiskState = "Detaching"
	Failed       DiskState = "Failed"
	Negotiating  DiskState = "Negotiating"
	Inconsistent DiskState = "Inconsistent"
	Outdated     DiskState = "Outdated"
	DUnknown     DiskState = "DUnknown"
	Consistent   DiskState = "Consistent"
	UpToDate     DiskState = "UpToDate"
)

// DiskStates lists every disk state, for tables and tests.
var DiskStates = []DiskState{Diskless, Attaching, Detaching, Failed, Negotiating, Inconsistent, Outdated, DUnknown, Consistent, UpToDate}

// Known reports whether d is one of DiskStates.
func (d DiskState) Known() bool { return slices.Contains(DiskStates, d) }

func parseDiskState(s string) DiskState { return DiskState(s) }

// OrUnknown is d, or DUnknown when DRBD has not said or said a word
// this code does not know: the HA rules reason about known states only.
func (d DiskState) OrUnknown() DiskState {
	if d.Known() {
		return d
	}
	return DUnknown
}
