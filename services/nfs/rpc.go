package nfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// A minimal ONC RPC (RFC 5531) client over TCP with AUTH_NONE: enough for
// the monitor's NULL calls and the portmapper's GETPORT (RFC 1833). XDR is
// written by hand; every item is a big-endian 32-bit word.

// RPC program numbers.
const (
	ProgPortmap = 100000
	ProgNFS     = 100003
	ProgMount   = 100005
	ProgNLM     = 100021
	ProgStatus  = 100024

	pmapGetPort = 3
	ipProtoTCP  = 6
)

// Typed RPC failures, so the monitor can tell "nfsd is gone" from "nfsd
// answers but not for this version".
var (
	ErrProgUnavail  = errors.New("program unavailable")
	ErrProcUnavail  = errors.New("procedure unavailable")
	ErrGarbageArgs  = errors.New("server could not decode arguments")
	ErrSystemErr    = errors.New("server system error")
	ErrDenied       = errors.New("call denied")
	ErrNotMapped    = errors.New("program not registered with the portmapper")
	ErrBadReply     = errors.New("malformed RPC reply")
	ErrProgMismatch = errors.New("program version mismatch")
)

// MismatchError reports the versions a server does support.
type MismatchError struct{ Low, High uint32 }

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%v: server supports %d-%d", ErrProgMismatch, e.Low, e.High)
}

func (e *MismatchError) Is(target error) bool { return target == ErrProgMismatch }

// maxReply bounds a reply; ours are tiny, a huge one is a broken peer.
const maxReply = 1 << 16

func putU32(b []byte, vs ...uint32) []byte {
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

// encodeCall builds one record-marked CALL message with AUTH_NONE.
func encodeCall(xid, prog, vers, proc uint32, args []byte) []byte {
	body := putU32(nil,
		xid, 0, // msg_type CALL
		2, // rpcvers
		prog, vers, proc,
		0, 0, // cred: AUTH_NONE, empty body
		0, 0, // verf: AUTH_NONE, empty body
	)
	body = append(body, args...)
	return append(putU32(nil, 0x80000000|uint32(len(body))), body...)
}

// readRecord reads one record (all its fragments).
func readRecord(r io.Reader) ([]byte, error) {
	var rec []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h & 0x7fffffff)
		if len(rec)+n > maxReply {
			return nil, fmt.Errorf("%w: record over %d bytes", ErrBadReply, maxReply)
		}
		frag := make([]byte, n)
		if _, err := io.ReadFull(r, frag); err != nil {
			return nil, err
		}
		rec = append(rec, frag...)
		if h&0x80000000 != 0 {
			return rec, nil
		}
	}
}

// decodeReply checks a REPLY for xid and returns its results.
func decodeReply(b []byte, xid uint32) ([]byte, error) {
	word := func() (uint32, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v := binary.BigEndian.Uint32(b)
		b = b[4:]
		return v, true
	}
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadReply, what) }
	x, ok1 := word()
	mtype, ok2 := word()
	stat, ok3 := word()
	switch {
	case !ok1 || !ok2 || !ok3:
		return nil, bad("short header")
	case x != xid:
		return nil, bad(fmt.Sprintf("xid %#x, want %#x", x, xid))
	case mtype != 1:
		return nil, bad("not a reply")
	case stat == 1: // MSG_DENIED: RPC_MISMATCH or AUTH_ERROR
		why, _ := word()
		return nil, fmt.Errorf("%w (reject_stat %d)", ErrDenied, why)
	case stat != 0:
		return nil, bad(fmt.Sprintf("reply_stat %d", stat))
	}
	if _, ok := word(); !ok { // verifier flavor
		return nil, bad("no verifier")
	}
	vlen, ok := word()
	if !ok || uint32(len(b)) < (vlen+3)&^3 {
		return nil, bad("verifier")
	}
	b = b[(vlen+3)&^3:]
	accept, ok := word()
	if !ok {
		return nil, bad("no accept_stat")
	}
	switch accept {
	case 0:
		return b, nil
	case 1:
		return nil, ErrProgUnavail
	case 2:
		lo, ok1 := word()
		hi, ok2 := word()
		if !ok1 || !ok2 {
			return nil, bad("mismatch info")
		}
		return nil, &MismatchError{Low: lo, High: hi}
	case 3:
		return nil, ErrProcUnavail
	case 4:
		return nil, ErrGarbageArgs
	case 5:
		return nil, ErrSystemErr
	}
	return nil, bad(fmt.Sprintf("accept_stat %d", accept))
}

// Call makes one RPC over a fresh TCP connection to addr ("host:port"),
// bounded by ctx.
func Call(ctx context.Context, addr string, prog, vers, proc uint32, args []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	// A cancelled ctx must interrupt a read the deadline has not ended.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	xid := rand.Uint32()
	if _, err := conn.Write(encodeCall(xid, prog, vers, proc, args)); err != nil {
		return nil, ctxErr(ctx, err)
	}
	rec, err := readRecord(conn)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return decodeReply(rec, xid)
}

func ctxErr(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The conn deadline is ctx's (or our default): a timeout.
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// Null calls procedure 0 of prog/vers: the cheapest proof that the
// service is registered and its threads answer.
func Null(ctx context.Context, addr string, prog, vers uint32) error {
	_, err := Call(ctx, addr, prog, vers, 0, nil)
	return err
}

// GetPort asks the portmapper on host (port 111) for prog/vers over TCP.
func GetPort(ctx context.Context, host string, prog, vers uint32) (uint16, error) {
	return getPortAt(ctx, net.JoinHostPort(host, "111"), prog, vers)
}

func getPortAt(ctx context.Context, pmap string, prog, vers uint32) (uint16, error) {
	res, err := Call(ctx, pmap, ProgPortmap, 2, pmapGetPort, putU32(nil, prog, vers, ipProtoTCP, 0))
	if err != nil {
		return 0, err
	}
	if len(res) < 4 {
		return 0, fmt.Errorf("%w: GETPORT result", ErrBadReply)
	}
	port := binary.BigEndian.Uint32(res)
	if port == 0 || port > 65535 {
		return 0, fmt.Errorf("%w: %d v%d", ErrNotMapped, prog, vers)
	}
	return uint16(port), nil
}
