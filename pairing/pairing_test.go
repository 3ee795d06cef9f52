package pairing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
)

const resCode = 31415926 // the responder's setup code in these tests

var (
	iniCfg = testConfig("head-a-7f3c", testVersion)
	resCfg = testConfig("head-b-19d2", testVersion)
)

func TestPairing(t *testing.T) {
	codes, ann := newCodes(t, resCode, nil)
	p := newPair(t, iniCfg, resCfg, codes, "3141 5926")
	o := p.run(passThrough)
	if o.iErr != nil || o.rErr != nil {
		t.Fatalf("initiator: %v; responder: %v", o.iErr, o.rErr)
	}
	if p.ini.State() != StateCommitted || p.res.State() != StateCommitted {
		t.Fatalf("states %v, %v; want committed", p.ini.State(), p.res.State())
	}
	ki, _ := p.ini.PairKey()
	kr, _ := p.res.PairKey()
	if len(ki) != pairKeyLen || !bytes.Equal(ki, kr) {
		t.Errorf("pair keys %x and %x: want the same 32 bytes", ki, kr)
	}
	for _, m := range o.msgs {
		if bytes.Contains(m, ki) {
			t.Errorf("the pair key travels on the wire")
		}
	}
	if !bytes.Equal(p.store.committed, testSiteConfig) || p.store.staged != nil {
		t.Errorf("responder store: committed %q, staged %q", p.store.committed, p.store.staged)
	}
	pi, _ := p.ini.Peer()
	pr, _ := p.res.Peer()
	if pi.ID != resCfg.Self.ID || !bytes.Equal(pi.CertFingerprint, resCfg.Self.CertFingerprint) || pr.ID != iniCfg.Self.ID {
		t.Errorf("peers: initiator sees %+v, responder sees %+v", pi, pr)
	}
	// The code paired the head: it is gone, also for a new session.
	if _, _, err := codes.Current(); !errors.Is(err, ErrCodeUsed) {
		t.Errorf("code after pairing: %v, want ErrCodeUsed", err)
	}
	again := newPair(t, iniCfg, resCfg, codes, "31415926").run(passThrough)
	if !errors.Is(again.rErr, ErrCodeUsed) || !errors.Is(again.iErr, ErrCodeUsed) {
		t.Errorf("second pairing with a used code: %v / %v", again.iErr, again.rErr)
	}
	if n := len(ann.list()); n != 1 {
		t.Errorf("%d codes issued, want 1", n)
	}
}

// TestWrongCode: a wrong code fails on both sides with the same clear
// error and no key, and counts against the responder's code.
func TestWrongCode(t *testing.T) {
	for _, typed := range []string{"31415927", "13415926", "00000000", "99999999"} {
		t.Run(typed, func(t *testing.T) {
			codes, _ := newCodes(t, resCode, nil)
			p := newPair(t, iniCfg, resCfg, codes, typed)
			o := p.run(passThrough)
			if !errors.Is(o.iErr, ErrKeyConfirmation) || !errors.Is(o.rErr, ErrKeyConfirmation) {
				t.Errorf("initiator: %v; responder: %v; want ErrKeyConfirmation on both", o.iErr, o.rErr)
			}
			var pa *PeerAbortError
			if !errors.As(o.iErr, &pa) {
				t.Errorf("initiator's error %v does not say the peer refused", o.iErr)
			}
			noKey(t, "initiator", p.ini)
			noKey(t, "responder", p.res)
			if p.ini.State() != StateFailed || p.res.State() != StateFailed {
				t.Errorf("states %v, %v", p.ini.State(), p.res.State())
			}
			if codes.wrong != 1 {
				t.Errorf("wrong attempts on the code: %d, want 1", codes.wrong)
			}
			if p.store.stageCalls != 0 {
				t.Error("the store was called")
			}
		})
	}
}

// TestManInTheMiddleFlipsEveryByte: a relay that changes one bit of one
// message, for every byte of every message in turn. Before the
// commit, both sides end failed, with no key and nothing committed.
// Changing the last message (the responder's committed ack) is the one
// case where the responder stays committed: the initiator refuses the
// ack, as it would notice its loss (see "The last ack" in
// docs/pairing.md).
func TestManInTheMiddleFlipsEveryByte(t *testing.T) {
	clean := func() pair {
		codes, _ := newCodes(t, resCode, nil)
		return newPair(t, iniCfg, resCfg, codes, "31415926")
	}
	ref := clean().run(passThrough)
	if ref.iErr != nil || ref.rErr != nil || len(ref.msgs) != 8 {
		t.Fatalf("reference run: %v, %v, %d messages", ref.iErr, ref.rErr, len(ref.msgs))
	}
	runs := 0
	for n, msg := range ref.msgs {
		for i := range msg {
			p := clean()
			o := p.run(func(k int, m []byte) []byte {
				if k == n {
					return flip(m, i)
				}
				return m
			})
			runs++
			where := fmt.Sprintf("message %d byte %d", n, i)
			if o.iErr == nil {
				t.Fatalf("%s: the initiator did not notice (responder: %v)", where, o.rErr)
			}
			if p.ini.State() != StateFailed {
				t.Errorf("%s: initiator %v", where, p.ini.State())
			}
			noKey(t, where+": initiator", p.ini)
			if n == 7 {
				if p.res.State() != StateCommitted {
					t.Errorf("%s: responder %v", where, p.res.State())
				}
				continue
			}
			if o.rErr == nil || p.res.State() != StateFailed {
				t.Errorf("%s: responder %v, %v; want failed", where, p.res.State(), o.rErr)
			}
			noKey(t, where+": responder", p.res)
			if p.store.committed != nil || p.store.staged != nil {
				t.Errorf("%s: responder store holds %q / %q", where, p.store.committed, p.store.staged)
			}
		}
	}
	t.Logf("%d altered sessions", runs)
}

// TestManInTheMiddleAltersFields: changes that keep a message well
// formed, with the error each must give.
func TestManInTheMiddleAltersFields(t *testing.T) {
	tests := []struct {
		name       string
		msg, field int
		want       error
	}{
		{"hello: initiator's ID", 0, 1, ErrKeyConfirmation},
		{"hello: initiator's certificate fingerprint", 0, 2, ErrKeyConfirmation},
		{"hello: initiator's session ID", 0, 3, ErrKeyConfirmation},
		{"hello: image version", 0, 0, ErrImageVersion},
		{"share: responder's ID", 1, 1, ErrKeyConfirmation},
		{"share: responder's certificate fingerprint", 1, 2, ErrKeyConfirmation},
		{"share: responder's session ID", 1, 3, ErrKeyConfirmation},
		{"share: image version", 1, 0, ErrImageVersion},
		{"finish: initiator's tag", 2, 1, ErrKeyConfirmation},
		{"confirm: responder's tag", 3, 0, ErrKeyConfirmation},
		{"stage: sealed config", 4, 2, ErrRecordAuth},
		{"stage: kind", 4, 0, ErrRecordAuth},
		{"stage: sequence number", 4, 1, ErrRecordSequence},
		{"staged: sealed hash", 5, 2, ErrRecordAuth},
		{"commit: sealed hash", 6, 2, ErrRecordAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			codes, _ := newCodes(t, resCode, nil)
			p := newPair(t, iniCfg, resCfg, codes, "31415926")
			o := p.run(func(k int, m []byte) []byte {
				if k == tc.msg {
					return alterField(t, m, tc.field)
				}
				return m
			})
			if !errors.Is(o.iErr, tc.want) || !errors.Is(o.rErr, tc.want) {
				t.Errorf("initiator: %v; responder: %v; want %v on both", o.iErr, o.rErr, tc.want)
			}
			noKey(t, "initiator", p.ini)
			noKey(t, "responder", p.res)
			if p.store.committed != nil || p.store.staged != nil {
				t.Errorf("responder store holds %q / %q", p.store.committed, p.store.staged)
			}
		})
	}
}

// TestRelayHidesVersionMismatch: heads on different images, and a relay
// that shows each one its own version. The versions are bound into the
// key, so the pairing still fails.
func TestRelayHidesVersionMismatch(t *testing.T) {
	const older = "tandem 2026.04.3"
	codes, _ := newCodes(t, resCode, nil)
	p := newPair(t, iniCfg, testConfig("head-b-19d2", older), codes, "31415926")
	setVersion := func(msg []byte, v string) []byte {
		typ, fields, err := parse(msg)
		if err != nil {
			t.Fatal(err)
		}
		fields[0] = []byte(v)
		return encode(typ, fields...)
	}
	o := p.run(func(n int, m []byte) []byte {
		switch n {
		case 0:
			return setVersion(m, older)
		case 1:
			return setVersion(m, testVersion)
		}
		return m
	})
	if !errors.Is(o.iErr, ErrKeyConfirmation) || !errors.Is(o.rErr, ErrKeyConfirmation) {
		t.Errorf("initiator: %v; responder: %v; want ErrKeyConfirmation", o.iErr, o.rErr)
	}
	noKey(t, "initiator", p.ini)
	noKey(t, "responder", p.res)
}

// TestTLSInterception: the transport saw another certificate than the
// one the peer claims (a TLS-terminating relay): refused before the code
// is touched.
func TestTLSInterception(t *testing.T) {
	mitmFP := testConfig("mitm", testVersion).Self.CertFingerprint
	tests := []struct {
		name     string
		ini, res Config
	}{
		{"initiator sees the relay's certificate", withPeerFP(iniCfg, mitmFP), resCfg},
		{"responder sees the relay's certificate", iniCfg, withPeerFP(resCfg, mitmFP)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			codes, _ := newCodes(t, resCode, nil)
			p := newPair(t, tc.ini, tc.res, codes, "31415926")
			o := p.run(passThrough)
			if !errors.Is(o.iErr, ErrPeerIdentity) || !errors.Is(o.rErr, ErrPeerIdentity) {
				t.Errorf("initiator: %v; responder: %v; want ErrPeerIdentity", o.iErr, o.rErr)
			}
			noKey(t, "initiator", p.ini)
			noKey(t, "responder", p.res)
		})
	}
	// The same, with the transport's view matching: pairs.
	codes, _ := newCodes(t, resCode, nil)
	p := newPair(t, withPeerFP(iniCfg, resCfg.Self.CertFingerprint), withPeerFP(resCfg, iniCfg.Self.CertFingerprint), codes, "31415926")
	if o := p.run(passThrough); o.iErr != nil || o.rErr != nil {
		t.Errorf("matching fingerprints: %v, %v", o.iErr, o.rErr)
	}
}

func withPeerFP(c Config, fp []byte) Config {
	c.PeerCertFingerprint = fp
	return c
}

// TestReplayIntoNewSession: messages recorded from a completed session
// (same code, same heads) fed into new sessions fail.
func TestReplayIntoNewSession(t *testing.T) {
	ctx := context.Background()
	codes, _ := newCodes(t, resCode, nil)
	rec := newPair(t, iniCfg, resCfg, codes, "31415926").run(passThrough)
	if rec.iErr != nil || rec.rErr != nil {
		t.Fatal(rec.iErr, rec.rErr)
	}

	t.Run("initiator's messages to a new responder", func(t *testing.T) {
		codes2, _ := newCodes(t, resCode, nil) // same code as in the recording
		res, _ := NewResponder(resCfg, codes2, &store{})
		if _, err := res.Handle(ctx, rec.msgs[0]); err != nil {
			t.Fatalf("replayed hello: %v", err) // a hello carries no proof: it is answered
		}
		_, err := res.Handle(ctx, rec.msgs[2])
		if !errors.Is(err, ErrKeyConfirmation) {
			t.Errorf("replayed finish: %v, want ErrKeyConfirmation", err)
		}
		noKey(t, "responder", res)
	})
	t.Run("responder's messages to a new initiator", func(t *testing.T) {
		ini, _ := NewInitiator(iniCfg, "31415926")
		ini.Hello()
		if _, err := ini.HandleShare(rec.msgs[1]); err != nil {
			t.Fatalf("replayed share: %v", err) // nothing to check yet
		}
		_, err := ini.HandleConfirm(rec.msgs[3])
		if !errors.Is(err, ErrKeyConfirmation) {
			t.Errorf("replayed confirm: %v, want ErrKeyConfirmation", err)
		}
		noKey(t, "initiator", ini)
	})
	t.Run("records into another authenticated session", func(t *testing.T) {
		codes3, _ := newCodes(t, resCode, nil)
		p := newPair(t, iniCfg, resCfg, codes3, "31415926")
		o := p.run(func(n int, m []byte) []byte {
			if n >= 4 {
				return rec.msgs[n] // the recorded session's stage, staged, ...
			}
			return m
		})
		if !errors.Is(o.rErr, ErrRecordAuth) || !errors.Is(o.iErr, ErrRecordAuth) {
			t.Errorf("initiator: %v; responder: %v; want ErrRecordAuth", o.iErr, o.rErr)
		}
		if p.store.stageCalls != 0 {
			t.Error("a recorded stage record reached the store")
		}
	})
}

// TestThirdHead: a head that does not know the code answers in the
// peer's place, or knocks on the responder itself.
func TestThirdHead(t *testing.T) {
	evilCfg := testConfig("head-x-evil", testVersion)

	t.Run("answers the initiator with its own share and tag", func(t *testing.T) {
		ini, _ := NewInitiator(iniCfg, "31415926")
		evilCodes, _ := newCodes(t, 27182818, nil) // its best guess
		evil, _ := NewResponder(evilCfg, evilCodes, &store{})
		hello, _ := ini.Hello()
		share, err := evil.Handle(context.Background(), hello)
		if err != nil {
			t.Fatal(err)
		}
		fin, err := ini.HandleShare(share)
		if err != nil {
			t.Fatal(err)
		}
		// It does not abort but sends the tag its guess gives.
		d, _ := decode(fin)
		evil.peer.y = d.finish.y
		tagR, _, err := evil.keys(evil.peer, evil.self, false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ini.HandleConfirm(encodeConfirm(tagR))
		if !errors.Is(err, ErrKeyConfirmation) {
			t.Errorf("initiator: %v, want ErrKeyConfirmation", err)
		}
		noKey(t, "initiator", ini)
	})
	t.Run("claims the peer's identity", func(t *testing.T) {
		impostor := resCfg // the peer's ID and fingerprint, not its code
		evilCodes, _ := newCodes(t, 27182818, nil)
		p := newPair(t, iniCfg, impostor, evilCodes, "31415926")
		o := p.run(passThrough)
		if !errors.Is(o.iErr, ErrKeyConfirmation) {
			t.Errorf("initiator: %v, want ErrKeyConfirmation", o.iErr)
		}
		noKey(t, "initiator", p.ini)
	})
	t.Run("runs its own CPace against the responder", func(t *testing.T) {
		codes, _ := newCodes(t, resCode, nil)
		p := newPair(t, evilCfg, resCfg, codes, "27182818")
		o := p.run(passThrough)
		if !errors.Is(o.rErr, ErrKeyConfirmation) {
			t.Errorf("responder: %v, want ErrKeyConfirmation", o.rErr)
		}
		noKey(t, "responder", p.res)
	})
	t.Run("sends the neutral element as its share", func(t *testing.T) {
		codes, _ := newCodes(t, resCode, nil)
		res, _ := NewResponder(resCfg, codes, &store{})
		ini, _ := NewInitiator(evilCfg, "00000000")
		hello, _ := ini.Hello()
		if _, err := res.Handle(context.Background(), hello); err != nil {
			t.Fatal(err)
		}
		_, err := res.Handle(context.Background(), finish{y: make([]byte, 32), tag: make([]byte, 64)}.encode())
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("identity share: %v, want ErrMalformed", err)
		}
		noKey(t, "responder", res)
	})
}

// TestFiveWrongCodesBurn: the fifth wrong session burns the code; the
// old code then pairs nothing, the new one (printed) does.
func TestFiveWrongCodesBurn(t *testing.T) {
	codes, ann := newCodes(t, resCode, nil)
	for i := range 5 {
		o := newPair(t, iniCfg, resCfg, codes, fmt.Sprintf("%08d", 11111111*(i+1)%100000000)).run(passThrough)
		if !errors.Is(o.rErr, ErrKeyConfirmation) {
			t.Fatalf("wrong code %d: %v", i, o.rErr)
		}
		if got := len(ann.list()); (i < 4 && got != 1) || (i == 4 && got != 2) {
			t.Fatalf("after %d wrong codes: %d codes issued", i+1, got)
		}
	}
	o := newPair(t, iniCfg, resCfg, codes, "31415926").run(passThrough)
	if !errors.Is(o.rErr, ErrKeyConfirmation) {
		t.Errorf("the burned code: %v, want ErrKeyConfirmation", o.rErr)
	}
	fresh := ann.list()[len(ann.list())-1]
	if fresh == "31415926" {
		t.Fatal("the new code is the old one")
	}
	if o := newPair(t, iniCfg, resCfg, codes, fresh).run(passThrough); o.iErr != nil || o.rErr != nil {
		t.Errorf("the new code: %v, %v", o.iErr, o.rErr)
	}
}

// TestThousandGuesses: a scripted attacker tries the codes 00000000 to
// 00000999 against a responder whose first code is 00000500. Without
// the burn the 501st guess would pair; with it no guess does, and every
// 5 guesses cost the responder a fresh code.
func TestThousandGuesses(t *testing.T) {
	codes, ann := newCodes(t, 500, nil)
	attacker := testConfig("head-x-evil", testVersion)
	wins := 0
	for g := range 1000 {
		p := newPair(t, attacker, resCfg, codes, fmt.Sprintf("%08d", g))
		o := p.run(passThrough)
		if o.rErr == nil || p.res.State() != StateFailed {
			wins++
		}
	}
	if wins != 0 {
		t.Errorf("%d of 1000 guesses paired", wins)
	}
	if n := len(ann.list()); n < 1000/DefaultMaxAttempts {
		t.Errorf("%d codes issued for 1000 guesses, want at least %d", n, 1000/DefaultMaxAttempts)
	}
}

// TestRecordsReplayedReorderedAltered: stage and commit records out of
// place are refused, and a refused record leaves nothing staged.
func TestRecordsReplayedReorderedAltered(t *testing.T) {
	ctx := context.Background()
	// authenticated returns a session pair past the key confirmation.
	authenticated := func(t *testing.T) pair {
		codes, _ := newCodes(t, resCode, nil)
		p := newPair(t, iniCfg, resCfg, codes, "31415926")
		hello, _ := p.ini.Hello()
		share, _ := p.res.Handle(ctx, hello)
		fin, _ := p.ini.HandleShare(share)
		conf, err := p.res.Handle(ctx, fin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.ini.HandleConfirm(conf); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		play func(t *testing.T, p pair) error // returns the error of the refused step
		want error
	}{
		{"commit before stage (reordered)", func(t *testing.T, p pair) error {
			p.ini.Stage(testSiteConfig) // held back by the relay
			early := p.ini.seal(recCommit, configHash(testSiteConfig))
			_, err := p.res.Handle(ctx, early)
			return err
		}, ErrRecordSequence},
		{"a commit record in the stage's place", func(t *testing.T, p pair) error {
			_, err := p.res.Handle(ctx, p.ini.seal(recCommit, configHash(testSiteConfig)))
			return err
		}, ErrUnexpectedMessage},
		{"stage replayed in place of the commit", func(t *testing.T, p pair) error {
			stage, _ := p.ini.Stage(testSiteConfig)
			staged, _ := p.res.Handle(ctx, stage)
			p.ini.HandleStaged(staged)
			_, err := p.res.Handle(ctx, stage)
			return err
		}, ErrRecordSequence},
		{"staged ack replayed in place of the committed ack", func(t *testing.T, p pair) error {
			stage, _ := p.ini.Stage(testSiteConfig)
			staged, _ := p.res.Handle(ctx, stage)
			p.ini.HandleStaged(staged)
			p.ini.Commit()
			_, err := p.ini.HandleStaged(staged)
			if err == nil {
				t.Error("HandleStaged twice")
			}
			abort, err := p.ini.HandleCommitted(staged)
			p.res.Handle(ctx, abort) // the responder drops what it staged
			return err
		}, ErrRecordSequence},
		{"stage reflected back to the initiator", func(t *testing.T, p pair) error {
			stage, _ := p.ini.Stage(testSiteConfig)
			_, err := p.ini.HandleStaged(stage)
			return err
		}, ErrRecordAuth},
		{"stage with the sealed config altered", func(t *testing.T, p pair) error {
			stage, _ := p.ini.Stage(testSiteConfig)
			_, err := p.res.Handle(ctx, flip(stage, len(stage)-20))
			return err
		}, ErrRecordAuth},
		{"commit altered", func(t *testing.T, p pair) error {
			stage, _ := p.ini.Stage(testSiteConfig)
			staged, _ := p.res.Handle(ctx, stage)
			p.ini.HandleStaged(staged)
			commit, _ := p.ini.Commit()
			_, err := p.res.Handle(ctx, flip(commit, len(commit)-1))
			return err
		}, ErrRecordAuth},
		{"commit of another config", func(t *testing.T, p pair) error {
			stage, _ := p.ini.Stage(testSiteConfig)
			staged, _ := p.res.Handle(ctx, stage)
			p.ini.HandleStaged(staged)
			_, err := p.res.Handle(ctx, p.ini.seal(recCommit, configHash([]byte("other"))))
			return err
		}, ErrConfigMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := authenticated(t)
			if err := tc.play(t, p); !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if p.store.committed != nil || p.store.staged != nil {
				t.Errorf("responder store holds %q / %q", p.store.committed, p.store.staged)
			}
			if s := p.res.State(); s == StateCommitted {
				t.Errorf("responder %v", s)
			}
		})
	}

	t.Run("commit replayed after the commit", func(t *testing.T) {
		p := authenticated(t)
		stage, _ := p.ini.Stage(testSiteConfig)
		staged, _ := p.res.Handle(ctx, stage)
		p.ini.HandleStaged(staged)
		commit, _ := p.ini.Commit()
		committed, _ := p.res.Handle(ctx, commit)
		if _, err := p.ini.HandleCommitted(committed); err != nil {
			t.Fatal(err)
		}
		for _, m := range [][]byte{commit, stage} {
			if _, err := p.res.Handle(ctx, m); !errors.Is(err, ErrUnexpectedMessage) {
				t.Errorf("replay after commit: %v", err)
			}
		}
		if p.res.State() != StateCommitted || p.store.commit != 1 {
			t.Errorf("responder %v after %d commits", p.res.State(), p.store.commit)
		}
	})
}

// TestImageVersionMismatch: a clear error on both sides, before the
// code is touched.
func TestImageVersionMismatch(t *testing.T) {
	codes, _ := newCodes(t, resCode, nil)
	p := newPair(t, iniCfg, testConfig("head-b-19d2", "tandem 2026.04.3"), codes, "31415926")
	o := p.run(passThrough)
	var vm *VersionMismatchError
	if !errors.As(o.rErr, &vm) || vm.Local != "tandem 2026.04.3" || vm.Peer != testVersion {
		t.Errorf("responder: %v", o.rErr)
	}
	if !errors.Is(o.iErr, ErrImageVersion) {
		t.Errorf("initiator: %v, want ErrImageVersion", o.iErr)
	}
	if codes.wrong != 0 {
		t.Errorf("%d attempts charged to the code", codes.wrong)
	}
	t.Logf("initiator says: %v", o.iErr)
}

// TestStoreFailures: a responder that cannot stage or commit leaves
// nothing staged and tells the initiator.
func TestStoreFailures(t *testing.T) {
	for _, tc := range []struct {
		name              string
		stageErr, comErr  error
		wantDiscards      int
		wantStageOrCommit string
	}{
		{"stage fails", errors.New("state partition full"), nil, 0, "stage"},
		{"commit fails", nil, errors.New("rename: I/O error"), 1, "commit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			codes, ann := newCodes(t, resCode, nil)
			p := newPair(t, iniCfg, resCfg, codes, "31415926")
			p.store.stageErr, p.store.comErr = tc.stageErr, tc.comErr
			o := p.run(passThrough)
			if !errors.Is(o.rErr, ErrStore) || !errors.Is(o.iErr, ErrStore) {
				t.Errorf("initiator: %v; responder: %v; want ErrStore", o.iErr, o.rErr)
			}
			if p.store.discards != tc.wantDiscards {
				t.Errorf("%d discards, want %d", p.store.discards, tc.wantDiscards)
			}
			// Unconfigured again: a new code to pair with.
			if n := len(ann.list()); n != 2 {
				t.Errorf("%d codes issued, want 2", n)
			}
			if _, _, err := codes.Current(); err != nil {
				t.Errorf("code after a failed commit: %v", err)
			}
		})
	}
}

// TestCancel: a session given up by its caller (timeout) settles the
// code like a failure and tells the peer.
func TestCancel(t *testing.T) {
	ctx := context.Background()
	codes, ann := newCodes(t, resCode, nil)
	p := newPair(t, iniCfg, resCfg, codes, "31415926")
	hello, _ := p.ini.Hello()
	p.res.Handle(ctx, hello)
	abort := p.res.Cancel(ctx, errors.New("no finish within 30s"))
	if _, err := p.ini.HandleShare(abort); !errors.Is(err, ErrCancelled) {
		t.Errorf("initiator: %v, want ErrCancelled", err)
	}
	if codes.wrong != 1 || len(ann.list()) != 1 {
		t.Errorf("code: %d wrong, %d issued; want the session charged", codes.wrong, len(ann.list()))
	}
	if _, err := p.res.Handle(ctx, hello); !errors.Is(err, ErrSessionFailed) {
		t.Errorf("after cancel: %v, want ErrSessionFailed", err)
	}
	if p.res.Cancel(ctx, nil) != nil {
		t.Error("cancelling twice sends a second abort")
	}
}

func TestCallsOutOfOrder(t *testing.T) {
	ini, _ := NewInitiator(iniCfg, "31415926")
	if _, err := ini.Stage(testSiteConfig); !errors.Is(err, ErrUnexpectedMessage) {
		t.Errorf("Stage before the handshake: %v", err)
	}
	if _, err := ini.Commit(); !errors.Is(err, ErrUnexpectedMessage) {
		t.Errorf("Commit before the handshake: %v", err)
	}
	if ini.State() != StateFresh {
		t.Errorf("a caller's mistake changed the state to %v", ini.State())
	}
	if _, err := NewInitiator(iniCfg, "3141592"); !errors.Is(err, ErrCodeFormat) {
		t.Errorf("7 digits: %v", err)
	}
	if _, err := NewInitiator(Config{ImageVersion: "x"}, "31415926"); err == nil {
		t.Error("a config without identity was accepted")
	}
}
