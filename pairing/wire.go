package pairing

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// The wire format of every message: the protocol version, the message
// type, then a fixed number of fields per type, each with its length in
// front as in CPace's lv_cat (LEB128, shortest form only). Nothing may
// follow the last field, so each message has exactly one encoding.

const protoVersion = 1

type msgType byte

const (
	msgHello   msgType = 1 // initiator → responder
	msgShare   msgType = 2 // responder → initiator
	msgFinish  msgType = 3 // initiator → responder
	msgConfirm msgType = 4 // responder → initiator
	msgRecord  msgType = 5 // either way, after the key is confirmed
	msgAbort   msgType = 6 // either way
)

// MaxConfigSize bounds the site config pushed in one record.
const MaxConfigSize = 1 << 20

// Limits on fields.
const (
	sidLen          = 16
	maxVersionLen   = 128
	maxIDLen        = 64
	maxFPLen        = 64
	maxDetail       = 200
	recordOverhead  = 16 // AES-GCM tag
	maxLengthPrefix = 4  // LEB128 bytes: lengths below 2^28
)

type fieldSpec struct{ min, max int }

var (
	fVersion = fieldSpec{1, maxVersionLen}
	fID      = fieldSpec{1, maxIDLen}
	fFP      = fieldSpec{1, maxFPLen}
	fSid     = fieldSpec{sidLen, sidLen}
	fY       = fieldSpec{elementLen, elementLen}
	fTag     = fieldSpec{tagLen, tagLen}
	fByte    = fieldSpec{1, 1}
	fSeq     = fieldSpec{8, 8}
	fSealed  = fieldSpec{recordOverhead, MaxConfigSize + recordOverhead}
	fDetail  = fieldSpec{0, maxDetail}
)

var layouts = map[msgType][]fieldSpec{
	msgHello:   {fVersion, fID, fFP, fSid},
	msgShare:   {fVersion, fID, fFP, fSid, fY},
	msgFinish:  {fY, fTag},
	msgConfirm: {fTag},
	msgRecord:  {fByte, fSeq, fSealed},
	msgAbort:   {fByte, fDetail},
}

// hello opens a session (msgHello) and, with Y, answers it (msgShare).
type hello struct {
	version, id, fp, sid []byte
	y                    []byte // msgShare only
}

type finish struct{ y, tag []byte }

type record struct {
	kind   recordKind
	seq    uint64
	sealed []byte
}

type recordKind byte

// Record kinds, in the order they travel.
const (
	recStage     recordKind = 1 // initiator → responder: the site config
	recStaged    recordKind = 2 // responder → initiator: SHA-256 of what it staged
	recCommit    recordKind = 3 // initiator → responder: SHA-256 of the config to commit
	recCommitted recordKind = 4 // responder → initiator: SHA-256 of what it committed
)

func (k recordKind) String() string {
	switch k {
	case recStage:
		return "stage"
	case recStaged:
		return "staged"
	case recCommit:
		return "commit"
	case recCommitted:
		return "committed"
	}
	return fmt.Sprintf("record kind %d", byte(k))
}

type abortMsg struct {
	reason byte
	detail []byte
}

func encode(t msgType, fields ...[]byte) []byte {
	return appendLV([]byte{protoVersion, byte(t)}, fields...)
}

func (h hello) encode() []byte {
	if h.y != nil {
		return encode(msgShare, h.version, h.id, h.fp, h.sid, h.y)
	}
	return encode(msgHello, h.version, h.id, h.fp, h.sid)
}

func (f finish) encode() []byte { return encode(msgFinish, f.y, f.tag) }

func encodeConfirm(tag []byte) []byte { return encode(msgConfirm, tag) }

func (r record) encode() []byte {
	return encode(msgRecord, []byte{byte(r.kind)}, binary.BigEndian.AppendUint64(nil, r.seq), r.sealed)
}

func (a abortMsg) encode() []byte { return encode(msgAbort, []byte{a.reason}, a.detail) }

// parse splits a message into its type and fields, checking the layout
// of its type. The fields are copies: a transport may reuse b.
func parse(b []byte) (msgType, [][]byte, error) {
	if len(b) < 2 {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	if b[0] != protoVersion {
		return 0, nil, fmt.Errorf("%w: version %d, this head speaks %d", ErrProtocolVersion, b[0], protoVersion)
	}
	t := msgType(b[1])
	layout, ok := layouts[t]
	if !ok {
		return 0, nil, fmt.Errorf("%w: unknown message type %d", ErrMalformed, b[1])
	}
	rest := b[2:]
	fields := make([][]byte, len(layout))
	for i, spec := range layout {
		n, used, err := readLen(rest)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: field %d: %v", ErrMalformed, i, err)
		}
		rest = rest[used:]
		if n > len(rest) || n < spec.min || n > spec.max {
			return 0, nil, fmt.Errorf("%w: field %d: length %d (allowed %d to %d, %d bytes left)", ErrMalformed, i, n, spec.min, spec.max, len(rest))
		}
		fields[i], rest = bytes.Clone(rest[:n]), rest[n:]
	}
	if len(rest) > 0 {
		return 0, nil, fmt.Errorf("%w: %d bytes after the last field", ErrMalformed, len(rest))
	}
	return t, fields, nil
}

// readLen decodes a LEB128 length in its shortest form.
func readLen(b []byte) (n, used int, err error) {
	for i := 0; i < len(b) && i < maxLengthPrefix; i++ {
		n |= int(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if i > 0 && b[i] == 0 {
				return 0, 0, fmt.Errorf("length not in its shortest form")
			}
			return n, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("truncated or oversized length")
}

// decoded is one parsed message of any type.
type decoded struct {
	t      msgType
	hello  hello
	finish finish
	tag    []byte
	record record
	abort  abortMsg
}

func decode(b []byte) (decoded, error) {
	t, f, err := parse(b)
	if err != nil {
		return decoded{}, err
	}
	d := decoded{t: t}
	switch t {
	case msgHello:
		d.hello = hello{version: f[0], id: f[1], fp: f[2], sid: f[3]}
	case msgShare:
		d.hello = hello{version: f[0], id: f[1], fp: f[2], sid: f[3], y: f[4]}
	case msgFinish:
		d.finish = finish{y: f[0], tag: f[1]}
	case msgConfirm:
		d.tag = f[0]
	case msgRecord:
		d.record = record{kind: recordKind(f[0][0]), seq: binary.BigEndian.Uint64(f[1]), sealed: f[2]}
	case msgAbort:
		d.abort = abortMsg{reason: f[0][0], detail: f[1]}
	}
	return d, nil
}

// encodeDecoded is decode's inverse; the fuzz test holds them to it.
func (d decoded) encode() []byte {
	switch d.t {
	case msgHello, msgShare:
		return d.hello.encode()
	case msgFinish:
		return d.finish.encode()
	case msgConfirm:
		return encodeConfirm(d.tag)
	case msgRecord:
		return d.record.encode()
	case msgAbort:
		return d.abort.encode()
	}
	return nil
}
