package pairing

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func TestNormalizeCode(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"31415926", "31415926", nil},
		{"3141 5926", "31415926", nil},
		{" 3141-5926 ", "31415926", nil},
		{"3141592", "", ErrCodeFormat},
		{"314159260", "", ErrCodeFormat},
		{"3141592a", "", ErrCodeFormat},
		{"３１４１５９２６", "", ErrCodeFormat}, // full-width digits
		{"", "", ErrCodeFormat},
	}
	for _, tc := range tests {
		got, err := NormalizeCode(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("NormalizeCode(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestNewCode(t *testing.T) {
	var b bytes.Buffer
	// 99999999 < 2^27 is kept; 0x07ffffff ≥ 10^8 is drawn again; the top
	// five bits are not part of the code.
	for _, v := range []uint32{0x07ffffff, 0xf8000000 | 42, 99999999} {
		binary.Write(&b, binary.BigEndian, v)
	}
	for _, want := range []string{"00000042", "99999999"} {
		got, err := newCode(&b)
		if err != nil || got != want {
			t.Errorf("newCode = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := newCode(&b); err == nil {
		t.Error("no randomness left: want an error")
	}
}

// TestCheck: the code typed into a head's own wizard.
func TestCheck(t *testing.T) {
	clk := newClock()
	codes, ann := newCodes(t, resCode, clk)
	steps := []struct {
		name    string
		advance time.Duration
		typed   string
		want    error
		issued  int // codes issued so far
		left    int // wrong attempts left, for a wrong code
	}{
		{"right", 0, "3141-5926", nil, 1, 0},
		{"right again: not used up by the wizard", 0, "31415926", nil, 1, 0},
		{"malformed: not counted", 0, "1234", ErrCodeFormat, 1, 0},
		{"wrong 1", 0, "00000001", ErrWrongCode, 1, 4},
		{"wrong 2", 0, "00000002", ErrWrongCode, 1, 3},
		{"wrong 3", 0, "00000003", ErrWrongCode, 1, 2},
		{"wrong 4", 0, "00000004", ErrWrongCode, 1, 1},
		{"wrong 5 burns", 0, "00000005", ErrCodeBurned, 2, 0},
		{"the burned code", 0, "31415926", ErrWrongCode, 2, 4},
		{"expired", DefaultCodeTTL, "31415926", ErrCodeExpired, 3, 0},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		err := codes.Check(s.typed)
		if !errors.Is(err, s.want) {
			t.Errorf("%s: %v, want %v", s.name, err, s.want)
		}
		// A wrong code says how many more burn it.
		var wc *WrongCodeError
		if errors.As(err, &wc) != (s.left > 0) || (wc != nil && wc.Left != s.left) {
			t.Errorf("%s: %#v, want %d attempts left", s.name, err, s.left)
		}
		if n := len(ann.list()); n != s.issued {
			t.Errorf("%s: %d codes issued, want %d", s.name, n, s.issued)
		}
	}
	fresh := ann.list()[2]
	if err := codes.Check(fresh); err != nil {
		t.Errorf("the newest code: %v", err)
	}
	codes.Retire()
	if err := codes.Check(fresh); !errors.Is(err, ErrCodeUsed) {
		t.Errorf("after Retire: %v, want ErrCodeUsed", err)
	}
	if _, _, err := codes.Current(); !errors.Is(err, ErrCodeUsed) {
		t.Errorf("Current after Retire: %v", err)
	}
}

func TestCodeExpiry(t *testing.T) {
	clk := newClock()
	codes, ann := newCodes(t, resCode, clk)
	code, exp, _ := codes.Current()
	if code != "31415926" || !exp.Equal(clk.Now().Add(10*time.Minute)) {
		t.Fatalf("Current = %s, %v", code, exp)
	}
	clk.Advance(10*time.Minute - time.Second)
	if c, _, _ := codes.Current(); c != code {
		t.Errorf("replaced before its time")
	}

	t.Run("a pairing with an expired code", func(t *testing.T) {
		clk.Advance(time.Second)
		o := newPair(t, iniCfg, resCfg, codes, code).run(passThrough)
		if !errors.Is(o.rErr, ErrCodeExpired) || !errors.Is(o.iErr, ErrCodeExpired) {
			t.Errorf("initiator: %v; responder: %v; want ErrCodeExpired", o.iErr, o.rErr)
		}
		if n := len(ann.list()); n != 2 {
			t.Errorf("%d codes issued, want 2", n)
		}
	})
	t.Run("the code expires during the session", func(t *testing.T) {
		next := ann.list()[1]
		p := newPair(t, iniCfg, resCfg, codes, next)
		ctx := context.Background()
		hello, _ := p.ini.Hello()
		share, _ := p.res.Handle(ctx, hello)
		fin, _ := p.ini.HandleShare(share)
		clk.Advance(DefaultCodeTTL)
		if _, err := p.res.Handle(ctx, fin); !errors.Is(err, ErrCodeExpired) {
			t.Errorf("responder: %v, want ErrCodeExpired", err)
		}
		noKey(t, "responder", p.res)
	})
}

// TestCodeBurnedDuringSession: sessions started on a code that is
// burned before they finish pair nothing, even with the right code, so
// no code ever serves more than 5 guesses, however many sessions are
// open at once.
func TestCodeBurnedDuringSession(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		burn func(t *testing.T, codes *Codes)
	}{
		{"five wrong codes in the wizard", func(t *testing.T, codes *Codes) {
			for range 5 {
				codes.Check("00000000")
			}
		}},
		{"five more sessions opened", func(t *testing.T, codes *Codes) {
			for range 5 {
				res, _ := NewResponder(resCfg, codes, &store{})
				ini, _ := NewInitiator(iniCfg, "00000000")
				hello, _ := ini.Hello()
				if _, err := res.Handle(ctx, hello); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			codes, _ := newCodes(t, resCode, nil)
			p := newPair(t, iniCfg, resCfg, codes, "31415926")
			hello, _ := p.ini.Hello()
			share, _ := p.res.Handle(ctx, hello)
			fin, _ := p.ini.HandleShare(share)
			tc.burn(t, codes)
			abort, err := p.res.Handle(ctx, fin)
			if !errors.Is(err, ErrCodeBurned) {
				t.Errorf("responder: %v, want ErrCodeBurned", err)
			}
			if _, err := p.ini.HandleConfirm(abort); !errors.Is(err, ErrCodeBurned) {
				t.Errorf("initiator: %v, want ErrCodeBurned", err)
			}
			noKey(t, "responder", p.res)
		})
	}
}
