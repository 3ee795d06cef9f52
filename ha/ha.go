// Package ha holds what the HA supervisor's parts share: the role a head
// announces and the DRBD disk states it reasons about.
//
// The parts, each a library with no wiring of its own:
//
//   - ha/heartbeat: authenticated UDP heartbeats between the two heads over
//     several independent paths (membership: is the peer there, and does it
//     hear us).
//   - ha/witness: the tiebreaker (`tandem witness` on a third host), which
//     leases its one vote to one head at a time, and the client the heads
//     use to ask for it.
//   - ha/decide: the decision logic, a pure state machine: given what the
//     head observes, promote, demote, fence, self-fence or alert.
//
// docs/ha.md describes the design and the timing argument behind "never two
// primaries".
package ha

import "tandem.dev/tandem/services/drbd"

// MinKeyBytes is the shortest pair key the heartbeat and the witness accept;
// it matches site's rule (HMAC-SHA256 wants a key as long as its
// output).
const MinKeyBytes = 32

// MaxNameLen bounds pair and node names on the wire (site allows at
// most 63 characters for both).
const MaxNameLen = 63

// Role is what a head announces to its peer.
type Role string

const (
	// Active: the head runs the active stack (DRBD primary up to the VIP),
	// or is starting or stopping it.
	Active Role = "active"
	// Standby: the head runs RAID10 and DRBD secondary and could take over.
	Standby Role = "standby"
	// None: the head will not take the active role (booting, maintenance,
	// node standby, handing over in a switchover, or failed).
	None Role = "none"
)

// DiskState is DRBD's disk state, as services/drbd parses it; the names
// below let ha/decide read in ha's own terms.
type DiskState = drbd.DiskState

// DRBD disk states (8.4 and 9; Detaching is 9's).
const (
	Diskless     = drbd.Diskless
	Attaching    = drbd.Attaching
	Detaching    = drbd.Detaching
	Failed       = drbd.Failed
	Negotiating  = drbd.Negotiating
	Inconsistent = drbd.Inconsistent
	Outdated     = drbd.Outdated
	DUnknown     = drbd.DUnknown
	Consistent   = drbd.Consistent
	UpToDate     = drbd.UpToDate
)

// DiskStates lists every state, for tables and tests.
var DiskStates = drbd.DiskStates
