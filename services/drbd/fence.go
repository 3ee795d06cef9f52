package drbd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"tandem.dev/tandem/internal/atomicfile"
)

// Fence-peer handler exit codes. DRBD runs the fence-peer handler when a
// primary loses the peer (its I/O frozen meanwhile: resource-and-stonith)
// or a secondary is promoted without it, and acts on the exit code
// (drbd_nl.c, conn_try_outdate_peer); 4, 5 and 7 thaw the frozen I/O:
const (
	// FenceUnknown (any code outside 3-7): "helper broken". DRBD changes
	// no disk state; with the peer's disk still DUnknown, a promotion is
	// refused. Tandem answers this when it cannot prove the peer is
	// outdated or dead: refusing is the fail-safe side.
	FenceUnknown = 1
	// FencePeerInconsistent (3): the peer's disk is Inconsistent or worse.
	FencePeerInconsistent = 3
	// FencePeerOutdated (4): the peer is (now) Outdated; we may be Primary.
	FencePeerOutdated = 4
	// FencePeerDown (5): the peer is unreachable and assumed dead; DRBD
	// marks it Outdated only if our own disk is UpToDate.
	FencePeerDown = 5
	// FencePeerPrimary (6): the peer is Primary; DRBD outdates OUR disk,
	// so this head can never be promoted over a live primary.
	FencePeerPrimary = 6
	// FencePeerStonithed (7): the peer was powered off.
	FencePeerStonithed = 7
)

// Verdict is what the HA supervisor established about the peer before it
// lets DRBD promote this head; the handler, a separate process the kernel
// starts through drbdadm, reads it from RunDir.
type Verdict struct {
	Peer string    `json:"peer"`
	Says string    `json:"says"` // outdated, down, primary, inconsistent, stonithed
	At   time.Time `json:"at"`
}

// VerdictMaxAge bounds how old a verdict may be: a verdict is about one
// takeover, not a standing licence.
const VerdictMaxAge = time.Minute

var verdictCodes = map[string]int{
	"inconsistent": FencePeerInconsistent,
	"outdated":     FencePeerOutdated,
	"down":         FencePeerDown,
	"primary":      FencePeerPrimary,
	"stonithed":    FencePeerStonithed,
}

// FenceRecord is what FencePeer leaves in StateDir: the peer is fenced
// until a resync to it completes (after-resync-target runs UnfencePeer).
type FenceRecord struct {
	Resource    string    `json:"resource"`
	Peer        string    `json:"peer"`
	PeerAddress string    `json:"peer_address,omitempty"`
	Verdict     string    `json:"verdict"`
	Exit        int       `json:"exit"`
	At          time.Time `json:"at"`
}

// Handler holds what the fence-peer and unfence-peer handlers need; the
// tandem CLI builds it with DefaultHandler and exits with the code.
type Handler struct {
	Resource string // fallback when DRBD_RESOURCE is unset
	RunDir   string // verdicts (tmpfs)
	StateDir string // fence records (persistent)
	Getenv   func(string) string
	Now      func() time.Time
	Log      *slog.Logger
	// Ask asks the HA supervisor for a verdict when there is no fresh
	// one on file: a primary that lost the peer. It returns a verdict
	// word (see Verdict.Says) or an error; nil: no supervisor to ask.
	Ask func(ctx context.Context) (string, error)
}

// DefaultHandler is the handler with the image's paths.
func DefaultHandler(log *slog.Logger) Handler {
	if log == nil {
		log = slog.Default()
	}
	return Handler{Resource: "r0", RunDir: DefaultConfDir, StateDir: DefaultStateDir, Getenv: os.Getenv, Now: time.Now, Log: log}
}

func (h Handler) resource() string {
	if r := h.Getenv("DRBD_RESOURCE"); r != "" && nameRE.MatchString(r) {
		return r
	}
	return h.Resource
}

// VerdictFile is where WriteVerdict puts the verdict for resource.
func VerdictFile(runDir, resource string) string {
	return filepath.Join(runDir, resource+".peer-verdict")
}

// FenceFile is where FencePeer records a fenced peer.
func FenceFile(stateDir, resource string) string {
	return filepath.Join(stateDir, resource+".fenced")
}

// WriteVerdict is the supervisor's half: it records what it knows about
// the peer (from the heartbeat paths and the witness) just before it
// promotes this head or when DRBD may lose the link.
func WriteVerdict(runDir, resource string, v Verdict) error {
	if _, ok := verdictCodes[v.Says]; !ok {
		return fmt.Errorf("drbd: unknown verdict %q", v.Says)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(VerdictFile(runDir, resource), b, 0o600)
}

// FencePeer is the fence-peer handler: it answers DRBD from the
// supervisor's fresh verdict, records a fenced peer in StateDir, and
// returns the exit code (see the Fence* constants). Without a fresh
// verdict it returns FenceUnknown, so DRBD will not promote past a peer
// that might still be UpToDate and serving.
func (h Handler) FencePeer(ctx context.Context) int {
	res := h.resource()
	rec := FenceRecord{Resource: res, PeerAddress: h.Getenv("DRBD_PEER_ADDRESS"), At: h.Now().UTC(), Exit: FenceUnknown}
	if err := ctx.Err(); err != nil {
		h.Log.Error("fence-peer: out of time", "resource", res, "err", err)
		return FenceUnknown
	}
	v, err := h.readVerdict(res)
	if (err != nil || h.stale(v)) && h.Ask != nil {
		// No takeover under way: this is a primary that lost the peer.
		v, err = h.ask(ctx)
	}
	switch {
	case err != nil:
		rec.Verdict = "none: " + err.Error()
	case h.stale(v):
		rec.Verdict, rec.Peer = fmt.Sprintf("stale (%s from %s)", v.Says, v.At.Format(time.RFC3339)), v.Peer
	default:
		rec.Verdict, rec.Peer, rec.Exit = v.Says, v.Peer, verdictCodes[v.Says]
	}
	fenced := rec.Exit == FencePeerOutdated || rec.Exit == FencePeerDown || rec.Exit == FencePeerStonithed
	if fenced {
		b, _ := json.Marshal(rec)
		if err := os.MkdirAll(h.StateDir, 0o700); err != nil || atomicfile.Write(FenceFile(h.StateDir, res), append(b, '\n'), 0o600) != nil {
			// An unrecorded fence could be forgotten across a reboot:
			// do not claim it.
			h.Log.Error("fence-peer: cannot record the fence; refusing", "resource", res, "err", err)
			return FenceUnknown
		}
	}
	h.Log.Warn("fence-peer", "resource", res, "peer", rec.Peer, "peer_address", rec.PeerAddress, "verdict", rec.Verdict, "exit", rec.Exit)
	return rec.Exit
}

func (h Handler) stale(v Verdict) bool {
	return h.Now().Sub(v.At) > VerdictMaxAge || v.At.After(h.Now().Add(5*time.Second))
}

// ask gets a verdict from the supervisor.
func (h Handler) ask(ctx context.Context) (Verdict, error) {
	says, err := h.Ask(ctx)
	if err != nil {
		return Verdict{}, fmt.Errorf("supervisor: %w", err)
	}
	if _, ok := verdictCodes[says]; !ok {
		return Verdict{}, fmt.Errorf("supervisor: unknown verdict %q", says)
	}
	return Verdict{Says: says, At: h.Now()}, nil
}

func (h Handler) readVerdict(res string) (Verdict, error) {
	var v Verdict
	b, err := os.ReadFile(VerdictFile(h.RunDir, res))
	if errors.Is(err, os.ErrNotExist) {
		return v, errors.New("no verdict from the supervisor")
	}
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("bad verdict file: %w", err)
	}
	if _, ok := verdictCodes[v.Says]; !ok {
		return v, fmt.Errorf("unknown verdict %q", v.Says)
	}
	return v, nil
}

// UnfencePeer is the after-resync-target handler. DRBD runs it on the
// head that was resynced, i.e. the fenced one: it drops any fence record
// this head holds (it is now current) and returns the exit code (0). The
// fencing head lifts its own record when its monitor sees the peer
// Connected and UpToDate.
func (h Handler) UnfencePeer(ctx context.Context) int {
	res := h.resource()
	if err := os.Remove(FenceFile(h.StateDir, res)); err != nil && !errors.Is(err, os.ErrNotExist) {
		h.Log.Error("unfence-peer", "resource", res, "err", err)
		return 1
	}
	h.Log.Info("unfence-peer: peer resynced", "resource", res)
	return 0
}

// PeerFenced returns the fence record, if this head fenced its peer and
// no resync has completed since.
func PeerFenced(stateDir, resource string) (FenceRecord, bool) {
	var rec FenceRecord
	b, err := os.ReadFile(FenceFile(stateDir, resource))
	if err != nil || json.Unmarshal(b, &rec) != nil {
		return rec, false
	}
	return rec, true
}
