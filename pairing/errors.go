package pairing

import (
	"errors"
	"fmt"
)

// Protocol errors. Each side of a failed session returns one of these
// (wrapped with the step), so errors.Is tells the wizard what to show;
// the same reason reaches the peer in an abort message.
var (
	ErrMalformed         = errors.New("malformed pairing message")
	ErrProtocolVersion   = errors.New("the peer speaks another version of the pairing protocol")
	ErrUnexpectedMessage = errors.New("pairing message not expected at this step")
	ErrImageVersion      = errors.New("the peer runs another image version")
	ErrPeerIdentity      = errors.New("the peer's identity does not match its TLS certificate, or is this head's own")
	ErrKeyConfirmation   = errors.New("key confirmation failed: wrong setup code, or the session is not between the two heads themselves (relayed or altered on the way)")
	ErrRecordSequence    = errors.New("pairing record out of sequence: replayed or reordered")
	ErrRecordAuth        = errors.New("pairing record failed authentication: altered, or from another session")
	ErrConfigMismatch    = errors.New("the peer acknowledged another site config")
	ErrStore             = errors.New("staging or committing the site config failed")
	ErrCancelled         = errors.New("pairing cancelled")
	ErrNotAuthenticated  = errors.New("the pairing is not authenticated")
	ErrSessionFailed     = errors.New("the pairing session failed earlier")
)

// VersionMismatchError says which image versions differ. It matches
// ErrImageVersion.
type VersionMismatchError struct {
	Local, Peer string
}

func (e *VersionMismatchError) Error() string {
	return fmt.Sprintf("the peer runs image version %q, this head %q: flash both heads with the same image", e.Peer, e.Local)
}

func (e *VersionMismatchError) Is(target error) bool { return target == ErrImageVersion }

// PeerAbortError is the peer's account of why it gave up, from an
// abort message. Aborts are not authenticated: anyone on the path can
// send one, as anyone can drop the traffic. It unwraps to the reason.
type PeerAbortError struct {
	Reason error  // one of the Err… values
	Detail string // the peer's words, untrusted, at most maxDetail bytes
}

func (e *PeerAbortError) Error() string {
	if e.Detail == "" {
		return "the peer aborted: " + e.Reason.Error()
	}
	return fmt.Sprintf("the peer aborted: %v (%q)", e.Reason, e.Detail)
}

func (e *PeerAbortError) Unwrap() error { return e.Reason }

// abortReasons numbers the reasons on the wire. Append only.
var abortReasons = []error{
	0:  errors.New("unknown reason"),
	1:  ErrMalformed,
	2:  ErrProtocolVersion,
	3:  ErrUnexpectedMessage,
	4:  ErrImageVersion,
	5:  ErrPeerIdentity,
	6:  ErrKeyConfirmation,
	7:  ErrRecordSequence,
	8:  ErrRecordAuth,
	9:  ErrConfigMismatch,
	10: ErrStore,
	11: ErrCancelled,
	12: ErrCodeExpired,
	13: ErrCodeBurned,
	14: ErrCodeUsed,
}

func reasonCode(err error) byte {
	for i := len(abortReasons) - 1; i > 0; i-- {
		if errors.Is(err, abortReasons[i]) {
			return byte(i)
		}
	}
	return 0
}

func reasonErr(code byte) error {
	if int(code) < len(abortReasons) {
		return abortReasons[code]
	}
	return abortReasons[0]
}
