package pairing

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
)

// Store is where a responder puts the site config it receives: staged
// first (kept aside, not in use, gone if the head loses power before
// commit is the Store's promise), then committed.
type Store interface {
	Stage(ctx context.Context, config []byte) error
	Commit(ctx context.Context) error
	// Discard drops a staged config: the session failed before commit.
	Discard(ctx context.Context) error
}

// Responder is the peer head: it holds the setup code and answers an
// initiator's messages, one session per Responder.
type Responder struct {
	session
	codes   *Codes
	store   Store
	attempt *attempt // this session's hold on the code
	used    bool     // the code was consumed by this session
	step    responderStep
}

type responderStep int

const (
	rStart responderStep = iota
	rShareSent
	rConfirmed
	rStaged
	rDone
)

// NewResponder prepares to answer one pairing session with the head's
// codes; store receives the site config.
func NewResponder(cfg Config, codes *Codes, store Store) (*Responder, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if codes == nil || store == nil {
		return nil, errors.New("pairing responder: codes and store must be set")
	}
	return &Responder{session: session{cfg: cfg}, codes: codes, store: store}, nil
}

// Handle takes the initiator's next message and returns the answer to
// send back. On an error the answer, if any, is an abort for the
// initiator. A committed session refuses every further message and
// stays committed.
func (r *Responder) Handle(ctx context.Context, msg []byte) ([]byte, error) {
	if err := r.failed(); err != nil {
		return nil, err
	}
	if r.step == rDone {
		return nil, fmt.Errorf("responder: %w: the session is committed", ErrUnexpectedMessage)
	}
	d, err := decode(msg)
	if err == nil && d.t == msgAbort {
		err = peerAbort(d)
	}
	if err != nil {
		return r.fail(ctx, fmt.Errorf("responder: %w", err))
	}
	switch r.step {
	case rStart:
		return r.hello(ctx, d)
	case rShareSent:
		return r.finish(ctx, d)
	case rConfirmed:
		return r.stage(ctx, d)
	default: // rStaged
		return r.commit(ctx, d)
	}
}

// hello answers the initiator's hello with this head's share. From here
// on the session counts as an attempt on the code.
func (r *Responder) hello(ctx context.Context, d decoded) ([]byte, error) {
	var err error
	if d.t != msgHello {
		err = fmt.Errorf("%w: message type %d, want a hello", ErrUnexpectedMessage, d.t)
	} else {
		err = r.checkPeer(d.hello)
	}
	if err != nil {
		return r.fail(ctx, fmt.Errorf("responder: hello: %w", err))
	}
	a, err := r.codes.begin()
	if err != nil {
		return r.fail(ctx, fmt.Errorf("responder: hello: %w", err))
	}
	r.attempt = &a
	if r.self, err = r.newHello(); err == nil {
		r.self.y, err = r.share(a.prs, r.peer, r.self)
	}
	a.prs = nil
	if err != nil {
		return r.fail(ctx, fmt.Errorf("responder: hello: %w", err))
	}
	r.step = rShareSent
	return r.self.encode(), nil
}

// finish checks the initiator's key confirmation tag; only then is the
// code consumed and this head's tag sent.
func (r *Responder) finish(ctx context.Context, d decoded) ([]byte, error) {
	if d.t != msgFinish {
		return r.fail(ctx, fmt.Errorf("responder: finish: %w: message type %d", ErrUnexpectedMessage, d.t))
	}
	r.peer.y = d.finish.y
	tagR, tagI, err := r.keys(r.peer, r.self, false)
	if err == nil && !hmac.Equal(d.finish.tag, tagI) {
		err = ErrKeyConfirmation
	}
	if err == nil {
		err = r.codes.succeed(*r.attempt)
	}
	if err != nil {
		return r.fail(ctx, fmt.Errorf("responder: finish: %w", err))
	}
	r.used, r.state, r.step = true, StateAuthenticated, rConfirmed
	return encodeConfirm(tagR), nil
}

func (r *Responder) stage(ctx context.Context, d decoded) ([]byte, error) {
	config, err := r.open(d, recStage)
	if err == nil {
		if err = r.store.Stage(ctx, config); err != nil {
			err = fmt.Errorf("%w: %w", ErrStore, err)
		}
	}
	if err != nil {
		return r.fail(ctx, fmt.Errorf("responder: stage: %w", err))
	}
	r.configHash, r.state, r.step = configHash(config), StateStaged, rStaged
	return r.seal(recStaged, r.configHash), nil
}

func (r *Responder) commit(ctx context.Context, d decoded) ([]byte, error) {
	hash, err := r.open(d, recCommit)
	switch {
	case err != nil:
	case !bytes.Equal(hash, r.configHash):
		err = ErrConfigMismatch
	default:
		if err = r.store.Commit(ctx); err != nil {
			err = fmt.Errorf("%w: %w", ErrStore, err)
		}
	}
	if err != nil {
		return r.fail(ctx, fmt.Errorf("responder: commit: %w", err))
	}
	r.state, r.step = StateCommitted, rDone
	return r.seal(recCommitted, r.configHash), nil
}

// fail also settles the code: a session that did not confirm a key was
// an attempt (and may burn the code); one that did, but failed before
// commit, leaves the head unconfigured, so it gets a new code. A staged
// config is discarded.
func (r *Responder) fail(ctx context.Context, err error) ([]byte, error) {
	staged := r.state == StateStaged
	abort, err := r.session.fail(err)
	if r.state != StateFailed {
		return abort, err
	}
	if r.attempt != nil {
		if r.used {
			r.codes.reissue(*r.attempt)
		} else {
			r.codes.fail(*r.attempt)
		}
		r.attempt = nil
	}
	if staged {
		if derr := r.store.Discard(ctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("responder: discard the staged site config: %w", derr))
		}
	}
	return abort, err
}

// Cancel gives up the session (the transport timed out, the initiator
// went away) and settles the code as a failure does; it returns the
// abort to send to the initiator, if it can be reached.
func (r *Responder) Cancel(ctx context.Context, cause error) []byte {
	if r.state == StateFailed || r.state == StateCommitted {
		return nil
	}
	abort, _ := r.fail(ctx, cancelErr("responder", cause))
	return abort
}
