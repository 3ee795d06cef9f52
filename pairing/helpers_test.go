package pairing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/internal/fakeclock"
)

const testVersion = "tandem 2026.05.1"

var testSiteConfig = []byte("[pair]\nname = \"lab\"\n# the wizard's site config, without the key\n")

func testConfig(id, version string) Config {
	fp := sha256.Sum256([]byte("cert of " + id))
	return Config{Self: Identity{ID: id, CertFingerprint: fp[:]}, ImageVersion: version}
}

// codeReader makes Codes issue the given codes in order, then codes from
// a seeded generator (deterministic, so no test depends on luck).
func codeReader(seed uint64, codes ...uint32) *bytes.Buffer {
	var b bytes.Buffer
	for _, c := range codes {
		binary.Write(&b, binary.BigEndian, c)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for range 4096 {
		binary.Write(&b, binary.BigEndian, r.Uint32())
	}
	return &b
}

type clock = fakeclock.Clock

func newClock() *clock { return fakeclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)) }

// announced records the codes Codes printed.
type announced struct {
	mu    sync.Mutex
	codes []string
}

func (a *announced) add(code string, _ time.Time) {
	a.mu.Lock()
	a.codes = append(a.codes, code)
	a.mu.Unlock()
}

func (a *announced) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.codes...)
}

func newCodes(t *testing.T, first uint32, clk *clock) (*Codes, *announced) {
	t.Helper()
	var ann announced
	opts := CodeOptions{Rand: codeReader(uint64(first), first), OnNew: ann.add}
	if clk != nil {
		opts.Now = clk.Now
	}
	c, err := NewCodes(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, &ann
}

// store is a Store in memory.
type store struct {
	staged, committed  []byte
	discards           int
	stageErr, comErr   error
	stageCalls, commit int
}

func (s *store) Stage(_ context.Context, config []byte) error {
	s.stageCalls++
	if s.stageErr != nil {
		return s.stageErr
	}
	s.staged = bytes.Clone(config)
	return nil
}

func (s *store) Commit(context.Context) error {
	s.commit++
	if s.comErr != nil {
		return s.comErr
	}
	s.committed, s.staged = s.staged, nil
	return nil
}

func (s *store) Discard(context.Context) error {
	s.discards++
	s.staged = nil
	return nil
}

// pair is one session between an initiator and a responder.
type pair struct {
	ini   *Initiator
	res   *Responder
	store *store
}

func newPair(t *testing.T, iniCfg, resCfg Config, codes *Codes, typed string) pair {
	t.Helper()
	ini, err := NewInitiator(iniCfg, typed)
	if err != nil {
		t.Fatal(err)
	}
	st := &store{}
	res, err := NewResponder(resCfg, codes, st)
	if err != nil {
		t.Fatal(err)
	}
	return pair{ini, res, st}
}

// wire carries message n (0 hello, 1 share, 2 finish, 3 confirm,
// 4 stage, 5 staged, 6 commit, 7 committed) and may change it. Aborts
// are carried unchanged.
type wire func(n int, msg []byte) []byte

func passThrough(_ int, msg []byte) []byte { return msg }

// outcome is how a session ended on both sides.
type outcome struct {
	msgs       [][]byte // as delivered
	iErr, rErr error
}

// run drives a whole session. When a side fails, its abort (if any)
// goes to the other side's next step, and the run stops.
func (p pair) run(w wire) outcome {
	ctx := context.Background()
	var o outcome
	iSteps := []func([]byte) ([]byte, error){p.ini.HandleShare, p.ini.HandleConfirm, p.ini.HandleStaged, p.ini.HandleCommitted}
	iNext := []func() ([]byte, error){
		nil, // HandleShare returned the finish
		func() ([]byte, error) { return p.ini.Stage(testSiteConfig) },
		p.ini.Commit,
		nil,
	}
	out, err := p.ini.Hello()
	for k := range 4 {
		if err != nil {
			o.iErr = err
			if out != nil {
				_, o.rErr = p.res.Handle(ctx, out)
			}
			return o
		}
		m := w(2*k, out)
		o.msgs = append(o.msgs, m)
		reply, err := p.res.Handle(ctx, m)
		if err != nil {
			o.rErr = err
			if reply != nil {
				_, o.iErr = iSteps[k](reply)
			}
			return o
		}
		m = w(2*k+1, reply)
		o.msgs = append(o.msgs, m)
		if out, err = iSteps[k](m); err != nil {
			o.iErr = err
			if out != nil {
				_, o.rErr = p.res.Handle(ctx, out)
			}
			return o
		}
		if iNext[k] != nil {
			out, err = iNext[k]()
		}
	}
	return o
}

// flip returns msg with one bit of byte i changed.
func flip(msg []byte, i int) []byte {
	m := bytes.Clone(msg)
	m[i] ^= 0x01
	return m
}

// alterField returns msg with field f's first byte changed, re-encoded.
func alterField(t *testing.T, msg []byte, f int) []byte {
	t.Helper()
	typ, fields, err := parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	fields[f] = flip(fields[f], 0)
	return encode(typ, fields...)
}

// noKey checks that a side holds no pair key.
func noKey(t *testing.T, who string, s interface{ PairKey() ([]byte, error) }) {
	t.Helper()
	if k, err := s.PairKey(); err == nil || k != nil {
		t.Errorf("%s holds a pair key %x", who, k)
	}
}

func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
