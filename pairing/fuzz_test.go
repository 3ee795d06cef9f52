package pairing

import (
	"bytes"
	"context"
	"testing"
)

// FuzzMessages: any bytes, as any message, give an error or a message
// that re-encodes to the same bytes; neither role panics on them.
func FuzzMessages(f *testing.F) {
	codes, err := NewCodes(CodeOptions{Rand: codeReader(1, resCode)})
	if err != nil {
		f.Fatal(err)
	}
	ref := newPairF(f, codes).run(passThrough)
	for _, m := range ref.msgs {
		f.Add(m)
	}
	f.Add(abortMsg{reason: 6, detail: []byte("x")}.encode())
	f.Add([]byte{1, 1, 0x80, 0x00})

	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decode(b)
		if err == nil && !bytes.Equal(d.encode(), b) {
			t.Fatalf("%x decodes and re-encodes to %x", b, d.encode())
		}
		codes, _ := NewCodes(CodeOptions{Rand: codeReader(2, resCode)})
		res, _ := NewResponder(resCfg, codes, &store{})
		res.Handle(context.Background(), b)
		ini, _ := NewInitiator(iniCfg, "31415926")
		ini.Hello()
		if _, err := ini.HandleShare(b); err == nil {
			ini.HandleConfirm(b)
		}
	})
}

func newPairF(f *testing.F, codes *Codes) pair {
	ini, err := NewInitiator(iniCfg, "31415926")
	if err != nil {
		f.Fatal(err)
	}
	res, err := NewResponder(resCfg, codes, &store{})
	if err != nil {
		f.Fatal(err)
	}
	return pair{ini, res, res.store.(*store)}
}

func TestDecodeRejects(t *testing.T) {
	hello := hello{version: []byte("v"), id: []byte("a"), fp: []byte("f"), sid: make([]byte, sidLen)}.encode()
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"unknown type", []byte{protoVersion, 99}},
		{"trailing byte", append(bytes.Clone(hello), 0)},
		{"truncated", hello[:len(hello)-1]},
		{"long length prefix", []byte{protoVersion, byte(msgConfirm), 0xc0, 0x00}},
		{"oversized length", []byte{protoVersion, byte(msgConfirm), 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{"sid too short", encode(msgHello, []byte("v"), []byte("a"), []byte("f"), make([]byte, sidLen-1))},
		{"empty ID", encode(msgHello, []byte("v"), nil, []byte("f"), make([]byte, sidLen))},
	}
	for _, tc := range tests {
		if _, err := decode(tc.msg); err == nil {
			t.Errorf("%s: decoded", tc.name)
		}
	}
	if _, err := decode(hello); err != nil {
		t.Errorf("a good hello: %v", err)
	}
}

// TestMessagesCopied: a transport that reuses its buffer after a step
// must not change what the session kept.
func TestMessagesCopied(t *testing.T) {
	ctx := context.Background()
	codes, _ := newCodes(t, resCode, nil)
	p := newPair(t, iniCfg, resCfg, codes, "31415926")
	hello, _ := p.ini.Hello()
	share, _ := p.res.Handle(ctx, hello)
	clear(hello)
	fin, err := p.ini.HandleShare(share)
	if err != nil {
		t.Fatal(err)
	}
	clear(share)
	conf, err := p.res.Handle(ctx, fin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ini.HandleConfirm(conf); err != nil {
		t.Errorf("after the buffers were reused: %v", err)
	}
}
