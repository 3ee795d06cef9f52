package witness

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// driver feeds hand-made requests to a Server, each node proving
// freshness as a Client does: with the witness boot and the challenge of
// its last answer, resending once when challenged.
type driver struct {
	t     *testing.T
	s     *Server
	n     uint16
	wit   ID
	chal  map[string]ID
	boots map[string]ID // a node's client boot; default ID{1}
}

func (d *driver) do(node string, op uint8, claim bool) *reply {
	d.t.Helper()
	if d.chal == nil {
		d.chal = map[string]ID{}
	}
	for range 2 {
		rep, _ := d.send(d.req(node, op, claim))
		if rep.Status != Challenge {
			return rep
		}
	}
	d.t.Fatalf("%s op %d: challenged twice", node, op)
	return nil
}

// req is node's next request, signed but not sent.
func (d *driver) req(node string, op uint8, claim bool) []byte {
	d.n++
	boot, ok := d.boots[node]
	if !ok {
		boot = ID{1}
	}
	r := request{Op: op, Claim: claim, Nonce: ID{byte(d.n), byte(d.n >> 8), 7}, Boot: boot, Witness: d.wit, Challenge: d.chal[node], Pair: "vdi-nas", Node: node}
	return r.marshal(testKey)
}

// send hands msg to the witness and keeps the answer's proof for the
// sender's node.
func (d *driver) send(msg []byte) (*reply, *request) {
	d.t.Helper()
	if d.chal == nil {
		d.chal = map[string]ID{}
	}
	req, err := parseRequest(msg, "vdi-nas", testKey)
	if err != nil {
		d.t.Fatal(err)
	}
	out := d.s.Handle(msg, "test")
	rep, err := parseReply(out, "vdi-nas", testKey)
	if err != nil || rep.Nonce != req.Nonce {
		d.t.Fatalf("%s op %d: reply %+v, %v", req.Node, req.Op, rep, err)
	}
	d.wit, d.chal[req.Node] = rep.Witness, rep.Challenge
	return rep, req
}

// fileWriter reads the state file back without loadState, so that a bug
// shared by save and load cannot hide; a missing file is "".
func fileWriter(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	var st map[string]string
	if err != nil || json.Unmarshal(b, &st) != nil || st["pair"] != "vdi-nas" {
		t.Fatalf("state file %s: %q, %v", path, b, err)
	}
	if st["writer"] != "" {
		if _, err := time.Parse(time.RFC3339, st["since"]); err != nil {
			t.Errorf("state file since: %v", err)
		}
	}
	return st["writer"]
}

func writeState(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newStateFile is a state file with no marker, as --init leaves it, in a
// new directory; it returns the file's path.
func newStateFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vdi-nas.json")
	writeState(t, path, `{"pair":"vdi-nas","writer":""}`)
	return path
}

const (
	nasA = "nas-a"
	nasB = "nas-b"
)

func TestWriterMarker(t *testing.T) {
	const lease = 10 * time.Second
	type step struct {
		advance time.Duration
		breakFS bool // remove the state file's directory first
		node    string
		op      uint8
		claim   bool
		status  Status
		holder  string
		mine    bool // reply bit 1
		other   bool // reply bit 2
		quiet   bool
		writer  string // the witness's marker afterwards, also in the file
	}
	cases := []struct {
		name     string
		quiet    time.Duration
		preload  string // state file content before start
		noDir    bool   // the state file's directory is gone after the start
		steps    []step
		outdated uint64
	}{
		{name: "holder records the writer, the peer is outdated", quiet: -1, outdated: 4, steps: []step{
			{node: nasA, op: opAcquire, status: Granted, holder: nasA},
			{node: nasB, op: opOutdatePeer, status: Denied, holder: nasA}, // not the holder
			{node: nasA, op: opOutdatePeer, status: Granted, holder: nasA, mine: true, writer: nasA},
			{node: nasA, op: opOutdatePeer, status: Granted, holder: nasA, mine: true, writer: nasA}, // again
			{node: nasB, op: opAcquire, status: Denied, holder: nasA, other: true, writer: nasA},
			{node: nasB, op: opAcquire, claim: true, status: Denied, holder: nasA, other: true, writer: nasA},
			{advance: lease + time.Second, node: nasB, op: opAcquire, status: Denied, other: true, writer: nasA}, // a's lease ran out
			{node: nasB, op: opOutdatePeer, status: Denied, other: true, writer: nasA},
			{node: nasB, op: opClearWriter, status: Denied, other: true, writer: nasA},
			{node: nasA, op: opAcquire, status: Granted, holder: nasA, mine: true, writer: nasA}, // the writer is granted
			{node: nasA, op: opRelease, status: Released, mine: true, writer: nasA},              // release keeps the marker
			{node: nasB, op: opAcquire, status: Denied, other: true, writer: nasA},
			{node: nasA, op: opClearWriter, status: Released},
			{node: nasA, op: opClearWriter, status: Released}, // idempotent
			{node: nasB, op: opAcquire, status: Granted, holder: nasB},
			{node: nasA, op: opClearWriter, status: Released, holder: nasB}, // lease unchanged
		}},
		{name: "restarted with a marker: quiet period and claims", preload: `{"pair":"vdi-nas","writer":"nas-a","since":"2029-12-31T23:00:00Z"}`, outdated: 3, steps: []step{
			{node: nasB, op: opAcquire, claim: true, status: Denied, other: true, quiet: true, writer: nasA},
			{node: nasB, op: opAcquire, status: Denied, other: true, quiet: true, writer: nasA},
			{node: nasA, op: opOutdatePeer, claim: true, status: Denied, mine: true, quiet: true, writer: nasA}, // no reinstatement by op 3
			{node: nasA, op: opAcquire, claim: true, status: Granted, holder: nasA, mine: true, quiet: true, writer: nasA},
			{node: nasA, op: opOutdatePeer, status: Granted, holder: nasA, mine: true, quiet: true, writer: nasA},
			{advance: 3 * lease, node: nasB, op: opAcquire, status: Denied, other: true, writer: nasA},
		}},
		{name: "marker cannot be persisted", quiet: -1, noDir: true, steps: []step{
			{node: nasA, op: opAcquire, status: Granted, holder: nasA},
			{node: nasA, op: opOutdatePeer, status: Denied, holder: nasA},
			{node: nasB, op: opAcquire, status: Denied, holder: nasA},
			{node: nasA, op: opClearWriter, status: Released, holder: nasA}, // nothing to clear, nothing written
		}},
		{name: "clearing cannot be persisted", quiet: -1, steps: []step{
			{node: nasA, op: opAcquire, status: Granted, holder: nasA},
			{node: nasA, op: opOutdatePeer, status: Granted, holder: nasA, mine: true, writer: nasA},
			{breakFS: true, node: nasA, op: opClearWriter, status: Denied, holder: nasA, mine: true, writer: nasA},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "vdi-nas.json")
			if tc.preload != "" {
				writeState(t, path, tc.preload)
			}
			clock := newClock()
			s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Lease: lease, Quiet: tc.quiet, Nodes: []string{nasA, nasB},
				StateFile: path, InitState: tc.preload == "", Now: clock.Now, Log: testLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			if tc.noDir {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			}
			d := &driver{t: t, s: s}
			for i, st := range tc.steps {
				clock.Advance(st.advance)
				if st.breakFS {
					if err := os.RemoveAll(dir); err != nil {
						t.Fatal(err)
					}
				}
				rep := d.do(st.node, st.op, st.claim)
				got := step{status: rep.Status, holder: rep.Holder, mine: rep.Writer, other: rep.Outdated, quiet: rep.Quiet, writer: s.Status().Writer}
				want := st
				want.advance, want.breakFS, want.node, want.op, want.claim = 0, false, "", 0, false
				if got != want {
					t.Errorf("step %d (%s op %d): got %+v, want %+v", i, st.node, st.op, got, want)
				}
				if w := fileWriter(t, path); !st.breakFS && w != st.writer {
					t.Errorf("step %d: state file writer %q, want %q", i, w, st.writer)
				}
			}
			if c := s.Status().Counters; c.Outdated != tc.outdated {
				t.Errorf("outdated counter %d, want %d", c.Outdated, tc.outdated)
			}
		})
	}
}

// The marker outlives a restart; only ForgetWriter clears it.
func TestWriterSurvivesRestart(t *testing.T) {
	path := newStateFile(t)
	clock := newClock()
	start := func(forget bool) *Server {
		t.Helper()
		s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Quiet: -1, StateFile: path, ForgetWriter: forget, Now: clock.Now, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start(false)
	d := &driver{t: t, s: s}
	d.do(nasA, opAcquire, false)
	if rep := d.do(nasA, opOutdatePeer, false); rep.Status != Granted || !rep.Writer {
		t.Fatalf("outdate peer: %+v", rep)
	}
	since := clock.Now()
	for i, st := range []struct {
		forget bool
		writer string
	}{
		{false, nasA},
		{false, nasA},
		{true, ""},
		{false, ""},
	} {
		clock.Advance(time.Hour)
		s := start(st.forget)
		got := s.Status()
		if got.Writer != st.writer || fileWriter(t, path) != st.writer {
			t.Errorf("restart %d (forget %v): writer %q, file %q, want %q", i, st.forget, got.Writer, fileWriter(t, path), st.writer)
		}
		if st.writer != "" && !got.WriterSince.Equal(since) {
			t.Errorf("restart %d: writer since %v, want %v", i, got.WriterSince, since)
		}
		// Quiet: -1, so without a marker nas-b would get the vote.
		d := &driver{t: t, s: s}
		if rep := d.do(nasB, opAcquire, true); (rep.Status == Granted) != (st.writer == "") || rep.Outdated != (st.writer != "") {
			t.Errorf("restart %d: nas-b's acquire: %+v", i, rep)
		}
	}
}

func TestStateFileErrors(t *testing.T) {
	cases := []struct {
		name    string
		content string // "" with dir false: no file
		dir     bool   // the path is a directory
		writer  string
		wantErr string
	}{
		{name: "missing", wantErr: "tandem witness --init"},
		{name: "valid", content: `{"pair":"vdi-nas","writer":"nas-b","since":"2030-01-01T00:00:00Z"}`, writer: nasB},
		{name: "cleared", content: `{"pair":"vdi-nas","writer":""}`},
		{name: "empty", content: " ", wantErr: "unexpected end"},
		{name: "malformed", content: `{"pair":"vdi-nas","writer":`, wantErr: "unexpected end"},
		{name: "wrong type", content: `{"pair":"vdi-nas","writer":7}`, wantErr: "cannot unmarshal"},
		{name: "other pair", content: `{"pair":"other-nas","writer":"nas-a"}`, wantErr: `pair "other-nas"`},
		{name: "no pair", content: `{"writer":"nas-a"}`, wantErr: `pair ""`},
		{name: "long writer", content: `{"pair":"vdi-nas","writer":"` + strings.Repeat("x", 64) + `"}`, wantErr: "longer"},
		{name: "directory", dir: true, wantErr: "directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vdi-nas.json")
			switch {
			case tc.dir:
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			case tc.content != "":
				writeState(t, path, tc.content)
			}
			s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, StateFile: path, Log: testLog(t)})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err %v, want one naming %s and saying %q", err, path, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w := s.Status().Writer; w != tc.writer {
				t.Errorf("writer %q, want %q", w, tc.writer)
			}
		})
	}
}

func TestDefaultStateFile(t *testing.T) {
	cases := []struct {
		pair, want string
	}{
		{"vdi-nas", "/var/lib/tandem/witness/vdi-nas.json"},
		{"", ""},
		{"../etc", ""},
		{"a/b", ""},
		{".hidden", ""},
	}
	for _, tc := range cases {
		got, err := DefaultStateFile(tc.pair)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("DefaultStateFile(%q) = %q, %v; want %q", tc.pair, got, err, tc.want)
		}
	}
}

// Only the defined flag bits and ops parse; bits 1 and 2 never together.
func TestParseFlags(t *testing.T) {
	reseal := func(msg []byte, flags byte) []byte {
		b := append([]byte(nil), msg[:len(msg)-macLen]...)
		b[6] = flags
		return seal(b, testKey)
	}
	rep := (&reply{Status: Granted, Pair: "vdi-nas", Holder: nasA}).marshal(testKey)
	req := func(op uint8) []byte {
		return (&request{Op: op, Pair: "vdi-nas", Node: nasA}).marshal(testKey)
	}
	cases := []struct {
		name  string
		parse func() error
		ok    bool
	}{
		{"reply none", func() error { _, err := parseReply(reseal(rep, 0), "vdi-nas", testKey); return err }, true},
		{"reply quiet, writer", func() error { _, err := parseReply(reseal(rep, 3), "vdi-nas", testKey); return err }, true},
		{"reply quiet, outdated", func() error { _, err := parseReply(reseal(rep, 5), "vdi-nas", testKey); return err }, true},
		{"reply writer and outdated", func() error { _, err := parseReply(reseal(rep, 6), "vdi-nas", testKey); return err }, false},
		{"reply bit 3", func() error { _, err := parseReply(reseal(rep, 8), "vdi-nas", testKey); return err }, false},
		{"reply bit 7", func() error { _, err := parseReply(reseal(rep, 0x81), "vdi-nas", testKey); return err }, false},
		{"reply challenge", func() error {
			_, err := parseReply((&reply{Status: Challenge, Pair: "vdi-nas"}).marshal(testKey), "vdi-nas", testKey)
			return err
		}, true},
		{"reply challenge, quiet", func() error {
			_, err := parseReply(reseal((&reply{Status: Challenge, Pair: "vdi-nas"}).marshal(testKey), 1), "vdi-nas", testKey)
			return err
		}, false},
		{"reply status 5", func() error {
			_, err := parseReply((&reply{Status: 5, Pair: "vdi-nas"}).marshal(testKey), "vdi-nas", testKey)
			return err
		}, false},
		{"request claim", func() error { _, err := parseRequest(reseal(req(opAcquire), 1), "vdi-nas", testKey); return err }, true},
		{"request bit 1", func() error { _, err := parseRequest(reseal(req(opAcquire), 2), "vdi-nas", testKey); return err }, false},
		{"request bit 2", func() error { _, err := parseRequest(reseal(req(opOutdatePeer), 4), "vdi-nas", testKey); return err }, false},
		{"op 3", func() error { _, err := parseRequest(req(opOutdatePeer), "vdi-nas", testKey); return err }, true},
		{"op 4", func() error { _, err := parseRequest(req(opClearWriter), "vdi-nas", testKey); return err }, true},
		{"op 0", func() error { _, err := parseRequest(req(0), "vdi-nas", testKey); return err }, false},
		{"op 5", func() error { _, err := parseRequest(req(5), "vdi-nas", testKey); return err }, false},
	}
	for _, tc := range cases {
		err := tc.parse()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errMalformed)) {
			t.Errorf("%s: err %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	// The flags survive a round trip.
	for _, r := range []reply{{Status: Denied, Quiet: true, Outdated: true}, {Status: Granted, Writer: true}, {Status: Released},
		{Status: Challenge, Nonce: ID{1}, Witness: ID{2}, Challenge: ID{3}}} {
		r.Pair = "vdi-nas"
		got, err := parseReply(r.marshal(testKey), "vdi-nas", testKey)
		if err != nil || *got != r {
			t.Errorf("round trip %+v: %+v, %v", r, got, err)
		}
	}
	q := request{Op: opRelease, Claim: true, Nonce: ID{1}, Boot: ID{2}, Witness: ID{3}, Challenge: ID{4}, HeldFor: time.Second, Pair: "vdi-nas", Node: nasA}
	if got, err := parseRequest(q.marshal(testKey), "vdi-nas", testKey); err != nil || *got != q {
		t.Errorf("round trip %+v: %+v, %v", q, got, err)
	}
}

var errAny = errors.New("any error")

// serveSwappable answers on one UDP socket with a Server that restart
// replaces (a new boot, as after a witness restart): rebinding a freed
// port could race another process for it.
func serveSwappable(t *testing.T, cfg Config) (addr string, restart func(Config)) {
	t.Helper()
	var cur atomic.Pointer[Server]
	restart = func(cfg Config) {
		t.Helper()
		s, err := NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cur.Store(s)
	}
	restart(cfg)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, MaxMessage+1)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := cur.Load().Handle(buf[:n], from.String()); out != nil {
				conn.WriteTo(out, from)
			}
		}
	}()
	return conn.LocalAddr().String(), restart
}

// OutdatePeer, ClearWriter and the Vote flags over a real socket.
func TestClientWriterMarker(t *testing.T) {
	const lease = 10 * time.Second
	request := func(c *Client, ctx context.Context) error { _, _, _, err := c.Request(ctx); return err }
	outdate, clearW, release := (*Client).OutdatePeer, (*Client).ClearWriter, (*Client).Release
	type step struct {
		advance  time.Duration
		restart  bool // restart the witness (quiet period of one lease)
		who      string
		act      func(*Client, context.Context) error
		err      error // nil, errAny, or what the error wraps
		held     bool
		left     time.Duration // with held: the lease left
		writer   bool
		outdated bool
		holder   string
	}
	cases := []struct {
		name  string
		noDir bool // the state directory is gone after the start
		steps []step
	}{
		{name: "record, deny the peer, clear", steps: []step{
			{who: nasA, act: request, held: true, left: 9 * time.Second, holder: nasA},
			{who: nasB, act: outdate, err: ErrNotRecorded, holder: nasA},
			{advance: 5 * time.Second, who: nasA, act: outdate, held: true, left: 9 * time.Second, writer: true, holder: nasA}, // renewed too
			{who: nasB, act: request, outdated: true, holder: nasA},
			{who: nasB, act: clearW, err: errAny, outdated: true, holder: nasA},
			{advance: 2 * lease, who: nasB, act: request, outdated: true},
			{who: nasA, act: request, held: true, left: 9 * time.Second, writer: true, holder: nasA},
			{who: nasA, act: clearW, held: true, left: 9 * time.Second, holder: nasA},
			{who: nasA, act: release},
			{who: nasB, act: request, held: true, left: 9 * time.Second, holder: nasB},
		}},
		{name: "witness restart: op 3 before the reinstatement keeps the lease", steps: []step{
			{who: nasA, act: request, held: true, left: 9 * time.Second, holder: nasA},
			{who: nasA, act: outdate, held: true, left: 9 * time.Second, writer: true, holder: nasA},
			{advance: time.Second, restart: true, who: nasA, act: outdate, err: ErrNotRecorded, held: true, left: 8 * time.Second, writer: true},
			{who: nasB, act: request, outdated: true},
			{who: nasA, act: request, held: true, left: 9 * time.Second, writer: true, holder: nasA},
			{who: nasA, act: outdate, held: true, left: 9 * time.Second, writer: true, holder: nasA},
		}},
		{name: "marker cannot be persisted", noDir: true, steps: []step{
			{who: nasA, act: request, held: true, left: 9 * time.Second, holder: nasA},
			{advance: time.Second, who: nasA, act: outdate, err: ErrNotRecorded, held: true, left: 8 * time.Second, holder: nasA},
			{who: nasB, act: request, holder: nasA},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := newStateFile(t)
			clock := newClock()
			cfg := Config{Pair: "vdi-nas", Key: testKey, Lease: lease, Quiet: -1, StateFile: path, Now: clock.Now, Log: testLog(t)}
			addr, restart := serveSwappable(t, cfg)
			if tc.noDir { // the state directory is gone after the start
				if err := os.RemoveAll(filepath.Dir(path)); err != nil {
					t.Fatal(err)
				}
			}
			heads := map[string]*Client{nasA: client(t, nasA, addr, clock), nasB: client(t, nasB, addr, clock)}
			for i, st := range tc.steps {
				clock.Advance(st.advance)
				if st.restart {
					cfg.Quiet = 0
					restart(cfg)
				}
				c := heads[st.who]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := st.act(c, ctx)
				cancel()
				switch {
				case st.err == nil && err != nil, st.err != nil && err == nil, st.err != nil && st.err != errAny && !errors.Is(err, st.err):
					t.Errorf("step %d (%s): err %v, want %v", i, st.who, err, st.err)
				}
				v := c.Vote()
				left := time.Duration(0)
				if v.Held {
					left = v.Expires.Sub(clock.Now())
				}
				type view struct {
					held             bool
					left             time.Duration
					writer, outdated bool
					holder           string
				}
				got := view{v.Held, left, v.Writer, v.Outdated, v.Holder}
				want := view{st.held, st.left, st.writer, st.outdated, st.holder}
				if got != want {
					t.Errorf("step %d (%s): vote %+v, want %+v", i, st.who, got, want)
				}
			}
		})
	}

	// No witness: the context's error, not a refusal.
	dead := client(t, nasA, "127.0.0.1:1", newClock())
	dead.cfg.Retry = 20 * time.Millisecond
	for name, act := range map[string]func(*Client, context.Context) error{"outdate": outdate, "clear": clearW} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := act(dead, ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNotRecorded) {
			t.Errorf("%s without a witness: %v", name, err)
		}
	}
}
