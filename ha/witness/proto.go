package witness

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"tandem.dev/tandem/ha"
)

// Wire format, version 1, big-endian; every message is one UDP datagram
// ending in an HMAC-SHA256 with the pair key over all bytes before it.
//
// Request (head -> witness):
//
//	off size field
//	  0    4 magic "TDWQ"
//	  4    1 version (1)
//	  5    1 op: 1 acquire (or renew), 2 release, 3 outdate peer ("I hold
//	         the lease and write alone: record that only my data is
//	         current"; renews the lease), 4 clear writer ("my peer is
//	         current again")
//	  6    1 flags: bit 0 "I hold a lease": the client's own, conservative
//	         view; it matters only during the witness's quiet period
//	  7    1 zero
//	  8   16 nonce: random per attempt; the reply must echo it
//	 24   16 client boot ID (random per client start)
//	 40    8 sequence number, +1 per attempt within a boot
//	 48    8 lease the client believes it has left, ns (informational)
//	 56  1+n pair name
//	  .  1+n node name
//	  .   32 HMAC
//
// Reply (witness -> head):
//
//	off size field
//	  0    4 magic "TDWA"
//	  4    1 version (1)
//	  5    1 status: 1 granted, 2 denied, 3 released
//	  6    1 flags: bit 0 the witness is in its quiet period; bit 1 the
//	         witness records the requester as the only node with current
//	         data; bit 2 it records the OTHER node so: the requester's
//	         data is outdated (bits 1 and 2 never both)
//	  7    1 zero
//	  8   16 nonce of the request
//	 24   16 witness boot ID (random per witness start)
//	 40    8 ns: granted: the lease length; denied: how long the holder's
//	         lease (or the quiet period) still runs, 0 if unknown
//	 48  1+n pair name
//	  .  1+n holder's node name ("" if none)
//	  .   32 HMAC
//
// The two magics differ, so a request can never pass for a reply or a
// heartbeat (which uses "TDHB") and back.
const (
	reqMagic   = "TDWQ"
	replyMagic = "TDWA"
	version    = 1
	reqFixed   = 56
	replyFixed = 48
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
)

func (s Status) String() string {
	switch s {
	case Granted:
		return "granted"
	case Denied:
		return "denied"
	case Released:
		return "released"
	}
	return "unknown"
}

// ID is a random 16-byte identifier (boot IDs, nonces).
type ID [16]byte

type request struct {
	Op      uint8
	Claim   bool
	Nonce   ID
	Boot    ID
	Seq     uint64
	HeldFor time.Duration
	Pair    string
	Node    string
}

type reply struct {
	Status Status
	Quiet  bool
	// Writer: the witness records the requester as the only node with
	// current data; Outdated: it records the other node so.
	Writer   bool
	Outdated bool
	Nonce    ID
	Witness  ID
	Lease    time.Duration
	Pair     string
	Holder   string
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
	b = binary.BigEndian.AppendUint64(b, r.Seq)
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
	r.Seq = binary.BigEndian.Uint64(f[40:])
	r.HeldFor = time.Duration(min(binary.BigEndian.Uint64(f[48:56]), 1<<62))
	return r, nil
}

func parseReply(b []byte, pair string, key []byte) (*reply, error) {
	f, holder, err := open(b, replyMagic, replyFixed, pair, key, true)
	if err != nil {
		return nil, err
	}
	fl := f[6]
	r := &reply{Status: Status(f[5]), Quiet: fl&flagQuiet != 0, Writer: fl&flagWriter != 0, Outdated: fl&flagOutdated != 0, Pair: pair, Holder: holder}
	if r.Status < Granted || r.Status > Released || fl&^(flagQuiet|flagWriter|flagOutdated) != 0 || (r.Writer && r.Outdated) {
		return nil, errMalformed
	}
	copy(r.Nonce[:], f[8:24])
	copy(r.Witness[:], f[24:40])
	r.Lease = time.Duration(min(binary.BigEndian.Uint64(f[40:48]), 1<<62))
	return r, nil
}
