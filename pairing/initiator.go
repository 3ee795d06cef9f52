package pairing

import (
	"bytes"
	"crypto/hmac"
	"fmt"
)

// Initiator is the head the operator's browser talks to: it knows the
// peer's setup code (typed by the operator), drives the exchange and
// pushes the site config.
type Initiator struct {
	session
	prs  []byte
	step initiatorStep
}

type initiatorStep int

const (
	iStart initiatorStep = iota
	iHelloSent
	iFinishSent
	iConfirmed
	iStageSent
	iStaged
	iCommitSent
	iDone
)

// NewInitiator starts a session with the peer whose setup code the
// operator typed.
func NewInitiator(cfg Config, peerCode string) (*Initiator, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	code, err := NormalizeCode(peerCode)
	if err != nil {
		return nil, err
	}
	return &Initiator{session: session{cfg: cfg}, prs: []byte(code)}, nil
}

// Hello opens the exchange: this head's identity, image version and
// half of the session ID.
func (i *Initiator) Hello() ([]byte, error) {
	if err := i.expect(iStart); err != nil {
		return nil, err
	}
	h, err := i.newHello()
	if err != nil {
		_, err = i.fail(fmt.Errorf("initiator: %w", err))
		return nil, err
	}
	i.self, i.step = h, iHelloSent
	return h.encode(), nil
}

// HandleShare takes the responder's answer to Hello (its identity and
// CPace share) and returns this head's share with its key confirmation
// tag.
func (i *Initiator) HandleShare(msg []byte) ([]byte, error) {
	if err := i.expect(iHelloSent); err != nil {
		return nil, err
	}
	d, err := decode(msg)
	switch {
	case err != nil:
	case d.t == msgAbort:
		err = peerAbort(d)
	case d.t != msgShare:
		err = fmt.Errorf("%w: message type %d, want the responder's share", ErrUnexpectedMessage, d.t)
	default:
		err = i.checkPeer(d.hello)
	}
	if err != nil {
		return i.fail(fmt.Errorf("initiator: share: %w", err))
	}
	i.self.y, err = i.share(i.prs, i.self, i.peer)
	if err == nil {
		var tagR, tagI []byte
		if tagR, tagI, err = i.keys(i.self, i.peer, true); err == nil {
			i.peerTag, i.prs, i.step = tagR, nil, iFinishSent
			return finish{y: i.self.y, tag: tagI}.encode(), nil
		}
	}
	return i.fail(fmt.Errorf("initiator: share: %w", err))
}

// HandleConfirm takes the responder's key confirmation tag: if it
// checks, both heads hold the same pair key and the session is
// authenticated. A wrong code shows here, as the responder's abort.
func (i *Initiator) HandleConfirm(msg []byte) ([]byte, error) {
	if err := i.expect(iFinishSent); err != nil {
		return nil, err
	}
	d, err := decode(msg)
	switch {
	case err != nil:
	case d.t == msgAbort:
		err = peerAbort(d)
	case d.t != msgConfirm:
		err = fmt.Errorf("%w: message type %d, want the responder's confirmation", ErrUnexpectedMessage, d.t)
	case !hmac.Equal(d.tag, i.peerTag):
		err = ErrKeyConfirmation
	}
	if err != nil {
		return i.fail(fmt.Errorf("initiator: confirm: %w", err))
	}
	i.state, i.step = StateAuthenticated, iConfirmed
	return nil, nil
}

// Stage returns the record that asks the responder to stage config.
// Stage config on this head too (before or after: the wizard's choice);
// commit it here only after HandleCommitted.
func (i *Initiator) Stage(config []byte) ([]byte, error) {
	if err := i.expect(iConfirmed); err != nil {
		return nil, err
	}
	if len(config) > MaxConfigSize {
		return nil, fmt.Errorf("initiator: stage: site config of %d bytes, at most %d", len(config), MaxConfigSize)
	}
	i.configHash, i.step = configHash(config), iStageSent
	return i.seal(recStage, config), nil
}

// HandleStaged takes the responder's answer to Stage: the session is
// staged when the responder staged exactly this config.
func (i *Initiator) HandleStaged(msg []byte) ([]byte, error) {
	return i.handleAck(msg, iStageSent, recStaged, StateStaged, iStaged)
}

// Commit returns the record that asks the responder to commit what it
// staged.
func (i *Initiator) Commit() ([]byte, error) {
	if err := i.expect(iStaged); err != nil {
		return nil, err
	}
	i.step = iCommitSent
	return i.seal(recCommit, i.configHash), nil
}

// HandleCommitted takes the responder's answer to Commit: the session
// is committed; now commit the config on this head.
func (i *Initiator) HandleCommitted(msg []byte) ([]byte, error) {
	return i.handleAck(msg, iCommitSent, recCommitted, StateCommitted, iDone)
}

// Cancel gives up the session, for example when the transport timed
// out; it returns the abort to send to the responder, if it can be
// reached. A committed session stays committed.
func (i *Initiator) Cancel(cause error) []byte {
	if i.state == StateFailed || i.state == StateCommitted {
		return nil
	}
	abort, _ := i.fail(cancelErr("initiator", cause))
	return abort
}

func (i *Initiator) handleAck(msg []byte, at initiatorStep, kind recordKind, next State, nextStep initiatorStep) ([]byte, error) {
	if err := i.expect(at); err != nil {
		return nil, err
	}
	d, err := decode(msg)
	var payload []byte
	switch {
	case err != nil:
	case d.t == msgAbort:
		err = peerAbort(d)
	default:
		if payload, err = i.open(d, kind); err == nil && !bytes.Equal(payload, i.configHash) {
			err = ErrConfigMismatch
		}
	}
	if err != nil {
		return i.fail(fmt.Errorf("initiator: %s: %w", kind, err))
	}
	i.state, i.step = next, nextStep
	return nil, nil
}

// expect refuses a call out of order; it does not fail the session
// (the caller's mistake is not the peer's).
func (i *Initiator) expect(step initiatorStep) error {
	if err := i.failed(); err != nil {
		return err
	}
	if i.step != step {
		return fmt.Errorf("initiator: %w: call out of order (step %d, this call needs %d)", ErrUnexpectedMessage, i.step, step)
	}
	return nil
}
