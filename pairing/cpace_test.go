package pairing

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/cloudflare/circl/group"
)

// vectors are the draft's published values; see "source" in the file.
type vectors struct {
	Source string            `json:"source"`
	Suite  map[string]string `json:"ristretto255_sha512"`
	Prep   []struct {
		In  string `json:"in"`
		Out string `json:"out"`
	} `json:"prepend_len"`
	LVCat struct {
		In  []string `json:"in"`
		Out string   `json:"out"`
	} `json:"lv_cat"`
	Transcript []struct {
		Ya, ADa, Yb, ADb, Out string
	} `json:"transcript_ir"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/cpace-ristretto255-sha512.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.Source == "" || len(v.Suite) == 0 {
		t.Fatal("test vector file without source or suite values")
	}
	return v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func scalarFrom(t *testing.T, le []byte) group.Scalar {
	t.Helper()
	s := group.Ristretto255.NewScalar()
	if err := s.UnmarshalBinary(le); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCPaceStringVectors(t *testing.T) {
	v := loadVectors(t)
	for _, tc := range v.Prep {
		if got := hex.EncodeToString(prependLen(unhex(t, tc.In))); got != tc.Out {
			t.Errorf("prepend_len(%d bytes) = %s, want %s", len(tc.In)/2, got, tc.Out)
		}
	}
	var parts [][]byte
	for _, p := range v.LVCat.In {
		parts = append(parts, unhex(t, p))
	}
	if got := hex.EncodeToString(lvCat(parts...)); got != v.LVCat.Out {
		t.Errorf("lv_cat = %s, want %s", got, v.LVCat.Out)
	}
	for _, tc := range v.Transcript {
		got := hex.EncodeToString(transcriptIR(unhex(t, tc.Ya), unhex(t, tc.ADa), unhex(t, tc.Yb), unhex(t, tc.ADb)))
		if got != tc.Out {
			t.Errorf("transcript_ir = %s, want %s", got, tc.Out)
		}
	}
}

// TestCPaceRistretto255Vectors replays the draft's run for the suite:
// generator, both messages, K from both sides, the ISK input and ISK.
func TestCPaceRistretto255Vectors(t *testing.T) {
	v := loadVectors(t).Suite
	x := func(k string) []byte {
		s, ok := v[k]
		if !ok {
			t.Fatalf("vector %q missing", k)
		}
		return unhex(t, s)
	}
	prs, ci, sid := x("PRS"), x("CI"), x("sid")

	genStr := generatorString([]byte(cpaceDSI), prs, ci, sid, sInBytes)
	h := sha512.Sum512(genStr)
	g, err := calculateGenerator(prs, ci, sid).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ya, yb := scalarFrom(t, x("ya")), scalarFrom(t, x("yb"))
	gen := calculateGenerator(prs, ci, sid)
	bigYa, bigYb := scalarMult(ya, gen), scalarMult(yb, gen)
	ka, errA := scalarMultVfy(ya, bigYb)
	kb, errB := scalarMultVfy(yb, bigYa)
	if errA != nil || errB != nil {
		t.Fatalf("scalar_mult_vfy: %v, %v", errA, errB)
	}
	ada, adb := x("ADa"), x("ADb")

	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"generator_string", genStr, x("generator_string")},
		{"generator hash", h[:], x("generator_hash")},
		{"g", g, x("g")},
		{"Ya", bigYa, x("Ya")},
		{"Yb", bigYb, x("Yb")},
		{"K (A)", ka, x("K")},
		{"K (B)", kb, x("K")},
		{"transcript_ir", transcriptIR(bigYa, ada, bigYb, adb), x("transcript_ir")},
		{"ISK input", iskInput(sid, ka, bigYa, ada, bigYb, adb), x("isk_input")},
		{"ISK_IR", deriveISK(sid, ka, bigYa, ada, bigYb, adb), x("ISK_IR")},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
		}
	}
}

func TestCPaceScalarMultVfy(t *testing.T) {
	v := loadVectors(t).Suite
	s := scalarFrom(t, unhex(t, v["mult_s"]))
	got, err := scalarMultVfy(s, unhex(t, v["mult_X"]))
	if err != nil || hex.EncodeToString(got) != v["mult_sX"] {
		t.Errorf("scalar_mult_vfy(s, X) = %x, %v; want %s", got, err, v["mult_sX"])
	}
	for _, tc := range []struct {
		name string
		x    []byte
		want error
	}{
		{"draft Y_i1 (does not decode)", unhex(t, v["invalid_Y1"]), errInvalidPoint},
		{"draft Y_i2 (G.I)", unhex(t, v["invalid_Y2"]), errIdentity},
		{"short", unhex(t, v["mult_X"])[:31], errInvalidPoint},
		{"non-canonical (all ones)", bytes.Repeat([]byte{0xff}, 32), errInvalidPoint},
	} {
		if _, err := scalarMultVfy(s, tc.x); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSampleScalar(t *testing.T) {
	// All ones in: the high bits must be cleared, or the strict decode
	// would refuse the value.
	s, err := sampleScalar(bytes.NewReader(bytes.Repeat([]byte{0xff}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.MarshalBinary()
	if b[31] != 0x0f {
		t.Errorf("top byte %#x, want 0x0f", b[31])
	}
	// A zero draw is drawn again.
	in := append(make([]byte, 32), bytes.Repeat([]byte{1}, 32)...)
	s, err = sampleScalar(bytes.NewReader(in))
	if err != nil || s.IsZero() {
		t.Errorf("zero draw: %v, %v", s, err)
	}
	if _, err := sampleScalar(bytes.NewReader(nil)); err == nil {
		t.Error("no randomness: want an error")
	}
}
