package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"tandem.dev/tandem/ha"
)

// Wire format, version 1 (big-endian):
//
//	off  size  field
//	  0     4  magic "TDHB"
//	  4     1  version (1)
//	  5     1  role (0 none, 1 standby, 2 active)
//	  6     1  flags (bit 0: the sender holds the witness vote; bit 1:
//	           its DRBD metadata marks its disk Outdated)
//	  7     1  path index the sender sent this copy on (informational)
//	  8    16  boot ID: random, new every time the sender starts
//	 24     8  sequence number: one counter per boot, +1 for every packet
//	 32     8  tick: +1 per send round; the copies of one round on the
//	           different paths share it (per-path loss)
//	 40     8  send time: the sender's wall clock, Unix ns (informational:
//	           no safety rule reads it, the heads' clocks need not agree)
//	 48     8  epoch: the sender's generation counter
//	 56    16  echo boot: boot ID of the newest packet the sender accepted
//	           from us (zero: none yet)
//	 72     8  echo seq: that packet's sequence number
//	 80     4  echo hold: µs between the sender receiving that packet and
//	           sending this one (lets us compute the round trip)
//	 84   1+n  pair name (n <= 63)
//	  .   1+n  sender node name (n <= 63)
//	  .   1+n  DRBD disk state of the sender (n <= 32)
//	  .    32  HMAC-SHA256 with the pair key over every byte before it
const (
	magic      = "TDHB"
	version    = 1
	fixedLen   = 84
	macLen     = sha256.Size
	maxDiskLen = 32
	minPacket  = fixedLen + 3 + macLen
	// MaxPacket bounds a packet; anything longer is malformed.
	MaxPacket = fixedLen + 3 + 2*ha.MaxNameLen + maxDiskLen + macLen
)

// BootID identifies one run of a sender; a new random one every start.
type BootID [16]byte

// IsZero reports whether id is unset.
func (id BootID) IsZero() bool { return id == BootID{} }

func (id BootID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText renders the ID as hex, for status JSON.
func (id BootID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// packet is one decoded heartbeat.
type packet struct {
	Role      ha.Role
	HoldsVote bool
	Outdated  bool
	Path      uint8
	Boot      BootID
	Seq       uint64
	Tick      uint64
	SentUnix  int64
	Epoch     uint64
	EchoBoot  BootID
	EchoSeq   uint64
	EchoHold  uint32 // µs
	Pair      string
	Node      string
	Disk      string
}

var roleCodes = map[ha.Role]byte{ha.None: 0, ha.Standby: 1, ha.Active: 2}

// appendPacket encodes p and appends its MAC under key.
func appendPacket(b []byte, p *packet, key []byte) ([]byte, error) {
	code, ok := roleCodes[p.Role]
	if !ok {
		return nil, fmt.Errorf("heartbeat: unknown role %q", p.Role)
	}
	if len(p.Pair) == 0 || len(p.Pair) > ha.MaxNameLen || len(p.Node) == 0 || len(p.Node) > ha.MaxNameLen || len(p.Disk) > maxDiskLen {
		return nil, fmt.Errorf("heartbeat: pair %q, node %q or disk %q too long or empty", p.Pair, p.Node, p.Disk)
	}
	start := len(b)
	b = append(b, magic...)
	var flags byte
	if p.HoldsVote {
		flags |= 1
	}
	if p.Outdated {
		flags |= 2
	}
	b = append(b, version, code, flags, p.Path)
	b = append(b, p.Boot[:]...)
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint64(b, p.Tick)
	b = binary.BigEndian.AppendUint64(b, uint64(p.SentUnix))
	b = binary.BigEndian.AppendUint64(b, p.Epoch)
	b = append(b, p.EchoBoot[:]...)
	b = binary.BigEndian.AppendUint64(b, p.EchoSeq)
	b = binary.BigEndian.AppendUint32(b, p.EchoHold)
	for _, s := range []string{p.Pair, p.Node, p.Disk} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	m := hmac.New(sha256.New, key)
	m.Write(b[start:])
	return m.Sum(b), nil
}

// Errors of parsePacket, one per drop counter.
var (
	errMalformed = errors.New("malformed")
	errWrongPair = errors.New("wrong pair")
	errForged    = errors.New("bad MAC")
)

// parsePacket checks and decodes b: structure and version first
// (errMalformed), then the pair name (errWrongPair: another pair's
// heartbeat, most likely a cabling or config mistake), then the MAC
// (errForged). Only a packet that passes all three is returned.
func parsePacket(b []byte, pair string, key []byte) (*packet, error) {
	if len(b) < minPacket || len(b) > MaxPacket || string(b[:4]) != magic || b[4] != version {
		return nil, errMalformed
	}
	p := &packet{Path: b[7], HoldsVote: b[6]&1 != 0, Outdated: b[6]&2 != 0}
	if b[6]&^3 != 0 {
		return nil, errMalformed
	}
	switch b[5] {
	case 0:
		p.Role = ha.None
	case 1:
		p.Role = ha.Standby
	case 2:
		p.Role = ha.Active
	default:
		return nil, errMalformed
	}
	copy(p.Boot[:], b[8:24])
	p.Seq = binary.BigEndian.Uint64(b[24:])
	p.Tick = binary.BigEndian.Uint64(b[32:])
	p.SentUnix = int64(binary.BigEndian.Uint64(b[40:]))
	p.Epoch = binary.BigEndian.Uint64(b[48:])
	copy(p.EchoBoot[:], b[56:72])
	p.EchoSeq = binary.BigEndian.Uint64(b[72:])
	p.EchoHold = binary.BigEndian.Uint32(b[80:])
	body := b[:len(b)-macLen]
	rest := body[fixedLen:]
	var strs [3]string
	for i, max := range []int{ha.MaxNameLen, ha.MaxNameLen, maxDiskLen} {
		if len(rest) < 1 {
			return nil, errMalformed
		}
		n := int(rest[0])
		if n > max || len(rest) < 1+n {
			return nil, errMalformed
		}
		strs[i] = string(rest[1 : 1+n])
		rest = rest[1+n:]
	}
	if len(rest) != 0 || strs[0] == "" || strs[1] == "" || p.Boot.IsZero() {
		return nil, errMalformed
	}
	p.Pair, p.Node, p.Disk = strs[0], strs[1], strs[2]
	if p.Pair != pair {
		return nil, errWrongPair
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), b[len(b)-macLen:]) {
		return nil, errForged
	}
	return p, nil
}
