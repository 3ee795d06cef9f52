package witness

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/internal/fakeclock"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
)

type fakeClock = fakeclock.Clock

func newClock() *fakeClock { return fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// serve runs a witness on addr ("127.0.0.1:0" for any port) until the
// test ends or stop is called.
func serve(t *testing.T, addr string, cfg Config) (s *Server, bound string, stop func()) {
	t.Helper()
	if cfg.Pair == "" {
		cfg.Pair = "vdi-nas"
	}
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	cfg.Log = testLog(t).With("side", "witness")
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(ctx, conn); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return s, conn.LocalAddr().String(), stop
}

func client(t *testing.T, node, addr string, clock *fakeClock) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Pair: "vdi-nas", Node: node, Key: testKey, Addr: addr, Now: clock.Now, Log: testLog(t).With("side", node)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type answer struct {
	granted bool
	lease   time.Duration
	holder  string
}

func ask(t *testing.T, c *Client) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, l, h, err := c.Request(ctx)
	if err != nil {
		t.Fatalf("%s: %v", c.cfg.Node, err)
	}
	return answer{g, l, h}
}

func TestLeaseGrantRenewDenyExpire(t *testing.T) {
	clock := newClock()
	const lease = 10 * time.Second
	s, addr, _ := serve(t, "127.0.0.1:0", Config{Lease: lease, Quiet: -1, Nodes: []string{"nas-a", "nas-b"}, Now: clock.Now})
	a, b := client(t, "nas-a", addr, clock), client(t, "nas-b", addr, clock)

	// The clock stands still during each exchange, so the lease a head
	// may count on is exactly the witness's minus the 10 % margin.
	steps := []struct {
		advance time.Duration
		who     *Client
		want    answer
	}{
		{0, a, answer{true, 9 * time.Second, "nas-a"}},
		{0, b, answer{false, 10 * time.Second, "nas-a"}},
		{5 * time.Second, a, answer{true, 9 * time.Second, "nas-a"}}, // renewed: witness expiry now +15 s
		{9 * time.Second, b, answer{false, time.Second, "nas-a"}},    // +14 s: still nas-a's
		{time.Second, b, answer{true, 9 * time.Second, "nas-b"}},     // +15 s: expired unrenewed, nas-b's
		{0, a, answer{false, 10 * time.Second, "nas-b"}},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		if st.who == b && i == 4 {
			// nas-a's own view ended (at +14 s) before the witness let
			// nas-b have the vote (at +15 s).
			if a.Held() {
				t.Fatalf("nas-a still counts on the vote when the witness hands it over")
			}
		}
		if got := ask(t, st.who); got != st.want {
			t.Errorf("step %d (%s): got %+v, want %+v", i, st.who.cfg.Node, got, st.want)
		}
	}
	v := b.Vote()
	if !v.Held || v.Holder != "nas-b" || !v.Expires.Equal(clock.Now().Add(9*time.Second)) || !v.Since.Equal(clock.Now()) {
		t.Errorf("nas-b vote %+v", v)
	}
	st := s.Status()
	// Challenged: each head's first request, and nas-b's at +14 s and
	// nas-a's at +15 s, whose challenges (10 s, the lease) had expired.
	want := Counters{Grants: 2, Renewals: 1, Denials: 3, Expiries: 1, Challenged: 4}
	if st.Counters != want || st.Holder != "nas-b" {
		t.Errorf("status %+v, want counters %+v, holder nas-b", st, want)
	}

	// A release hands the vote over at once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Held() {
		t.Errorf("nas-b holds the vote after releasing it")
	}
	if got := ask(t, a); got != (answer{true, 9 * time.Second, "nas-a"}) {
		t.Errorf("after release: %+v", got)
	}
	// Releasing what one does not hold changes nothing.
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Status(); got.Holder != "nas-a" || got.Counters.Releases != 1 {
		t.Errorf("after a stray release: %+v", got)
	}
}

// After a restart the witness grants nobody new for one lease, but the
// head that still holds a lease (by its own clock) is reinstated.
func TestRestartQuietPeriod(t *testing.T) {
	clock := newClock()
	const lease = 10 * time.Second
	_, addr, stop := serve(t, "127.0.0.1:0", Config{Lease: lease, Quiet: -1, Now: clock.Now})
	a, b := client(t, "nas-a", addr, clock), client(t, "nas-b", addr, clock)
	if got := ask(t, a); !got.granted {
		t.Fatalf("first grant: %+v", got)
	}
	stop()
	clock.Advance(2 * time.Second)
	s2, _, stop2 := serve(t, addr, Config{Lease: lease, Now: clock.Now})

	if got := ask(t, b); got != (answer{false, lease, ""}) {
		t.Errorf("nas-b during the quiet period: %+v", got)
	}
	if got := ask(t, a); got != (answer{true, 9 * time.Second, "nas-a"}) {
		t.Errorf("nas-a, still holding, during the quiet period: %+v", got)
	}
	if !a.Vote().Since.Equal(clock.Now().Add(-2 * time.Second)) {
		t.Errorf("reinstatement broke nas-a's run of grants: since %v", a.Vote().Since)
	}
	// The reinstated lease is a full one from the reinstatement...
	clock.Advance(lease - time.Second)
	if got := ask(t, b); got != (answer{false, time.Second, "nas-a"}) {
		t.Errorf("nas-b while nas-a's reinstated lease runs: %+v", got)
	}
	// ...and, unrenewed, ends like any other.
	clock.Advance(time.Second)
	if got := ask(t, b); !got.granted {
		t.Errorf("nas-b after nas-a's lease and the quiet period ended: %+v", got)
	}
	if c := s2.Status().Counters; c.Reinstate != 1 || c.Grants != 1 || c.Expiries != 1 {
		t.Errorf("counters %+v", c)
	}

	// Another restart nobody claims: no grant until the quiet period ends.
	stop2()
	clock.Advance(time.Hour) // nas-a's own lease long over
	serve(t, addr, Config{Lease: lease, Now: clock.Now})
	for _, c := range []*Client{a, b} {
		if got := ask(t, c); got.granted {
			t.Errorf("%s granted during the quiet period: %+v", c.cfg.Node, got)
		}
	}
	clock.Advance(lease)
	if got := ask(t, b); !got.granted {
		t.Errorf("nas-b after the quiet period: %+v", got)
	}
}

// When the witness says another head holds the vote, a head drops its own
// lease at once (possible only if the quiet period was switched off).
func TestDeniedDropsHeldLease(t *testing.T) {
	clock := newClock()
	_, addr, stop := serve(t, "127.0.0.1:0", Config{Lease: 10 * time.Second, Quiet: -1, Now: clock.Now})
	a, b := client(t, "nas-a", addr, clock), client(t, "nas-b", addr, clock)
	ask(t, a)
	stop()
	serve(t, addr, Config{Lease: 10 * time.Second, Quiet: -1, Now: clock.Now})
	if got := ask(t, b); !got.granted {
		t.Fatalf("nas-b: %+v", got)
	}
	if !a.Held() {
		t.Fatal("nas-a's own lease should still run")
	}
	if got := ask(t, a); got.granted || a.Held() {
		t.Errorf("nas-a kept the vote after the witness named nas-b: %+v held %v", got, a.Held())
	}
}

func TestRequestsDroppedAndCounted(t *testing.T) {
	clock := newClock()
	s, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Nodes: []string{"nas-a", "nas-b"}, Quiet: -1, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	req := func(key []byte, mod func(*request)) []byte {
		r := request{Op: opAcquire, Nonce: ID{1}, Boot: ID{2}, Pair: "vdi-nas", Node: "nas-a"}
		mod(&r)
		return r.marshal(key)
	}
	good := req(testKey, func(*request) {})
	badVersion := bytes.Clone(good)
	badVersion[4] = 9
	badOp := req(testKey, func(r *request) { r.Op = 7 })
	cases := []struct {
		name string
		msg  []byte
		want func(Counters) uint64
	}{
		{"garbage", []byte("hello witness"), func(c Counters) uint64 { return c.Malformed }},
		{"truncated", good[:len(good)-1], func(c Counters) uint64 { return c.Malformed }},
		{"version", badVersion, func(c Counters) uint64 { return c.Malformed }},
		{"op", badOp, func(c Counters) uint64 { return c.Malformed }},
		{"forged", req(otherKey, func(*request) {}), func(c Counters) uint64 { return c.Forged }},
		{"wrong pair", req(otherKey, func(r *request) { r.Pair = "other-nas" }), func(c Counters) uint64 { return c.WrongPair }},
		{"unknown node", req(testKey, func(r *request) { r.Node = "nas-c" }), func(c Counters) uint64 { return c.Unknown }},
	}
	for _, tc := range cases {
		before := tc.want(s.Status().Counters)
		if out := s.Handle(tc.msg, "test"); out != nil {
			t.Errorf("%s: answered", tc.name)
		}
		if got := tc.want(s.Status().Counters); got != before+1 {
			t.Errorf("%s: counter %d, want %d", tc.name, got, before+1)
		}
	}
	if s.Status().Holder != "" {
		t.Fatalf("a dropped request got the vote")
	}

	// Only a request that proves itself fresh acts, and only once.
	// Every other authentic one gets a challenge and changes nothing.
	d := &driver{t: t, s: s, boots: map[string]ID{nasA: {2}, nasB: {2}}}
	type outcome struct {
		status             Status
		holder             string
		challenged, replay uint64
	}
	check := func(what string, msg []byte, want outcome) *reply {
		t.Helper()
		before := s.Status().Counters
		rep, _ := d.send(msg)
		after := s.Status().Counters
		got := outcome{rep.Status, s.Status().Holder, after.Challenged - before.Challenged, after.Replayed - before.Replayed}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
		if rep.Status == Challenge && (rep.Holder != "" || rep.Lease != 0 || rep.Quiet || rep.Writer || rep.Outdated) {
			t.Errorf("%s: a challenge tells more: %+v", what, rep)
		}
		return rep
	}
	check("first contact", good, outcome{Challenge, "", 1, 0})
	granting := d.req(nasA, opAcquire, false)
	first := check("proven", granting, outcome{Granted, nasA, 0, 0})
	check("exact replay", granting, outcome{Challenge, nasA, 0, 1})
	if rep, _ := d.send(d.req(nasA, opRelease, false)); rep.Status != Released || s.Status().Holder != "" {
		t.Fatalf("release: %+v, holder %q", rep, s.Status().Holder)
	}
	check("replayed acquire after the release", granting, outcome{Challenge, "", 0, 1})

	// A resend with a fresh nonce and a spent challenge: the answer to
	// the first attempt was lost. Normal, but it acts no more.
	d.send(d.req(nasA, opAcquire, false))
	spent := d.chal[nasA]
	d.send(d.req(nasA, opAcquire, false))
	d.chal[nasA] = spent
	check("resend with a spent challenge", d.req(nasA, opAcquire, false), outcome{Challenge, nasA, 1, 0})
	d.chal[nasA] = ID{9, 9}
	check("a challenge never issued", d.req(nasA, opAcquire, false), outcome{Challenge, nasA, 0, 1})
	// Challenges are bound to their node.
	d.send(d.req(nasA, opAcquire, false)) // proven again
	d.chal[nasB] = d.chal[nasA]
	check("nas-a's challenge used by nas-b", d.req(nasB, opRelease, false), outcome{Challenge, nasA, 0, 1})
	check("nas-a's challenge, still good", d.req(nasA, opAcquire, false), outcome{Granted, nasA, 0, 0})
	check("resend with the first grant's challenge, spent since", func() []byte {
		d.chal[nasA] = first.Challenge
		return d.req(nasA, opRelease, false)
	}(), outcome{Challenge, nasA, 1, 0})
	// Using a challenge spends the node's older ones too: a request
	// signed before a later one acted never acts.
	d.send(d.req(nasA, opAcquire, false))
	older := d.chal[nasA]
	clock.Advance(DefaultLease / 4) // old enough that a new one is minted
	d.wit = ID{5}
	check("another witness boot", d.req(nasA, opAcquire, false), outcome{Challenge, nasA, 1, 0})
	if d.chal[nasA] == older {
		t.Fatal("no new challenge")
	}
	check("the newer challenge", d.req(nasA, opAcquire, false), outcome{Granted, nasA, 0, 0})
	d.chal[nasA] = older
	check("an older challenge, unused", d.req(nasA, opRelease, false), outcome{Challenge, nasA, 0, 1})
	// An expired challenge.
	d.send(d.req(nasA, opAcquire, false))
	clock.Advance(DefaultLease)
	check("expired challenge", d.req(nasA, opRelease, false), outcome{Challenge, "", 1, 0})
	check("challenge of the last answer", d.req(nasA, opAcquire, false), outcome{Granted, nasA, 0, 0})

	// Replies are not requests: a reply fed back is malformed.
	before := s.Status().Counters.Malformed
	if s.Handle(d.s.Handle(good, "test"), "test") != nil || s.Status().Counters.Malformed != before+1 {
		t.Errorf("a reply passed for a request")
	}
}

// The client ignores forged answers and answers to requests it did not
// send, resends when nothing comes, and reports no answer as an error.
func TestClientRejectsBadAnswersAndRetries(t *testing.T) {
	clock := newClock()
	srv, err := NewServer(Config{Pair: "vdi-nas", Key: testKey, Lease: 9 * time.Second, Quiet: -1, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	// A hand-made witness: ignores the first request, answers the second
	// late, with a forged and a stale reply before the real one.
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, MaxMessage)
		for n := 0; ; n++ {
			k, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 0 {
				continue // lost
			}
			req, err := parseRequest(buf[:k], "vdi-nas", testKey)
			if err != nil {
				t.Errorf("request: %v", err)
				return
			}
			forged := reply{Status: Granted, Nonce: req.Nonce, Lease: time.Hour, Pair: "vdi-nas", Holder: "nas-a"}
			stale := forged
			stale.Nonce = ID{0xff}
			// The answer takes 2 s: the lease counts from the send.
			clock.Advance(2 * time.Second)
			conn.WriteTo(forged.marshal(otherKey), from)
			conn.WriteTo(stale.marshal(testKey), from)
			conn.WriteTo(srv.Handle(buf[:k], from.String()), from)
		}
	}()
	c, err := NewClient(ClientConfig{Pair: "vdi-nas", Node: "nas-a", Key: testKey, Addr: conn.LocalAddr().String(),
		Retry: 50 * time.Millisecond, Margin: time.Second, Now: clock.Now, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := ask(t, c); got != (answer{true, 9*time.Second - time.Second - 2*time.Second, "nas-a"}) {
		t.Errorf("got %+v", got)
	}
	// A forged and a stale answer before the challenge (first contact)
	// and before the grant.
	if d := c.Vote().Dropped; d != 4 {
		t.Errorf("dropped %d answers, want 4", d)
	}

	// Nobody there: an error once ctx ends, and no vote.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.LocalAddr().String()
	dead.Close()
	c2, err := NewClient(ClientConfig{Pair: "vdi-nas", Node: "nas-b", Key: testKey, Addr: addr, Retry: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	g, _, _, err := c2.Request(ctx)
	if g || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no witness: granted %v, err %v", g, err)
	}
}

// A margin as long as the lease leaves nothing to count on.
func TestMarginEatsLease(t *testing.T) {
	clock := newClock()
	_, addr, _ := serve(t, "127.0.0.1:0", Config{Lease: time.Second, Quiet: -1, Now: clock.Now})
	c, err := NewClient(ClientConfig{Pair: "vdi-nas", Node: "nas-a", Key: testKey, Addr: addr, Margin: time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := ask(t, c); got.granted || c.Held() {
		t.Errorf("granted with nothing left: %+v", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"short key": {Pair: "p", Key: testKey[:10]},
		"no pair":   {Key: testKey},
		"neg lease": {Pair: "p", Key: testKey, Lease: -time.Second},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("server %s: no error", name)
		}
	}
	for name, cfg := range map[string]ClientConfig{
		"short key": {Pair: "p", Node: "a", Key: testKey[:10], Addr: "127.0.0.1:1"},
		"no node":   {Pair: "p", Key: testKey, Addr: "127.0.0.1:1"},
		"bad addr":  {Pair: "p", Node: "a", Key: testKey, Addr: "nowhere"},
	} {
		if c, err := NewClient(cfg); err == nil {
			c.Close()
			t.Errorf("client %s: no error", name)
		}
	}
}
