package wizard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"tandem.dev/tandem/pairing"
)

// initiatorState is a pairing this head's operator drives.
type initiatorState struct {
	peer    Peer
	client  *peerClient
	sid     string
	pairKey []byte
	hw      [2]Hardware // this head, the peer

	mu        sync.Mutex // the pairing session is not safe for concurrent use
	sess      *pairing.Initiator
	commitMsg []byte

	// The operator's answers, guarded by the Wizard's mu.
	in       siteInput
	hwDone   bool
	config   []byte // checked, with the pair key
	public   []byte // the same without the key: the operator's download
	prog     *progress
	creating bool
}

// progress is what the create page shows.
type progress struct {
	Steps []progStep `json:"steps"`
	State string     `json:"state"` // running, done, failed, unconfirmed
	Error string     `json:"error,omitempty"`
}

type progStep struct {
	Name  string `json:"name"`
	State string `json:"state"` // pending, running, done, failed, skipped
}

// Errors of the create step.
var (
	errPeerNotCommitted = errors.New("the other head did not commit the site config")
	errPeerForgot       = errors.New("the other head no longer knows this pairing")
	errUnconfirmed      = errors.New("the other head could not be reached to confirm the commit")
	errBusy             = errors.New("this head is being paired already (by another head)")
)

// cancel gives up the pairing and tells the peer, if it can.
func (ini *initiatorState) cancel(ctx context.Context, cause error) {
	ini.mu.Lock()
	defer ini.mu.Unlock()
	if ini.sess != nil && ini.sid != "" {
		if abort := ini.sess.Cancel(cause); abort != nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			ini.client.message(cctx, ini.sid, abort)
			cancel()
		}
	}
	ini.client.close()
}

// errNoPeer: nothing answers as a Tandem head's wizard at the address.
var errNoPeer = errors.New("no Tandem head answers")

// lookupPeer checks a peer the operator typed an address for: its
// wizard must answer, run this head's image and be free; its certificate
// is pinned from this first contact on. A pin (tandem pair's
// --peer-fingerprint) must match it already at this first contact.
func (w *Wizard) lookupPeer(ctx context.Context, addr string, pin []byte) (Peer, error) {
	addr, err := NormalizeAddr(addr)
	if err != nil {
		return Peer{}, err
	}
	c := w.newPeerClient(addr, pin)
	defer c.close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pi, err := c.info(ctx)
	if err != nil {
		return Peer{}, fmt.Errorf("%w at %s: %w", errNoPeer, addr, err)
	}
	if pi.ID == w.id.ID {
		return Peer{}, fmt.Errorf("%s is this head", addr)
	}
	return Peer{ID: pi.ID, Addr: addr, Fingerprint: c.fingerprint(), Image: pi.Image, Seen: w.opts.Now(), Typed: true}, nil
}

// pairWith runs the key exchange with the peer whose code the operator
// typed; on success the head is in the initiator role, holding the pair
// key and both heads' hardware.
func (w *Wizard) pairWith(ctx context.Context, p Peer, code string) (err error) {
	code, err = pairing.NormalizeCode(code)
	if err != nil {
		return err
	}
	if p.Image != w.opts.ImageVersion {
		return &pairing.VersionMismatchError{Local: w.opts.ImageVersion, Peer: p.Image}
	}
	if !w.reserve(phaseInitiating) {
		return errBusy
	}
	c := w.newPeerClient(p.Addr, p.Fingerprint)
	ini := &initiatorState{peer: p, client: c}
	defer func() {
		if err != nil {
			ini.cancel(context.WithoutCancel(ctx), err)
			w.release(phaseInitiating)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	ini.sess, err = pairing.NewInitiator(pairing.Config{
		Self:                pairing.Identity{ID: w.id.ID, CertFingerprint: w.id.Fingerprint},
		ImageVersion:        w.opts.ImageVersion,
		PeerCertFingerprint: p.Fingerprint,
	}, code)
	if err != nil {
		return err
	}
	hello, err := ini.sess.Hello()
	if err != nil {
		return err
	}
	sid, share, err := c.hello(ctx, hello)
	if err != nil {
		return err
	}
	ini.sid = sid
	finish, err := ini.sess.HandleShare(share)
	if err != nil {
		return err // cancel delivers the abort
	}
	confirm, err := c.message(ctx, sid, finish)
	if err != nil {
		return err
	}
	if _, err = ini.sess.HandleConfirm(confirm); err != nil {
		return err
	}
	if ini.pairKey, err = ini.sess.PairKey(); err != nil {
		return err
	}
	if ini.hw[1], err = c.inventory(ctx, sid); err != nil {
		return err
	}
	if ini.hw[0], err = w.opts.Inventory(ctx); err != nil {
		return fmt.Errorf("this head's hardware: %w", err)
	}
	ini.in = suggest(w.id, p, ini.hw)
	w.mu.Lock()
	w.ini, w.sel = ini, nil
	w.mu.Unlock()
	w.log.Info("wizard: paired as initiator", "peer", p.ID, "addr", p.Addr)
	return nil
}

// startOver gives up the pairing this head drives (not once creating).
func (w *Wizard) startOver(ctx context.Context) error {
	w.mu.Lock()
	ini := w.ini
	if ini != nil && ini.creating && (ini.prog == nil || ini.prog.State != "failed") {
		w.mu.Unlock()
		return errors.New("the pair is being created; wait for it to finish")
	}
	w.ini, w.sel = nil, nil
	w.mu.Unlock()
	if ini != nil {
		ini.cancel(ctx, errors.New("the operator started over"))
		w.release(phaseInitiating)
	}
	return nil
}

var createSteps = []string{
	"Check the site config",
	"Stage the config on this head",
	"Stage the config on the other head",
	"Commit on the other head",
	"Confirm the other head's commit",
	"Commit on this head",
	"Start the pair",
}

const (
	stepCheck = iota
	stepStageHere
	stepStagePeer
	stepCommitPeer
	stepConfirm
	stepCommitHere
	stepServe
)

// startCreate begins pushing the checked config: staged on both heads,
// then committed on both, in the background; the progress page polls.
func (w *Wizard) startCreate(ini *initiatorState) error {
	w.mu.Lock()
	if ini.creating || ini.config == nil {
		w.mu.Unlock()
		return errors.New("nothing to create, or already creating")
	}
	ini.creating = true
	ini.prog = &progress{State: "running"}
	for _, s := range createSteps {
		ini.prog.Steps = append(ini.prog.Steps, progStep{Name: s, State: "pending"})
	}
	w.mu.Unlock()
	w.creating.Add(1)
	go func() {
		defer w.creating.Done()
		w.create(w.ctx, ini)
	}()
	return nil
}

func (w *Wizard) setStep(ini *initiatorState, i int, state string) {
	w.mu.Lock()
	ini.prog.Steps[i].State = state
	w.mu.Unlock()
}

func (w *Wizard) endCreate(ini *initiatorState, state string, err error) {
	w.mu.Lock()
	ini.prog.State = state
	if err != nil {
		ini.prog.Error = explain(err)
	}
	w.mu.Unlock()
	if err != nil {
		w.log.Warn("wizard: creating the pair", "state", state, "err", err)
	}
}

// create stages the config on both heads, commits it on the peer, and
// commits it here only once the peer's commit is certain: from its
// acknowledgement, or, if that got lost, from an authenticated status
// query. A head that loses power before its commit comes back
// unconfigured (FileStore), so a failure before the peer's commit leaves
// both heads unconfigured.
func (w *Wizard) create(ctx context.Context, ini *initiatorState) {
	ini.mu.Lock()
	defer ini.mu.Unlock()
	w.setStep(ini, stepCheck, "done")

	failBeforeCommit := func(step int, err error) {
		w.setStep(ini, step, "failed")
		if ini.sess.State() != pairing.StateFailed {
			if abort := ini.sess.Cancel(err); abort != nil {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				ini.client.message(cctx, ini.sid, abort)
				cancel()
			}
		}
		if derr := w.store.Discard(context.WithoutCancel(ctx)); derr != nil {
			err = errors.Join(err, derr)
		}
		w.endCreate(ini, "failed", err)
	}

	w.setStep(ini, stepStageHere, "running")
	if err := w.store.Stage(ctx, ini.config); err != nil {
		failBeforeCommit(stepStageHere, err)
		return
	}
	w.setStep(ini, stepStageHere, "done")

	w.setStep(ini, stepStagePeer, "running")
	msg, err := ini.sess.Stage(ini.config)
	if err == nil {
		var reply []byte
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		reply, err = ini.client.message(cctx, ini.sid, msg)
		cancel()
		if err == nil {
			var abort []byte
			if abort, err = ini.sess.HandleStaged(reply); err != nil && abort != nil {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				ini.client.message(cctx, ini.sid, abort)
				cancel()
			}
		}
	}
	if err != nil {
		failBeforeCommit(stepStagePeer, err)
		return
	}
	w.setStep(ini, stepStagePeer, "done")

	w.setStep(ini, stepCommitPeer, "running")
	if ini.commitMsg, err = ini.sess.Commit(); err != nil {
		failBeforeCommit(stepCommitPeer, err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	reply, err := ini.client.message(cctx, ini.sid, ini.commitMsg)
	cancel()
	if err == nil {
		_, err = ini.sess.HandleCommitted(reply)
	}
	if err == nil {
		w.setStep(ini, stepCommitPeer, "done")
		w.setStep(ini, stepConfirm, "skipped")
	} else {
		// The peer may have committed and its answer got lost: ask.
		w.log.Warn("wizard: the other head's commit acknowledgement", "err", err)
		w.setStep(ini, stepCommitPeer, "done")
		if !w.confirmPeer(ctx, ini, err) {
			return
		}
	}
	w.commitHere(ctx, ini)
}

// confirmPeer asks the peer whether it committed; true when it did, with
// this config. why is what went wrong with its acknowledgement.
func (w *Wizard) confirmPeer(ctx context.Context, ini *initiatorState, why error) bool {
	w.setStep(ini, stepConfirm, "running")
	err := w.confirm(ctx, ini)
	if errors.Is(err, errPeerNotCommitted) && why != nil {
		err = fmt.Errorf("%w; its answer to the commit: %w", err, why)
	}
	switch {
	case err == nil:
		w.setStep(ini, stepConfirm, "done")
		return true
	case errors.Is(err, errUnconfirmed):
		// The peer may or may not have committed: keep the staged
		// config (a restart drops it) and let the operator ask again.
		w.setStep(ini, stepConfirm, "failed")
		w.endCreate(ini, "unconfirmed", err)
	default:
		w.setStep(ini, stepConfirm, "failed")
		if derr := w.store.Discard(context.WithoutCancel(ctx)); derr != nil {
			err = errors.Join(err, derr)
		}
		w.endCreate(ini, "failed", err)
	}
	return false
}

// retryConfirm is the operator's "ask again" after an unconfirmed commit.
func (w *Wizard) retryConfirm(ini *initiatorState) error {
	w.mu.Lock()
	if ini.prog == nil || ini.prog.State != "unconfirmed" {
		w.mu.Unlock()
		return errors.New("nothing to confirm")
	}
	ini.prog.State, ini.prog.Error = "running", ""
	w.mu.Unlock()
	w.creating.Add(1)
	go func() {
		defer w.creating.Done()
		ini.mu.Lock()
		defer ini.mu.Unlock()
		if w.confirmPeer(w.ctx, ini, nil) {
			w.commitHere(w.ctx, ini)
		}
	}()
	return nil
}

// confirm queries the peer's status until it is definite or the
// confirmation time runs out. A peer still staged gets the commit
// record again: it accepts it once, by its sequence number.
func (w *Wizard) confirm(ctx context.Context, ini *initiatorState) error {
	want := sha256.Sum256(ini.config)
	deadline := w.opts.Now().Add(w.opts.ConfirmTimeout)
	var last error
	for {
		var nonce [32]byte
		rand.Read(nonce[:])
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := ini.client.status(cctx, ini.sid, nonce[:])
		cancel()
		if err == nil {
			switch st.State {
			case pairing.StateCommitted.String():
				mac := statusMAC(ini.pairKey, ini.sid, nonce[:], st)
				switch {
				case !hmac.Equal([]byte(st.Mac), []byte(mac)):
					last = errors.New("the other head's status answer is not authenticated by the pair key")
				case st.Hash != hex.EncodeToString(want[:]):
					return fmt.Errorf("%w: %w", errPeerNotCommitted, pairing.ErrConfigMismatch)
				default:
					return nil
				}
			case pairing.StateStaged.String():
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				ini.client.message(cctx, ini.sid, ini.commitMsg)
				cancel()
				last = errors.New("the other head is still staged")
			case "unknown":
				return fmt.Errorf("%w: %w", errPeerNotCommitted, errPeerForgot)
			default:
				return fmt.Errorf("%w (it reports %s)", errPeerNotCommitted, st.State)
			}
		} else {
			last = err
		}
		if w.opts.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w: %w", errUnconfirmed, last)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (w *Wizard) commitHere(ctx context.Context, ini *initiatorState) {
	w.setStep(ini, stepCommitHere, "running")
	res, err := resultFor(ini.config, w.id.ID, "initiator")
	if err == nil {
		err = w.store.Commit(context.WithoutCancel(ctx))
	}
	if err != nil {
		// The peer committed and this head could not: say so plainly.
		w.setStep(ini, stepCommitHere, "failed")
		w.endCreate(ini, "failed", fmt.Errorf("the other head committed the site config, but this head could not: %w", err))
		return
	}
	w.setStep(ini, stepCommitHere, "done")
	if err := w.store.MarkDone(); err != nil {
		w.log.Warn("wizard: mark both heads committed", "err", err)
	}
	w.setCommitted(res)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ini.client.done(cctx, ini.sid)
	cancel()

	if w.opts.Serving == nil {
		w.setStep(ini, stepServe, "skipped")
		w.endCreate(ini, "done", nil)
		return
	}
	w.setStep(ini, stepServe, "running")
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, ok, err := w.opts.Serving(cctx)
		cancel()
		if err == nil && ok {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	w.setStep(ini, stepServe, "done")
	w.endCreate(ini, "done", nil)
}

// explain turns an error into what the operator reads.
func explain(err error) string {
	var vm *pairing.VersionMismatchError
	var pe *peerError
	var ab *pairing.PeerAbortError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &vm):
		return fmt.Sprintf("The other head runs image %s; this head runs %s. Flash the same image onto both heads, then start again.", vm.Peer, vm.Local)
	case errors.Is(err, pairing.ErrImageVersion):
		detail := ""
		if errors.As(err, &ab) && ab.Detail != "" {
			detail = " It says: " + ab.Detail + "."
		}
		return "The two heads run different image versions." + detail + " Flash the same image onto both heads, then start again."
	case errors.Is(err, pairing.ErrCodeFormat):
		return "A setup code is 8 digits."
	case errors.Is(err, pairing.ErrKeyConfirmation):
		return "The other head did not accept that code: either the code is wrong, or something between the heads relayed or altered the pairing (it is bound to both heads' certificates). Type the code its console shows now, and check that the address is the other head's own: its certificate fingerprint must be the one its console shows. After 5 wrong codes it shows a new one."
	case errors.Is(err, pairing.ErrCodeBurned):
		return "The other head's code was burned after too many wrong attempts. Its console shows a new one."
	case errors.Is(err, pairing.ErrCodeExpired):
		return "The other head's code expired. Its console shows a new one."
	case errors.Is(err, pairing.ErrCodeUsed):
		return "The other head is paired already."
	case errors.Is(err, errFingerprint):
		return "The other head's TLS certificate changed since it was found: " + err.Error() + ". Nothing was sent. Check the address, or find it again."
	case errors.Is(err, pairing.ErrPeerIdentity):
		return "The other head's identity does not match its certificate: something between the heads is relaying the connection. Nothing was paired."
	case errors.Is(err, errBusy):
		return "This head is being paired already, by another head. Wait for that to finish or time out."
	case errors.As(err, &pe) && pe.Code == codeBusy:
		return "The other head is being paired already, from its own wizard or by another head."
	case errors.As(err, &pe) && pe.Code == codeConfigured:
		return "The other head is configured already."
	case errors.As(err, &pe) && pe.Code == codeUnknown:
		return "The other head no longer knows this pairing (it restarted or gave up). Both heads stay unconfigured; start again."
	case errors.Is(err, errPeerForgot):
		return "The other head no longer knows this pairing (it restarted or gave up) and did not commit. Both heads stay unconfigured; start again."
	case errors.Is(err, errPeerNotCommitted):
		why := ""
		if errors.As(err, &ab) {
			why = " It said: " + ab.Reason.Error()
			if ab.Detail != "" {
				why += " (" + ab.Detail + ")"
			}
			why += "."
		}
		return "The other head did not commit the site config." + why + " Both heads stay unconfigured; start again."
	case errors.Is(err, errUnconfirmed):
		return "The other head could not be reached to confirm that it committed the site config. This head is not configured yet and keeps the config staged; check the network and ask again."
	case errors.Is(err, pairing.ErrRecordAuth), errors.Is(err, pairing.ErrRecordSequence), errors.Is(err, pairing.ErrMalformed):
		return "A pairing message between the heads was altered, replayed or cut off. Nothing was configured; start again."
	case errors.Is(err, pairing.ErrStore):
		return "The other head could not store the site config: " + err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return "The other head does not answer: " + err.Error()
	}
	return err.Error()
}
