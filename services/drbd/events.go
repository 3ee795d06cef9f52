package drbd

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// State is the resource as DRBD last reported it.
type State struct {
	Configured  bool // the kernel knows the resource
	Role        Role
	PeerRole    Role
	Connection  ConnState // events2 naming, whatever the dialect
	Replication string    // Established, SyncSource, SyncTarget, ...; "" if unknown
	Disk        DiskState
	PeerDisk    DiskState
	Suspended   string // "no" or why I/O is frozen
	// SyncPercent is the resync progress while Replication is Sync*/
	// PausedSync*, 100 when both disks are UpToDate, else 0.
	SyncPercent  float64
	OutOfSyncKiB uint64
	Updated      time.Time
}

// FrozenByFencing: DRBD holds this node's I/O, as resource-and-stonith
// fencing does when a primary loses its peer.
func (s State) FrozenByFencing() bool { return s.Suspended != "" && s.Suspended != "no" }

// String is the state in one line: "Primary/Secondary Connected UpToDate/UpToDate".
func (s State) String() string {
	if !s.Configured {
		return "not configured"
	}
	out := fmt.Sprintf("%s/%s %s %s/%s", dash(s.Role), dash(s.PeerRole), dash(s.Connection), dash(s.Disk), dash(s.PeerDisk))
	if s.Syncing() {
		out += fmt.Sprintf(" %s %.1f%%", s.Replication, s.SyncPercent)
	}
	if s.Suspended != "" && s.Suspended != "no" {
		out += " suspended:" + s.Suspended
	}
	return out
}

func dash[T ~string](v T) string {
	if v == "" {
		return "-"
	}
	return string(v)
}

// Syncing reports whether a resync runs (or is paused) on this device.
func (s State) Syncing() bool {
	return strings.HasPrefix(s.Replication, "Sync") || strings.HasPrefix(s.Replication, "PausedSync") ||
		strings.HasPrefix(s.Replication, "StartingSync") || strings.HasPrefix(s.Replication, "WFBitMap") ||
		strings.HasPrefix(s.Replication, "WFSync")
}

// tracker folds DRBD's event lines into a State. It understands three
// dialects, because which one we get depends on the kernel module:
//
//   - events2 (drbdsetup 9 against DRBD 9, and drbdsetup-84 against a
//     8.4 module that has DRBD_ADM_GET_INITIAL_STATE, as the mainline 8.4.11
//     module does): "exists|create|change|destroy <object> key:value ...",
//     the initial dump ending in "exists -". drbdsetup (9) execs
//     /lib/drbd/drbdsetup-84 when /proc/drbd says 8.4; that one fakes
//     peer-node-id:0 and conn-name:peer and prints no "done:", so the
//     resync percentage comes from out-of-sync and the device size.
//   - legacy "drbdsetup events" of 8.x modules without events2:
//     "<seq> ST <minor>,<res>[<vol>] { cs:.. ro:../.. ds:../.. r--- }" and
//     "<seq> SP <minor>,<res>[<vol>] 45.3".
//   - /proc/drbd of 8.4 (same cs:/ro:/ds: tokens, "sync'ed: 45.3%"), the
//     one-shot fallback when neither stream is available.
type tracker struct {
	resource string
	minor    int
	procMine bool          // the last /proc/drbd device line was ours
	sizeKiB  func() uint64 // device size, for 8.4's progress; may be nil
	st       State
	synced   bool // the initial dump is complete
}

func newTracker(resource string, minor int, sizeKiB func() uint64) *tracker {
	return &tracker{resource: resource, minor: minor, sizeKiB: sizeKiB}
}

// feed applies one line; it reports whether the line changed anything.
func (t *tracker) feed(line string, now time.Time) bool {
	line = strings.TrimSpace(line)
	if line == "" {
		return false
	}
	f := strings.Fields(line)
	// events2 --timestamps prefixes an ISO 8601 time.
	if len(f) > 1 && len(f[0]) > 10 && f[0][4] == '-' && strings.Contains(f[0], "T") {
		f = f[1:]
	}
	var changed bool
	switch {
	case f[0] == "exists" || f[0] == "create" || f[0] == "change" || f[0] == "destroy" ||
		f[0] == "call" || f[0] == "response":
		changed = t.events2(f)
	case len(f) >= 3 && (f[1] == "ST" || f[1] == "SP") && isDigits(f[0]):
		changed = t.legacy(f)
	case strings.HasSuffix(f[0], ":") && isDigits(strings.TrimSuffix(f[0], ":")):
		// /proc/drbd names devices by minor only.
		t.procMine = f[0] == strconv.Itoa(t.minor)+":"
		if !t.procMine {
			return false
		}
		t.synced = true
		changed = t.tokens(f[1:])
	case strings.Contains(line, "sync'ed:") && t.procMine:
		changed = t.procSync(line)
	default:
		return false // "- skipped N", version banners, helper chatter
	}
	if changed {
		t.st.Updated = now
	}
	return changed
}

func isDigits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func kv(f []string) map[string]string {
	m := make(map[string]string, len(f))
	for _, x := range f {
		if k, v, ok := strings.Cut(x, ":"); ok {
			m[k] = v
		}
	}
	return m
}

func (t *tracker) events2(f []string) bool {
	if len(f) < 2 {
		return false
	}
	action, object := f[0], f[1]
	if object == "-" { // end of the initial dump
		t.synced = true
		return action == "exists"
	}
	m := kv(f[2:])
	if m["name"] != t.resource {
		return false
	}
	s := &t.st
	destroy := action == "destroy"
	switch object {
	case "resource":
		if destroy {
			t.st = State{}
			return true
		}
		s.Configured = true
		set(&s.Role, m, "role", parseRole)
		set(&s.Suspended, m, "suspended", verbatim)
	case "device":
		s.Configured = true
		if destroy {
			s.Disk = Diskless
			return true
		}
		set(&s.Disk, m, "disk", parseDiskState)
	case "connection":
		if destroy {
			s.Connection, s.PeerRole, s.Replication, s.PeerDisk = StandAlone, Unknown, "", DUnknown
			return true
		}
		set(&s.Connection, m, "connection", connState)
		set(&s.PeerRole, m, "role", parseRole)
	case "peer-device":
		if destroy {
			s.Replication, s.PeerDisk = "", DUnknown
			return true
		}
		set(&s.Replication, m, "replication", verbatim)
		set(&s.PeerDisk, m, "peer-disk", parseDiskState)
		if v, ok := m["out-of-sync"]; ok {
			s.OutOfSyncKiB, _ = strconv.ParseUint(v, 10, 64)
		} else if _, stats := m["received"]; stats {
			s.OutOfSyncKiB = 0 // --statistics omits a zero out-of-sync
		}
		if v, ok := m["done"]; ok { // DRBD 9 utils print it while syncing
			s.SyncPercent, _ = strconv.ParseFloat(v, 64)
			t.fixPercent(true)
			return true
		}
	default:
		return false // path, helper calls: nothing we track
	}
	t.fixPercent(false)
	return true
}

// set parses m[key] into dst if the line has the key.
func set[T any](dst *T, m map[string]string, key string, parse func(string) T) {
	if v, ok := m[key]; ok {
		*dst = parse(v)
	}
}

func verbatim(v string) string { return v }

// connState is parseConnState for events2, which prints only connection
// states there.
func connState(v string) ConnState {
	c, _ := parseConnState(v)
	return c
}

// fixPercent keeps SyncPercent meaningful whatever the dialect said.
func (t *tracker) fixPercent(fromDone bool) {
	s := &t.st
	switch {
	case s.Disk == UpToDate && s.PeerDisk == UpToDate:
		s.SyncPercent = 100
	case !s.Syncing():
		s.SyncPercent = 0
	case fromDone:
	case t.sizeKiB != nil:
		if size := t.sizeKiB(); size > 0 && s.OutOfSyncKiB <= size {
			s.SyncPercent = 100 * (1 - float64(s.OutOfSyncKiB)/float64(size))
		}
	}
}

func (t *tracker) legacy(f []string) bool {
	res, ok := legacyResource(f[2])
	if !ok || res != t.resource {
		return false
	}
	if f[1] == "SP" {
		if len(f) < 4 {
			return false
		}
		p, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			return false
		}
		t.st.SyncPercent = p
		return true
	}
	t.synced = true // 8.x prints the current state first
	return t.tokens(f[3:])
}

// legacyResource takes "0,r0[0]" to "r0".
func legacyResource(s string) (string, bool) {
	_, rest, ok := strings.Cut(s, ",")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, "[")
	return name, true
}

// tokens reads cs:/ro:/ds: as /proc/drbd and legacy events print them.
func (t *tracker) tokens(f []string) bool {
	m := kv(f)
	s := &t.st
	cs, ok := m["cs"]
	if !ok {
		return false
	}
	if cs == "Unconfigured" {
		t.st = State{}
		return true
	}
	s.Configured = true
	// 8.x's cs: is the connection state until the link is up, then the
	// replication state (SyncSource, ...).
	switch c, ok := parseConnState(cs); {
	case ok && c == Connected:
		s.Connection, s.Replication = Connected, "Established"
	case ok && c == Connecting:
		s.Connection, s.Replication = Connecting, "Off"
	case ok:
		s.Connection, s.Replication = c, ""
	default: // a sync state: the link is up
		s.Connection, s.Replication = Connected, cs
	}
	if r, p, ok := strings.Cut(m["ro"], "/"); ok {
		s.Role, s.PeerRole = parseRole(r), parseRole(p)
	}
	if d, p, ok := strings.Cut(m["ds"], "/"); ok {
		s.Disk, s.PeerDisk = parseDiskState(d), parseDiskState(p)
	}
	// "r---" (events) or "r-----" (/proc/drbd): 's' means I/O suspended.
	for _, x := range f {
		if suspRE.MatchString(x) {
			s.Suspended = "no"
			if x[0] == 's' {
				s.Suspended = "yes"
			}
		}
	}
	t.fixPercent(false)
	return true
}

var suspRE = regexp.MustCompile(`^[rs][-a-zA-Z]{3,5}$`)

// procSync reads "[===>....] sync'ed: 45.3% (...)" from /proc/drbd.
func (t *tracker) procSync(line string) bool {
	_, rest, _ := strings.Cut(line, "sync'ed:")
	rest = strings.TrimSpace(rest)
	p, _, _ := strings.Cut(rest, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
	if err != nil {
		return false
	}
	t.st.SyncPercent = v
	return true
}
