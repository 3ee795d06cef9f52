package drbd

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"tandem.dev/tandem/services"
)

// Sentinel errors a drbdadm/drbdsetup/drbdmeta failure maps to. Callers
// test them with errors.Is; the services.Error around them carries the
// Kind the supervisor acts on.
var (
	ErrNoModule        = errors.New("drbd kernel module not available")
	ErrConfig          = errors.New("drbd configuration rejected")
	ErrUnknownResource = errors.New("resource not configured in the kernel")
	ErrNoBackingDisk   = errors.New("cannot open the backing device")
	ErrDiskBusy        = errors.New("backing device is claimed by someone else")
	ErrNoMetadata      = errors.New("no DRBD metadata on the backing device")
	ErrUncleanMetadata = errors.New("metadata has an unapplied activity log")
	ErrAddrInUse       = errors.New("replication address or port already in use")
	ErrAddrMissing     = errors.New("replication address not configured on this host")
	ErrCrypto          = errors.New("cram-hmac-alg not available in the kernel")
	ErrNoUpToDateDisk  = errors.New("no access to UpToDate data")
	ErrPeerNotOutdated = errors.New("peer is not outdated (fencing refused promotion)")
	ErrTwoPrimaries    = errors.New("peer is primary")
	ErrHeldOpen        = errors.New("device is held open (stack above still running)")
	ErrNotCurrentData  = errors.New("local data is not the newest (attach refused)")
	ErrTransient       = errors.New("transient DRBD state, retry")
	ErrUnsupported     = errors.New("kernel does not support this request")
	ErrTool            = errors.New("drbd tool failed")
)

// stateChange maps DRBD's state-change codes ("State change failed: (-2)
// Need access to UpToDate data"), identical in 8.4 and 9.
var stateChange = map[int]struct {
	err  error
	kind services.Kind
}{
	-1:  {ErrTwoPrimaries, services.Refused},
	-2:  {ErrNoUpToDateDisk, services.Refused},
	-7:  {ErrPeerNotOutdated, services.Refused},
	-10: {ErrTwoPrimaries, services.Refused}, // refused by peer
	-11: {ErrNoBackingDisk, services.Failed}, // diskless
	-12: {ErrHeldOpen, services.Failed},
	-17: {ErrNoUpToDateDisk, services.Refused},
	-18: {ErrTransient, services.Failed},
	-19: {ErrTransient, services.Failed},
}

var stateChangeRE = regexp.MustCompile(`State change failed: \((-?\d+)\)`)

// rules match stderr text (drbdsetup's error_messages, drbdmeta and
// drbdadm); the first match wins, so specific lines come first.
var rules = []struct {
	substr string
	err    error
	kind   services.Kind
}{
	{"Could not connect to 'drbd' generic netlink family", ErrNoModule, services.Missing},
	{"Failed to modprobe drbd", ErrNoModule, services.Missing},
	{"No valid meta data found", ErrNoMetadata, services.Failed},
	{"No valid meta-data signature found", ErrNoMetadata, services.Failed},
	{"Found meta data is \"unclean\"", ErrUncleanMetadata, services.Failed},
	{"Unclean meta-data found", ErrUncleanMetadata, services.Failed},
	{"Lower device is already claimed", ErrDiskBusy, services.Failed},
	{"Lower device already in use", ErrDiskBusy, services.Failed},
	{"Can not open backing device", ErrNoBackingDisk, services.Missing},
	{"Open of lower device failed", ErrNoBackingDisk, services.Missing},
	{"Can not open device", ErrNoBackingDisk, services.Missing},
	{"is not a block device", ErrNoBackingDisk, services.Missing},
	{"Local address(port) already in use", ErrAddrInUse, services.Failed},
	{"Remote address(port) already in use", ErrAddrInUse, services.Failed},
	{"cram-hmac-alg' you specified is not known", ErrCrypto, services.Config},
	{"Can only attach to the data we lost last", ErrNotCurrentData, services.Refused},
	{"Kernel does not know how to handle your request", ErrUnsupported, services.Failed},
	{"Unknown resource", ErrUnknownResource, services.Failed},
	{"No such resource", ErrUnknownResource, services.Failed},
	{"Device minor not allocated", ErrUnknownResource, services.Failed},
	{"not defined in your config", ErrConfig, services.Config},
	{"is not mentioned with an 'on' keyword", ErrConfig, services.Config},
	{"no normal resources defined for this host", ErrConfig, services.Config},
	{"not found on this host", ErrAddrMissing, services.Failed}, // the bond is not up (yet)
	{"no resources defined", ErrConfig, services.Config},
	{"parse error", ErrConfig, services.Config},
	{"Parse error", ErrConfig, services.Config},
	{"missing statement", ErrConfig, services.Config},
	{"not known on this host", ErrConfig, services.Config},
	{"Missing statement", ErrConfig, services.Config},
}

// classify turns a failed tool run into a *services.Error. It returns nil
// when the run succeeded.
func classify(op string, r result, cmd string) error {
	if r.Err == nil {
		return nil
	}
	text := strings.TrimSpace(r.Stderr)
	if text == "" {
		text = strings.TrimSpace(r.Stdout)
	}
	if r.Exit < 0 {
		kind := services.KindOf(r.Err)
		return &services.Error{Resource: Name, Op: op, Kind: kind, Err: fmt.Errorf("%s: %w", cmd, r.Err)}
	}
	detail := fmt.Errorf("%s: exit %d: %s", cmd, r.Exit, firstLines(text, 4))
	if m := stateChangeRE.FindStringSubmatch(text); m != nil {
		code, _ := strconv.Atoi(m[1])
		if sc, ok := stateChange[code]; ok {
			return &services.Error{Resource: Name, Op: op, Kind: sc.kind, Err: fmt.Errorf("%w: %w", sc.err, detail)}
		}
	}
	all := text + "\n" + r.Stdout
	for _, rule := range rules {
		if strings.Contains(all, rule.substr) {
			return &services.Error{Resource: Name, Op: op, Kind: rule.kind, Err: fmt.Errorf("%w: %w", rule.err, detail)}
		}
	}
	return &services.Error{Resource: Name, Op: op, Kind: services.Failed, Err: fmt.Errorf("%w: %w", ErrTool, detail)}
}

// firstLines keeps an error message readable on the console.
func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, " | ")
}
