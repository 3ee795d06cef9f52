package raid

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Status is the array's health, read from sysfs and /proc/mdstat (no
// mdadm call: the monitor must not hang on a stuck tool).
type Status struct {
	Device     string // "/dev/md/tandem" (set by RAID.Status)
	UUID       string // the array's UUID, once Start has seen it (set by RAID.Status)
	Kernel     string // "md127"
	State      string // md/array_state: clean, active, inactive, ...
	Level      string // md/level
	RaidDisks  int    // md/raid_disks
	Degraded   int    // md/degraded: members missing or failed
	SyncAction string // md/sync_action: idle, resync, recover, check, ...
	// Progress is /proc/mdstat's progress line, e.g.
	// "recovery = 12.6% (132096/1046528) finish=0.1min speed=132096K/sec".
	Progress string
	// Health is /proc/mdstat's member map, e.g. "[4/3] [UU_U]".
	Health  string
	Members []MemberState
}

// MemberState is one member device of a running array.
type MemberState struct {
	ID     string // the configured identity, "serial:..." (set by RAID.Status)
	Kernel string // "vdb"
	Slot   string // md/dev-vdb/slot: "0".."n-1", or "none" for a spare
	State  string // md/dev-vdb/state: "in_sync", "faulty", "spare", ...
}

// Serving reports whether the array serves I/O (perhaps degraded).
func (s Status) Serving() bool {
	switch s.State {
	case "clean", "active", "active-idle", "write-pending", "read-auto":
		return true
	}
	return false
}

func (s Status) String() string {
	b := fmt.Sprintf("%s %s %s", s.Kernel, s.Level, s.State)
	if s.Health != "" {
		b += " " + s.Health
	}
	if s.Degraded > 0 {
		b += fmt.Sprintf(" degraded(%d of %d)", s.Degraded, s.RaidDisks)
	}
	if s.SyncAction != "" && s.SyncAction != "idle" {
		b += " " + s.SyncAction
		if s.Progress != "" {
			b += " (" + s.Progress + ")"
		}
	}
	return b
}

// readStatus reads /sys/block/<kernel>/md and the array's /proc/mdstat
// entry.
func readStatus(sysRoot, procRoot, kernel string) (Status, error) {
	md := filepath.Join(sysRoot, "block", kernel, "md")
	st := Status{Kernel: kernel}
	var err error
	if st.State, err = readAttr(md, "array_state"); err != nil {
		return st, err
	}
	st.Level, _ = readAttr(md, "level")
	st.SyncAction, _ = readAttr(md, "sync_action")
	if v, err := readAttr(md, "raid_disks"); err == nil {
		st.RaidDisks, _ = strconv.Atoi(v)
	}
	if v, err := readAttr(md, "degraded"); err == nil {
		st.Degraded, _ = strconv.Atoi(v)
	}
	ents, _ := os.ReadDir(md)
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), "dev-")
		if !ok {
			continue
		}
		m := MemberState{Kernel: name}
		m.Slot, _ = readAttr(md, e.Name()+"/slot")
		m.State, _ = readAttr(md, e.Name()+"/state")
		st.Members = append(st.Members, m)
	}
	slices.SortFunc(st.Members, func(a, b MemberState) int { return strings.Compare(a.Kernel, b.Kernel) })
	if f, err := os.Open(filepath.Join(procRoot, "mdstat")); err == nil {
		defer f.Close()
		st.Health, st.Progress = parseMdstat(bufio.NewScanner(f), kernel)
	}
	return st, nil
}

func readAttr(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

var (
	healthRE   = regexp.MustCompile(`\[\d+/\d+\] \[[U_]+\]`)
	progressRE = regexp.MustCompile(`(resync|recovery|reshape|check|repair)\s*=.*`)
)

// parseMdstat finds kernel's entry in /proc/mdstat:
//
//	md127 : active raid10 vde[3] vdc[1] vdb[0]
//	      2093056 blocks super 1.2 512K chunks 2 near-copies [4/3] [UU_U]
//	      [==>..................]  recovery = 12.6% (132096/1046528) finish=0.1min speed=132096K/sec
func parseMdstat(sc *bufio.Scanner, kernel string) (health, progress string) {
	in := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, kernel+" :"):
			in = true
			continue
		case !in:
			continue
		case strings.TrimSpace(l) == "" || !strings.HasPrefix(l, " "):
			return health, progress
		}
		if m := healthRE.FindString(l); m != "" {
			health = m
		}
		if m := progressRE.FindString(l); m != "" {
			progress = strings.Join(strings.Fields(m), " ")
		}
	}
	return health, progress
}
