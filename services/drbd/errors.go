package drbd

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/services/tool"
)

// Sentinel errors a drbdadm/drbdsetup/drbdmeta failure maps to. Callers
// test them with errors.Is; those that name a common failure also match
// services' (ErrInUse, ErrNotFound, ErrNoKernel); a failure no rule
// knows is services.ErrToolFailed. The services.Error around them
// carries the Kind the supervisor acts on, from the tables below.
var (
	ErrNoModule        = services.Sentinel("drbd kernel module not available", services.ErrNoKernel)
	ErrConfig          = errors.New("drbd configuration rejected")
	ErrUnknownResource = services.Sentinel("resource not configured in the kernel", services.ErrNotFound)
	ErrNoBackingDisk   = services.Sentinel("cannot open the backing device", services.ErrNotFound)
	ErrDiskBusy        = services.Sentinel("backing device is claimed by someone else", services.ErrInUse)
	ErrNoMetadata      = errors.New("no DRBD metadata on the backing device")
	ErrUncleanMetadata = errors.New("metadata has an unapplied activity log")
	ErrAddrInUse       = services.Sentinel("replication address or port already in use", services.ErrInUse)
	ErrAddrMissing     = services.Sentinel("replication address not configured on this host", services.ErrNotFound)
	ErrCrypto          = errors.New("cram-hmac-alg not available in the kernel")
	ErrNoUpToDateDisk  = errors.New("no access to UpToDate data")
	ErrPeerNotOutdated = errors.New("peer is not outdated (fencing refused promotion)")
	ErrTwoPrimaries    = errors.New("peer is primary")
	ErrHeldOpen        = services.Sentinel("device is held open (stack above still running)", services.ErrInUse)
	ErrNotCurrentData  = errors.New("local data is not the newest (attach refused)")
	ErrTransient       = errors.New("transient DRBD state, retry")
	ErrUnsupported     = errors.New("kernel does not support this request")
)

// fail is the one constructor of this layer's errors; tool failures get
// their Kind from classify's tables, the rest from the caller.
func fail(op string, kind services.Kind, err error) error {
	return &services.Error{Resource: Name, Op: op, Kind: kind, Err: err}
}

func errorf(op string, kind services.Kind, format string, a ...any) error {
	return fail(op, kind, fmt.Errorf(format, a...))
}

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
var rules = tool.Rules{
	{Phrase: "Could not connect to 'drbd' generic netlink family", Err: ErrNoModule, Kind: services.Missing},
	{Phrase: "Failed to modprobe drbd", Err: ErrNoModule, Kind: services.Missing},
	{Phrase: "No valid meta data found", Err: ErrNoMetadata, Kind: services.Failed},
	{Phrase: "No valid meta-data signature found", Err: ErrNoMetadata, Kind: services.Failed},
	{Phrase: "Found meta data is \"unclean\"", Err: ErrUncleanMetadata, Kind: services.Failed},
	{Phrase: "Unclean meta-data found", Err: ErrUncleanMetadata, Kind: services.Failed},
	{Phrase: "Lower device is already claimed", Err: ErrDiskBusy, Kind: services.Failed},
	{Phrase: "Lower device already in use", Err: ErrDiskBusy, Kind: services.Failed},
	{Phrase: "Can not open backing device", Err: ErrNoBackingDisk, Kind: services.Missing},
	{Phrase: "Open of lower device failed", Err: ErrNoBackingDisk, Kind: services.Missing},
	{Phrase: "Can not open device", Err: ErrNoBackingDisk, Kind: services.Missing},
	{Phrase: "is not a block device", Err: ErrNoBackingDisk, Kind: services.Missing},
	{Phrase: "Local address(port) already in use", Err: ErrAddrInUse, Kind: services.Failed},
	{Phrase: "Remote address(port) already in use", Err: ErrAddrInUse, Kind: services.Failed},
	{Phrase: "cram-hmac-alg' you specified is not known", Err: ErrCrypto, Kind: services.Config},
	{Phrase: "Can only attach to the data we lost last", Err: ErrNotCurrentData, Kind: services.Refused},
	{Phrase: "Kernel does not know how to handle your request", Err: ErrUnsupported, Kind: services.Failed},
	{Phrase: "Unknown resource", Err: ErrUnknownResource, Kind: services.Failed},
	{Phrase: "No such resource", Err: ErrUnknownResource, Kind: services.Failed},
	{Phrase: "Device minor not allocated", Err: ErrUnknownResource, Kind: services.Failed},
	{Phrase: "not defined in your config", Err: ErrConfig, Kind: services.Config},
	{Phrase: "is not mentioned with an 'on' keyword", Err: ErrConfig, Kind: services.Config},
	{Phrase: "no normal resources defined for this host", Err: ErrConfig, Kind: services.Config},
	{Phrase: "not found on this host", Err: ErrAddrMissing, Kind: services.Failed}, // the bond is not up (yet)
	{Phrase: "no resources defined", Err: ErrConfig, Kind: services.Config},
	{Phrase: "parse error", Err: ErrConfig, Kind: services.Config},
	{Phrase: "Parse error", Err: ErrConfig, Kind: services.Config},
	{Phrase: "missing statement", Err: ErrConfig, Kind: services.Config},
	{Phrase: "not known on this host", Err: ErrConfig, Kind: services.Config},
	{Phrase: "Missing statement", Err: ErrConfig, Kind: services.Config},
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
		return fail(op, kind, fmt.Errorf("%s: %w", cmd, r.Err))
	}
	detail := fmt.Errorf("%s: exit %d: %s", cmd, r.Exit, firstLines(text, 4))
	if m := stateChangeRE.FindStringSubmatch(text); m != nil {
		code, _ := strconv.Atoi(m[1])
		if sc, ok := stateChange[code]; ok {
			return fail(op, sc.kind, fmt.Errorf("%w: %w", sc.err, detail))
		}
	}
	return rules.ServiceError(Name, op, text+"\n"+r.Stdout, detail, services.ErrToolFailed)
}

// firstLines keeps an error message readable on the console.
func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, " | ")
}
