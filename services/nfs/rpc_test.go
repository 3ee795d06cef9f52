package nfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"
)

// fakeRPC is a tiny ONC RPC server on 127.0.0.1: it decodes each CALL the
// way a real server would and answers through reply.
type fakeRPC struct {
	ln    net.Listener
	reply func(prog, vers, proc uint32, args []byte) (accept uint32, body []byte, denied bool)
	split bool // send the reply in two fragments
	mute  bool // read the call, never answer
}

func startFake(t *testing.T, f *fakeRPC) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(t, c)
		}
	}()
	return ln.Addr().String()
}

func (f *fakeRPC) serve(t *testing.T, c net.Conn) {
	defer c.Close()
	rec, err := readRecord(c)
	if err != nil {
		return
	}
	w := func(i int) uint32 { return binary.BigEndian.Uint32(rec[4*i:]) }
	if len(rec) < 40 || w(1) != 0 || w(2) != 2 || w(6) != 0 || w(8) != 0 {
		t.Errorf("malformed call %x", rec)
		return
	}
	if f.mute {
		time.Sleep(time.Second)
		return
	}
	xid, prog, vers, proc := w(0), w(3), w(4), w(5)
	accept, body, denied := f.reply(prog, vers, proc, rec[40:])
	var msg []byte
	if denied {
		msg = putU32(nil, xid, 1, 1, 1) // MSG_DENIED, AUTH_ERROR
	} else {
		msg = putU32(nil, xid, 1, 0, 0, 4, 0xdeadbeef) // accepted, 4-byte verifier
		msg = putU32(msg, accept)
		msg = append(msg, body...)
	}
	if f.split {
		half := len(msg) / 2
		c.Write(append(putU32(nil, uint32(half)), msg[:half]...))
		c.Write(append(putU32(nil, 0x80000000|uint32(len(msg)-half)), msg[half:]...))
		return
	}
	c.Write(append(putU32(nil, 0x80000000|uint32(len(msg))), msg...))
}

// nfsLike serves NFS v3/v4 and a portmapper that maps mountd.
func nfsLike(mountPort uint32) func(prog, vers, proc uint32, args []byte) (uint32, []byte, bool) {
	return func(prog, vers, proc uint32, args []byte) (uint32, []byte, bool) {
		switch prog {
		case ProgNFS:
			if vers < 3 || vers > 4 {
				return 2, putU32(nil, 3, 4), false
			}
			if proc != 0 {
				return 3, nil, false
			}
			return 0, nil, false
		case ProgPortmap:
			if proc != pmapGetPort || len(args) != 16 {
				return 4, nil, false
			}
			p, v, proto := binary.BigEndian.Uint32(args), binary.BigEndian.Uint32(args[4:]), binary.BigEndian.Uint32(args[8:])
			if p == ProgMount && v == 3 && proto == ipProtoTCP {
				return 0, putU32(nil, mountPort), false
			}
			return 0, putU32(nil, 0), false
		case 999:
			return 0, nil, true
		}
		return 1, nil, false
	}
}

func TestEncodeCallBytes(t *testing.T) {
	got := encodeCall(0x01020304, ProgNFS, 3, 0, nil)
	want := putU32(nil, 0x80000028, 0x01020304, 0, 2, 100003, 3, 0, 0, 0, 0, 0)
	if !bytes.Equal(got, want) {
		t.Errorf("\n got %x\nwant %x", got, want)
	}
}

func TestNullAndGetPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, split := range []bool{false, true} {
		addr := startFake(t, &fakeRPC{reply: nfsLike(20048), split: split})
		if err := Null(ctx, addr, ProgNFS, 3); err != nil {
			t.Fatalf("NFSv3 NULL (split %v): %v", split, err)
		}
		var me *MismatchError
		err := Null(ctx, addr, ProgNFS, 2)
		if !errors.As(err, &me) || !errors.Is(err, ErrProgMismatch) || me.Low != 3 || me.High != 4 {
			t.Errorf("NFSv2: %v", err)
		}
		if err := Null(ctx, addr, ProgMount, 3); !errors.Is(err, ErrProgUnavail) {
			t.Errorf("unregistered program: %v", err)
		}
		if _, err := Call(ctx, addr, ProgNFS, 3, 7, nil); !errors.Is(err, ErrProcUnavail) {
			t.Errorf("bad procedure: %v", err)
		}
		if err := Null(ctx, addr, 999, 1); !errors.Is(err, ErrDenied) {
			t.Errorf("denied: %v", err)
		}
	}
}

func TestGetPortViaPortmapper(t *testing.T) {
	// The portmapper lives on 111, which a test cannot bind; call it
	// through Call on the fake's port the way GetPort does.
	addr := startFake(t, &fakeRPC{reply: nfsLike(20048)})
	ctx := context.Background()
	res, err := Call(ctx, addr, ProgPortmap, 2, pmapGetPort, putU32(nil, ProgMount, 3, ipProtoTCP, 0))
	if err != nil || binary.BigEndian.Uint32(res) != 20048 {
		t.Fatalf("GETPORT mountd: %x %v", res, err)
	}
	port, err := getPortAt(ctx, addr, ProgMount, 3)
	if err != nil || port != 20048 {
		t.Fatalf("getPortAt: %d %v", port, err)
	}
	if _, err := getPortAt(ctx, addr, ProgStatus, 1); !errors.Is(err, ErrNotMapped) {
		t.Errorf("unmapped: %v", err)
	}
}

func TestCallTimeoutAndRefused(t *testing.T) {
	addr := startFake(t, &fakeRPC{mute: true, reply: nfsLike(0)})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := Null(ctx, addr, ProgNFS, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("mute server: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("the deadline did not bound the call")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := Null(context.Background(), "127.0.0.1:"+strconv.Itoa(port), ProgNFS, 3); err == nil {
		t.Error("closed port answered")
	}
}

func TestDecodeReplyRejectsGarbage(t *testing.T) {
	cases := [][]byte{
		nil,
		putU32(nil, 7, 1, 0),             // wrong xid
		putU32(nil, 1, 0, 0),             // a CALL, not a REPLY
		putU32(nil, 1, 1, 0, 0, 100),     // verifier longer than the message
		putU32(nil, 1, 1, 0, 0, 0, 9),    // unknown accept_stat
		putU32(nil, 1, 1, 0, 0, 0, 2, 3), // mismatch without high
	}
	for i, b := range cases {
		if _, err := decodeReply(b, 1); err == nil {
			t.Errorf("case %d decoded", i)
		}
	}
}
