package witness

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"tandem.dev/tandem/ha"
)

// Wire format, version 2, big-endian; every message is one UDP datagram
// ending in an HMAC-SHA256 with the witness key over all bytes before it.
//
// Request (head -> witness):
//
//	off size field
//	  0    4 magic "TDWQ"
//	  4    1 version (2)
//	  5    1 op: 1 acquire (or renew), 2 release, 3 outdate peer ("I hold
//	         the lease and write alone: record that only my data is
//	         current"; renews the lease), 4 clear writer ("my peer is
//	         current again")
//	  6    1 flags: bit 0 "I hold a lease": the client's own, conservative
//	         view; it matters only during the witness's quiet period
//	  7    1 zero
//	  8   16 nonce: random per attempt; the reply must echo it
//	 24   16 client boot ID (random per client start)
//	 40   16 witness boot ID, as last heard from the witness (zero: none)
//	 56   16 challenge, as last handed out by the witness (zero: none)
//	 72    8 lease the client believes it has left, ns (informational)
//	 80  1+n pair name
//	  .  1+n node name
//	  .   32 HMAC
//
// Reply (witness -> head):
//
//	off size field
//	  0    4 magic "TDWA"
//	  4    1 version (2)
//	  5    1 status: 1 granted, 2 denied, 3 released, 4 challenge (the
//	         request did not prove itself fresh and changed nothing:
//	         send it again with this reply's witness boot and challenge)
//	  6    1 flags: bit 0 the witness is in its quiet period; bit 1 the
//	         witness records the requester as the only node with current
//	         data; bit 2 it records the OTHER node so: the requester's
//	         data is outdated (bits 1 and 2 never both; none with status 4)
//	  7    1 zero
//	  8   16 nonce of the request
//	 24   16 witness boot ID (random per witness start)
//	 40   16 challenge for the requester's next request
//	 56    8 ns: granted: the lease length; denied: how long the holder's
//	         lease (or the quiet period) still runs, 0 if unknown
//	 64  1+n pair name
//	  .  1+n holder's node name ("" if none)
//	  .   32 HMAC
//
// The two magics differ, so a request can never pass for a reply or a
// heartbeat (which uses "TDHB") and back.
const (
	reqMagic   = "TDWQ"
	replyMagic = "TDWA"
	version    = 2
	reqFixed   = 80
	replyFixed = 64
	macLen     = sha256.Size
	// MaxMessage bounds a datagram; longer ones are malformed.
	MaxMessage = reqFixed + 2 + 2*ha.MaxNameLen + macLen
)

// Operations.
const (
	opAcquire     = 1
	opRelease     = 2
	opOutdatePeer = 3
	opClearWriter = 4
)

// Reply flags.
const (
	flagQuiet    = 1 << 0
	flagWriter   = 1 << 1
	flagOutdated = 1 << 2
)

// Status is the witness's answer.
type Status uint8

const (
	Granted  Status = 1
	Denied   Status = 2
	Released Status = 3
	// Challenge: prove freshness (the reply carries the challenge).
	Challenge Status = 4
)

func (s Status) String() string {
	switch s {
	case Granted:
		return "granted"
	case Denied:
		return "denied"
	case Released:
		return "released"
	case Challenge:
		return "challenge"
	}
	return "unknown"
}

// ID is a random 16-byte identifier (boot IDs, nonces, challenges).
type ID [16]byte

// MarshalText writes the ID in hex (the state file, logs).
func (id ID) MarshalText() ([]byte, error) { return hex.AppendEncode(nil, id[:]), nil }

// UnmarshalText reads MarshalText's form.
func (id *ID) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(id) {
		return fmt.Errorf("ID %q: want %d hex digits", b, 2*len(id))
	}
	_, err := hex.Decode(id[:], b)
	return err
}

type request struct {
	Op    uint8
	Claim bool
	Nonce ID
	Boot  ID
	// Witness and Challenge prove the request fresh: the witness's
	// current boot and a challenge it handed this node recently.
	Witness   ID
	Challenge ID
	HeldFor   time.Duration
	Pair      string
	Node      string
}

type reply struct {
	Status Status
	Quiet  bool
	// Writer: the witness records the requester as the only node with
	// current data; Outdated: it records the other node so.
	Writer    bool
	Outdated  bool
	Nonce     ID
	Witness   ID
	Challenge ID
	Lease     time.Duration
	Pair      string
	Holder    string
}

var (
	errMalformed = errors.New("malformed")
	errWrongPair = errors.New("wrong pair")
	errForged    = errors.New("bad MAC")
)

func seal(b, key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(b)
}

func appendNames(b []byte, names ...string) []byte {
	for _, s := range names {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

func bit(set bool, b byte) byte {
	if set {
		return b
	}
	return 0
}

func (r *request) marshal(key []byte) []byte {
	b := make([]byte, 0, MaxMessage)
	b = append(b, reqMagic...)
	b = append(b, version, r.Op, bit(r.Claim, 1), 0)
	b = append(b, r.Nonce[:]...)
	b = append(b, r.Boot[:]...)
	b = append(b, r.Witness[:]...)
	b = append(b, r.Challenge[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(max(r.HeldFor, 0)))
	return seal(appendNames(b, r.Pair, r.Node), key)
}

func (r *reply) marshal(key []byte) []byte {
	b := make([]byte, 0, MaxMessage)
	b = append(b, replyMagic...)
	flags := bit(r.Quiet, flagQuiet) | bit(r.Writer, flagWriter) | bit(r.Outdated, flagOutdated)
	b = append(b, version, byte(r.Status), flags, 0)
	b = append(b, r.Nonce[:]...)
	b = append(b, r.Witness[:]...)
	b = append(b, r.Challenge[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(max(r.Lease, 0)))
	return seal(appendNames(b, r.Pair, r.Holder), key)
}

// open checks a message's frame: length, magic, version, the two names
// (the first must be pair, the second non-empty unless emptyOK), then the
// MAC. It returns the fixed part and the second name.
func open(b []byte, magic string, fixedLen int, pair string, key []byte, emptyOK bool) (fixed []byte, name string, err error) {
	if len(b) < fixedLen+2+macLen || len(b) > MaxMessage || string(b[:4]) != magic || b[4] != version || b[7] != 0 {
		return nil, "", errMalformed
	}
	body := b[:len(b)-macLen]
	rest := body[fixedLen:]
	var names [2]string
	for i := range names {
		if len(rest) < 1 || int(rest[0]) > ha.MaxNameLen || len(rest) < 1+int(rest[0]) {
			return nil, "", errMalformed
		}
		names[i] = string(rest[1 : 1+rest[0]])
		rest = rest[1+rest[0]:]
	}
	if len(rest) != 0 || names[0] == "" || (names[1] == "" && !emptyOK) {
		return nil, "", errMalformed
	}
	if names[0] != pair {
		return nil, "", errWrongPair
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), b[len(b)-macLen:]) {
		return nil, "", errForged
	}
	return body[:fixedLen], names[1], nil
}

func parseRequest(b []byte, pair string, key []byte) (*request, error) {
	f, node, err := open(b, reqMagic, reqFixed, pair, key, false)
	if err != nil {
		return nil, err
	}
	r := &request{Op: f[5], Claim: f[6]&1 != 0, Pair: pair, Node: node}
	if r.Op < opAcquire || r.Op > opClearWriter || f[6]&^1 != 0 {
		return nil, errMalformed
	}
	copy(r.Nonce[:], f[8:24])
	copy(r.Boot[:], f[24:40])
	copy(r.Witness[:], f[40:56])
	copy(r.Challenge[:], f[56:72])
	r.HeldFor = time.Duration(min(binary.BigEndian.Uint64(f[72:80]), 1<<62))
	return r, nil
}

func parseReply(b []byte, pair string, key []byte) (*reply, error) {
	f, holder, err := open(b, replyMagic, replyFixed, pair, key, true)
	if err != nil {
		return nil, err
	}
	fl := f[6]
	r := &reply{Status: Status(f[5]), Quiet: fl&flagQuiet != 0, Writer: fl&flagWriter != 0, Outdated: fl&flagOutdated != 0, Pair: pair, Holder: holder}
	if r.Status < Granted || r.Status > Challenge || fl&^(flagQuiet|flagWriter|flagOutdated) != 0 || (r.Writer && r.Outdated) ||
		(r.Status == Challenge && fl != 0) {
		return nil, errMalformed
	}
	copy(r.Nonce[:], f[8:24])
	copy(r.Witness[:], f[24:40])
	copy(r.Challenge[:], f[40:56])
	r.Lease = time.Duration(min(binary.BigEndian.Uint64(f[56:64]), 1<<62))
	return r, nil
}
