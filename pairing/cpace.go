package pairing

// CPace, cipher suite CPACE-RISTR255-SHA512, as specified in
// draft-irtf-cfrg-cpace-21 (IRTF CFRG, "CPace, a balanced composable
// PAKE"), sections 4 to 6 and appendix A. Names follow the draft. The
// group is circl's Ristretto255; the element derivation (RFC 9496's
// one-way map from 64 uniform bytes), which circl's group API only
// offers behind expand_message_xmd, is go-ristretto's Elligator map, the
// same call circl's HashToElement makes.

import (
	"crypto/hmac"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"

	r255 "github.com/bwesterb/go-ristretto"
	"github.com/cloudflare/circl/group"
)

const (
	cpaceDSI   = "CPaceRistretto255" // G_Ristretto255.DSI
	sInBytes   = 128                 // H.s_in_bytes of SHA-512
	elementLen = 32                  // encoded ristretto255 element
	tagLen     = sha512.Size         // HMAC-SHA512
)

var (
	errInvalidPoint = errors.New("not the encoding of a ristretto255 element")
	errIdentity     = errors.New("the neutral element")
)

// prependLen is the draft's prepend_len: data with its length in
// LEB128 in front.
func prependLen(data []byte) []byte {
	return appendLV(nil, data)
}

// appendLV appends prepend_len(p) for each p to dst.
func appendLV(dst []byte, parts ...[]byte) []byte {
	for _, p := range parts {
		n := len(p)
		for n >= 0x80 {
			dst = append(dst, byte(n&0x7f)|0x80)
			n >>= 7
		}
		dst = append(dst, byte(n))
		dst = append(dst, p...)
	}
	return dst
}

// lvCat is the draft's lv_cat.
func lvCat(parts ...[]byte) []byte {
	return appendLV(nil, parts...)
}

// generatorString is the draft's generator_string: the zero padding
// fills the first hash block after DSI and PRS, so that the number of
// bytes hashed does not depend on the length of a short PRS.
func generatorString(dsi, prs, ci, sid []byte, sInBytes int) []byte {
	zpad := max(0, sInBytes-1-len(prependLen(prs))-len(prependLen(dsi)))
	return lvCat(dsi, prs, make([]byte, zpad), ci, sid)
}

// calculateGenerator is G_Ristretto255.calculate_generator with SHA-512.
func calculateGenerator(prs, ci, sid []byte) group.Element {
	h := sha512.Sum512(generatorString([]byte(cpaceDSI), prs, ci, sid, sInBytes))
	return elementDerivation(&h)
}

// elementDerivation is RFC 9496's element derivation from 64 uniform
// bytes: the sum of the one-way map of each half.
func elementDerivation(b *[64]byte) group.Element {
	var half [32]byte
	var p0, p1 r255.Point
	copy(half[:], b[:32])
	p0.SetElligator(&half)
	copy(half[:], b[32:])
	p1.SetElligator(&half)
	p0.Add(&p0, &p1)
	e := group.Ristretto255.NewElement()
	if err := e.UnmarshalBinary(p0.Bytes()); err != nil {
		panic("pairing: a ristretto255 encoding did not decode: " + err.Error()) // cannot happen
	}
	return e
}

// sampleScalar is G.sample_scalar as the draft recommends: 32 random
// bytes with the bits above group_size_bits (252) cleared, read little
// endian. Zero (probability 2^-252) is drawn again.
func sampleScalar(r io.Reader) (group.Scalar, error) {
	for {
		var b [32]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("sample scalar: %w", err)
		}
		b[31] &= 0x0f
		s := group.Ristretto255.NewScalar()
		if err := s.UnmarshalBinary(b[:]); err != nil {
			return nil, fmt.Errorf("sample scalar: %w", err) // < 2^252 < order: cannot happen
		}
		if !s.IsZero() {
			return s, nil
		}
	}
}

// scalarMult is G.scalar_mult: encode(y*g).
func scalarMult(y group.Scalar, g group.Element) []byte {
	b, err := group.Ristretto255.NewElement().Mul(g, y).MarshalBinary()
	if err != nil {
		panic("pairing: encode ristretto255 element: " + err.Error()) // cannot happen
	}
	return b
}

// scalarMultVfy is G.scalar_mult_vfy followed by the draft's abort
// check: an X that does not decode, or a result that is the neutral
// element G.I, is an error instead of G.I.
func scalarMultVfy(y group.Scalar, x []byte) ([]byte, error) {
	if len(x) != elementLen {
		return nil, errInvalidPoint
	}
	e := group.Ristretto255.NewElement()
	if err := e.UnmarshalBinary(x); err != nil {
		return nil, errInvalidPoint
	}
	k := group.Ristretto255.NewElement().Mul(e, y)
	if k.IsIdentity() {
		return nil, errIdentity
	}
	return k.MarshalBinary()
}

// transcriptIR is the draft's transcript_ir (initiator-responder
// setting): party A's message first.
func transcriptIR(ya, ada, yb, adb []byte) []byte {
	return appendLV(lvCat(ya, ada), yb, adb)
}

// iskInput is lv_cat(G.DSI || "_ISK", sid, K) || transcript_ir(...).
func iskInput(sid, k, ya, ada, yb, adb []byte) []byte {
	return append(lvCat([]byte(cpaceDSI+"_ISK"), sid, k), transcriptIR(ya, ada, yb, adb)...)
}

// deriveISK is the draft's ISK = H.hash(iskInput).
func deriveISK(sid, k, ya, ada, yb, adb []byte) []byte {
	h := sha512.Sum512(iskInput(sid, k, ya, ada, yb, adb))
	return h[:]
}

// macKey is the draft's key confirmation key (section "Key
// confirmation"): H.hash(b"CPaceMac" || sid || ISK).
func macKey(sid, isk []byte) []byte {
	h := sha512.New()
	h.Write([]byte("CPaceMac"))
	h.Write(sid)
	h.Write(isk)
	return h.Sum(nil)
}

// confirmTag is a party's key confirmation tag over the message it
// sent: MAC(mac_key, lv_cat(Y, AD)), with HMAC-SHA512 as the MAC.
func confirmTag(key, y, ad []byte) []byte {
	m := hmac.New(sha512.New, key)
	m.Write(lvCat(y, ad))
	return m.Sum(nil)
}
