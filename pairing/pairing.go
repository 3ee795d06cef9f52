// Package pairing pairs two unconfigured heads by one head's one-time
// setup code and agrees a fresh pair key between them; then the head the
// operator's browser talks to (the initiator) pushes the site config to
// the other (the responder), staged on both, then committed.
//
// The key exchange is CPace (draft-irtf-cfrg-cpace-21, suite
// CPACE-RISTR255-SHA512) with the responder's setup code as the
// password: a PAKE, so that a listener or a man in the middle gets no
// way to test guesses of an 8-digit code offline, only one guess per
// session, and the responder's Codes burn a code after 5. Both heads'
// IDs and TLS certificate fingerprints, both image versions and a
// random session ID from each side are bound into the exchange;
// explicit key confirmation comes before anything is trusted. See
// docs/pairing.md for the flow and the threat model.
//
// The package does no I/O: each step takes and returns messages as
// []byte, so any transport (HTTPS between the heads) can carry them.
// The flow, with I the initiator and R the responder:
//
//	I: msg := i.Hello()                 → R: reply := r.Handle(ctx, msg)   (share)
//	I: msg := i.HandleShare(reply)      → R: reply := r.Handle(ctx, msg)   (confirm)
//	I: i.HandleConfirm(reply)             both authenticated: PairKey()
//	I: msg := i.Stage(config)           → R: reply := r.Handle(ctx, msg)   (Store.Stage)
//	I: i.HandleStaged(reply)
//	I: msg := i.Commit()                → R: reply := r.Handle(ctx, msg)   (Store.Commit)
//	I: i.HandleCommitted(reply)           both committed
//
// A step that fails returns an error and, when it has one, an abort
// message to deliver to the peer, which then fails with the same
// reason. A session that failed stays failed. Sessions are not safe for
// concurrent use; Codes is.
package pairing

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cloudflare/circl/group"
)

// State is where a session stands.
type State int

// States of a session. The handshake keeps a session Fresh until the
// key is confirmed; Failed is final, as is Committed.
const (
	StateFresh         State = iota // no key confirmed yet
	StateAuthenticated              // both sides confirmed the same key
	StateStaged                     // the responder staged the site config
	StateCommitted                  // the responder committed it
	StateFailed                     // gave up; see Err
)

func (s State) String() string {
	switch s {
	case StateFresh:
		return "fresh"
	case StateAuthenticated:
		return "authenticated"
	case StateStaged:
		return "staged"
	case StateCommitted:
		return "committed"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state %d", int(s))
}

// Identity names a head in the exchange.
type Identity struct {
	ID              string // random per head, made at first boot; at most 64 bytes
	CertFingerprint []byte // SHA-256 of the head's TLS certificate
}

// Config is what a head brings to a session.
type Config struct {
	Self         Identity
	ImageVersion string // must equal the peer's
	// PeerCertFingerprint is the peer's TLS certificate fingerprint as
	// this head's transport saw it, if it saw one: the peer's claim
	// must then be the same. Either way the fingerprints both heads
	// claim are bound into the key, so a TLS man in the middle makes
	// the key confirmation fail.
	PeerCertFingerprint []byte
	Rand                io.Reader // nil = crypto/rand
}

func (c *Config) check() error {
	switch {
	case c.Self.ID == "" || len(c.Self.ID) > maxIDLen:
		return fmt.Errorf("pairing config: the head ID must be 1 to %d bytes", maxIDLen)
	case len(c.Self.CertFingerprint) == 0 || len(c.Self.CertFingerprint) > maxFPLen:
		return fmt.Errorf("pairing config: the certificate fingerprint must be 1 to %d bytes", maxFPLen)
	case c.ImageVersion == "" || len(c.ImageVersion) > maxVersionLen:
		return fmt.Errorf("pairing config: the image version must be 1 to %d bytes", maxVersionLen)
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return nil
}

// Labels of the key schedule and the transcript. A new protocol version
// changes them.
const (
	labelCI        = "tandem pairing v1"
	labelPairKey   = "tandem pair key v1"
	labelI2R       = "tandem pairing records initiator to responder v1"
	labelR2I       = "tandem pairing records responder to initiator v1"
	labelRecordAD  = "tandem pairing record v1"
	roleInitiator  = "initiator"
	roleResponder  = "responder"
	pairKeyLen     = 32
	recordKeyLen   = 32 // AES-256-GCM
	configHashSize = sha256.Size
)

// session is what both roles share: the handshake's results and the
// record layer.
type session struct {
	cfg   Config
	state State
	err   error // why the session failed

	self, peer hello // both hellos as sent; y is each side's CPace share
	sid        []byte
	scalar     group.Scalar
	peerTag    []byte // the tag the peer must send

	pairKey    []byte
	send, recv cipher.AEAD
	sendSeq    uint64
	recvSeq    uint64
	configHash []byte
}

func (s *session) newHello() (hello, error) {
	sid := make([]byte, sidLen)
	if _, err := io.ReadFull(s.cfg.Rand, sid); err != nil {
		return hello{}, fmt.Errorf("session ID: %w", err)
	}
	return hello{version: []byte(s.cfg.ImageVersion), id: []byte(s.cfg.Self.ID), fp: bytes.Clone(s.cfg.Self.CertFingerprint), sid: sid}, nil
}

// checkPeer vets the peer's hello before any work on the code.
func (s *session) checkPeer(h hello) error {
	if !bytes.Equal(h.version, []byte(s.cfg.ImageVersion)) {
		return &VersionMismatchError{Local: s.cfg.ImageVersion, Peer: string(h.version)}
	}
	if string(h.id) == s.cfg.Self.ID {
		return fmt.Errorf("%w: it has this head's ID %q", ErrPeerIdentity, h.id)
	}
	if s.cfg.PeerCertFingerprint != nil && !bytes.Equal(h.fp, s.cfg.PeerCertFingerprint) {
		return fmt.Errorf("%w: it claims certificate %x, the connection shows %x", ErrPeerIdentity, h.fp, s.cfg.PeerCertFingerprint)
	}
	s.peer = h
	return nil
}

// channel returns CPace's inputs CI and sid, the same on both sides:
// CI binds both identities with their roles, the responder (CPace's
// party A) first; sid is both sides' random session IDs.
func channel(ini, res hello) (ci, sid []byte) {
	ci = lvCat([]byte(labelCI),
		[]byte(roleResponder), res.id, res.fp,
		[]byte(roleInitiator), ini.id, ini.fp)
	return ci, append(bytes.Clone(ini.sid), res.sid...)
}

// ad is a party's CPace associated data: its role and image version,
// which travel in its hello.
func ad(role string, h hello) []byte { return lvCat([]byte(role), h.version) }

// share computes this side's CPace share Y = y·g.
func (s *session) share(prs []byte, ini, res hello) ([]byte, error) {
	ci, sid := channel(ini, res)
	g := calculateGenerator(prs, ci, sid)
	y, err := sampleScalar(s.cfg.Rand)
	if err != nil {
		return nil, err
	}
	s.sid, s.scalar = sid, y
	return scalarMult(y, g), nil
}

// keys derives ISK from the peer's share and returns both parties'
// confirmation tags, the responder's first; it keeps the pair key and
// the record keys, which are used only once the peer's tag checked.
func (s *session) keys(ini, res hello, iAmInitiator bool) (tagR, tagI []byte, err error) {
	peerY := res.y
	if !iAmInitiator {
		peerY = ini.y
	}
	k, err := scalarMultVfy(s.scalar, peerY)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the peer's CPace share is %v", ErrMalformed, err)
	}
	adR, adI := ad(roleResponder, res), ad(roleInitiator, ini)
	isk := deriveISK(s.sid, k, res.y, adR, ini.y, adI)
	mk := macKey(s.sid, isk)
	tagR, tagI = confirmTag(mk, res.y, adR), confirmTag(mk, ini.y, adI)

	derive := func(label string, n int) []byte {
		key, err := hkdf.Key(sha512.New, isk, s.sid, label, n)
		if err != nil {
			panic("pairing: hkdf: " + err.Error()) // only for lengths we never ask
		}
		return key
	}
	i2r, r2i := derive(labelI2R, recordKeyLen), derive(labelR2I, recordKeyLen)
	if iAmInitiator {
		s.send, s.recv = newAEAD(i2r), newAEAD(r2i)
	} else {
		s.send, s.recv = newAEAD(r2i), newAEAD(i2r)
	}
	s.pairKey = derive(labelPairKey, pairKeyLen)
	return tagR, tagI, nil
}

func newAEAD(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("pairing: aes: " + err.Error()) // 32-byte key: cannot happen
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic("pairing: gcm: " + err.Error())
	}
	return a
}

// forgetKeys drops everything derived from the exchange.
func (s *session) forgetKeys() {
	s.pairKey, s.send, s.recv, s.scalar, s.peerTag = nil, nil, nil, nil, nil
}

// seal makes the next record of this direction. Its sequence number is
// in the nonce and the associated data, and each direction has its own
// key, so a record only opens at its place in its session.
func (s *session) seal(kind recordKind, payload []byte) []byte {
	seq := s.sendSeq
	s.sendSeq++
	return record{kind: kind, seq: seq, sealed: s.send.Seal(nil, nonce(seq), payload, recordAD(kind, seq))}.encode()
}

// open checks that d is the next record from the peer and of the kind
// wanted, and returns its payload.
func (s *session) open(d decoded, want recordKind) ([]byte, error) {
	if d.t != msgRecord {
		return nil, fmt.Errorf("%w: message type %d, want a %s record", ErrUnexpectedMessage, d.t, want)
	}
	r := d.record
	if r.seq != s.recvSeq {
		return nil, fmt.Errorf("%w: record %d, want %d", ErrRecordSequence, r.seq, s.recvSeq)
	}
	payload, err := s.recv.Open(nil, nonce(r.seq), r.sealed, recordAD(r.kind, r.seq))
	if err != nil {
		return nil, fmt.Errorf("%w: record %d", ErrRecordAuth, r.seq)
	}
	if r.kind != want {
		return nil, fmt.Errorf("%w: a %s record, want %s", ErrUnexpectedMessage, r.kind, want)
	}
	s.recvSeq++
	return payload, nil
}

func nonce(seq uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

func recordAD(kind recordKind, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(lvCat([]byte(labelRecordAD), []byte{byte(kind)}), seq)
}

// fail moves the session to Failed (a committed one stays committed:
// that is a fact on the responder's disk) and returns the error with
// an abort for the peer, unless the peer aborted first.
func (s *session) fail(err error) ([]byte, error) {
	if s.state == StateCommitted {
		return nil, err
	}
	s.state, s.err = StateFailed, err
	s.forgetKeys()
	var pa *PeerAbortError
	if errors.As(err, &pa) {
		return nil, err
	}
	detail := []byte(err.Error())
	if len(detail) > maxDetail {
		detail = detail[:maxDetail]
	}
	return abortMsg{reason: reasonCode(err), detail: detail}.encode(), err
}

// failed returns the sticky error of a failed session.
func (s *session) failed() error {
	if s.state == StateFailed {
		return fmt.Errorf("%w: %w", ErrSessionFailed, s.err)
	}
	return nil
}

// peerAbort turns an abort message into the peer's error.
func peerAbort(d decoded) error {
	return &PeerAbortError{Reason: reasonErr(d.abort.reason), Detail: string(d.abort.detail)}
}

// State returns where the session stands.
func (s *session) State() State { return s.state }

// Err returns why the session failed, or nil.
func (s *session) Err() error { return s.err }

// PairKey returns the 32-byte pair key both heads derived, once the key
// confirmation succeeded. It never travels on the wire.
func (s *session) PairKey() ([]byte, error) {
	switch s.state {
	case StateAuthenticated, StateStaged, StateCommitted:
		return bytes.Clone(s.pairKey), nil
	}
	return nil, ErrNotAuthenticated
}

// Peer returns the peer's identity once the key confirmation
// succeeded. (Its image version is this head's: both were checked.)
func (s *session) Peer() (Identity, error) {
	if _, err := s.PairKey(); err != nil {
		return Identity{}, err
	}
	return Identity{ID: string(s.peer.id), CertFingerprint: bytes.Clone(s.peer.fp)}, nil
}

// cancelErr is the error of a session given up by its caller.
func cancelErr(role string, cause error) error {
	if cause == nil {
		cause = errors.New("by the caller")
	}
	return fmt.Errorf("%s: %w: %w", role, ErrCancelled, cause)
}

func configHash(config []byte) []byte {
	h := sha256.Sum256(config)
	return h[:]
}
