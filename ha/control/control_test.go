package control

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeHandler struct {
	node               string
	mu                 sync.Mutex
	released, acquired int
	acquireErr         error
}

func (h *fakeHandler) Status(context.Context) (any, error) {
	return map[string]string{"node": h.node}, nil
}

func (h *fakeHandler) Release(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released++
	return nil
}

func (h *fakeHandler) Acquire(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.acquired++
	return h.acquireErr
}

func (h *fakeHandler) counts() (released, acquired int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released, h.acquired
}

func testKey(t *testing.T, pair string) []byte {
	t.Helper()
	k, err := Key([]byte("0123456789abcdef0123456789abcdef"), pair)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// syncBuf is a log sink the tests read the refusal reasons from.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// countingListener records the bytes the server reads and how many
// connections it holds at once.
type countingListener struct {
	net.Listener
	read       atomic.Int64
	open, peak atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.open.Add(1)
	for {
		p := l.peak.Load()
		if n <= p || l.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return &countingConn{Conn: c, l: l}, nil
}

type countingConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

type head struct {
	srv  *Server
	h    *fakeHandler
	addr string
	l    *countingListener
	log  *syncBuf
}

// startHead serves node's control channel on 127.0.0.1.
func startHead(t *testing.T, key []byte, node, peer string, tune func(*Server)) *head {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hd := &head{h: &fakeHandler{node: node}, addr: l.Addr().String(), l: &countingListener{Listener: l}, log: &syncBuf{}}
	hd.srv = &Server{Key: key, Node: node, Peer: peer, Handler: hd.h, Log: slog.New(slog.NewTextHandler(hd.log, nil))}
	if tune != nil {
		tune(hd.srv)
	}
	done := make(chan error, 1)
	go func() { done <- hd.srv.Serve(hd.l) }()
	t.Cleanup(func() {
		hd.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// Serve sets the boot before it accepts; wait for it so that tests
	// calling check directly see it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		hd.srv.mu.Lock()
		up := hd.srv.boot != ""
		hd.srv.mu.Unlock()
		if up {
			return hd
		}
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(time.Millisecond)
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestTwoHeads: the normal calls between two heads, both ways.
func TestTwoHeads(t *testing.T) {
	key := testKey(t, "lab")
	a := startHead(t, key, "head-a", "head-b", nil)
	b := startHead(t, key, "head-b", "head-a", nil)
	b.h.acquireErr = errors.New("disk is Outdated")
	ctx := ctxFor(t, 10*time.Second)

	tests := []struct {
		name     string
		from, to string
		addr     string
		key      []byte
		op       string
		wantNode string // status: the node that answered
		wantErr  string // "" = success
	}{
		{"a asks b's status", "head-a", "head-b", b.addr, key, OpStatus, "head-b", ""},
		{"b asks a's status", "head-b", "head-a", a.addr, key, OpStatus, "head-a", ""},
		{"a asks b to release", "head-a", "head-b", b.addr, key, OpRelease, "", ""},
		{"b asks a to acquire", "head-b", "head-a", a.addr, key, OpAcquire, "", ""},
		{"acquire fails on b", "head-a", "head-b", b.addr, key, OpAcquire, "", "the peer could not acquire: disk is Outdated"},
		{"another pair's key", "head-a", "head-b", b.addr, testKey(t, "other-pair"), OpRelease, "", "401 Unauthorized"},
		{"a stranger", "head-c", "head-b", b.addr, key, OpRelease, "", "401 Unauthorized"},
		{"unknown op", "head-a", "head-b", b.addr, key, "format", "", "unknown op"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out map[string]string
			err := Client{Key: tc.key, Node: tc.from, Peer: tc.to, Addr: tc.addr}.Call(ctx, tc.op, &out)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Call: %v", err)
				}
				if tc.wantNode != "" && out["node"] != tc.wantNode {
					t.Errorf("status = %v, want node %s", out, tc.wantNode)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Call = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	if r, q := b.h.counts(); r != 1 || q != 1 {
		t.Errorf("head-b saw %d releases and %d acquires; want 1 and 1 (the forged release must not arrive)", r, q)
	}
	if r, q := a.h.counts(); r != 0 || q != 1 {
		t.Errorf("head-a saw %d releases and %d acquires; want 0 and 1", r, q)
	}
}

// TestReflectionRefused: a request head-a means for head-b, steered
// back to head-a's own server, must not move head-a's service.
func TestReflectionRefused(t *testing.T) {
	key := testKey(t, "lab")
	a := startHead(t, key, "head-a", "head-b", nil)
	ctx := ctxFor(t, 10*time.Second)
	for _, op := range []string{OpRelease, OpAcquire, OpStatus} {
		t.Run(op, func(t *testing.T) {
			// The attacker redirects head-b's address to head-a.
			err := Client{Key: key, Node: "head-a", Peer: "head-b", Addr: a.addr}.Call(ctx, op, nil)
			if err == nil || !strings.Contains(err.Error(), "401") {
				t.Fatalf("reflected %s = %v, want 401", op, err)
			}
			if !strings.Contains(a.log.String(), "reflected") {
				t.Errorf("log does not name the reflection:\n%s", a.log)
			}
		})
	}
	if r, q := a.h.counts(); r != 0 || q != 0 {
		t.Errorf("head-a ran %d releases and %d acquires from its own reflected requests", r, q)
	}
}

// recorder is an attacker in the middle: it forwards connections to
// target and keeps what each side sent.
type recorder struct {
	addr   string
	target string
	mu     sync.Mutex
	conns  []exchange
}

type exchange struct{ req, resp []byte }

func startRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{addr: l.Addr().String(), target: target}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go r.relay(c)
		}
	}()
	return r
}

func (r *recorder) relay(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer s.Close()
	var req, resp bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(io.MultiWriter(s, &req), c)
		s.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(io.MultiWriter(c, &resp), s)
	c.Close()
	<-done
	r.mu.Lock()
	r.conns = append(r.conns, exchange{req.Bytes(), resp.Bytes()})
	r.mu.Unlock()
}

// post waits for the recorded POST.
func (r *recorder) post(t *testing.T) exchange {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		r.mu.Lock()
		for _, e := range r.conns {
			if bytes.HasPrefix(e.req, []byte("POST ")) {
				r.mu.Unlock()
				return e
			}
		}
		r.mu.Unlock()
	}
	t.Fatal("no POST recorded")
	return exchange{}
}

// send writes raw bytes to addr and returns the answer's status code.
func send(t *testing.T, addr string, raw []byte) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReplayRefused: a recorded release, played again to the same
// server or to the same head after a restart, moves nothing.
func TestReplayRefused(t *testing.T) {
	key := testKey(t, "lab")
	ctx := ctxFor(t, 10*time.Second)
	b := startHead(t, key, "head-b", "head-a", nil)
	rec := startRecorder(t, b.addr)
	if err := (Client{Key: key, Node: "head-a", Peer: "head-b", Addr: rec.addr}).Call(ctx, OpRelease, nil); err != nil {
		t.Fatalf("the recorded call: %v", err)
	}
	recorded := rec.post(t)

	// head-b restarts: a new boot on the same key and names.
	b2 := startHead(t, key, "head-b", "head-a", nil)

	tests := []struct {
		name    string
		to      *head
		wantLog string
	}{
		{"to the same server", b, "already used"},
		{"to the same server again", b, "already used"},
		{"to the restarted server", b2, "earlier boot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := tc.to.h.counts()
			if code := send(t, tc.to.addr, recorded.req); code != http.StatusUnauthorized {
				t.Errorf("replay answered %d, want 401", code)
			}
			if after, _ := tc.to.h.counts(); after != before {
				t.Errorf("the replayed release ran (%d → %d)", before, after)
			}
			if !strings.Contains(tc.to.log.String(), tc.wantLog) {
				t.Errorf("log does not say %q:\n%s", tc.wantLog, tc.to.log)
			}
		})
	}

	// The other way round: an old answer to a new call (the attacker
	// also hands out the old challenge) is refused by the client, whose
	// own nonce is not in it.
	t.Run("an old answer to a new call", func(t *testing.T) {
		var chal []byte
		rec.mu.Lock()
		for _, e := range rec.conns {
			if bytes.HasPrefix(e.req, []byte("GET ")) {
				chal = e.resp
			}
		}
		rec.mu.Unlock()
		fake := fakePeer(t, chal, recorded.resp)
		err := Client{Key: key, Node: "head-a", Peer: "head-b", Addr: fake}.Call(ctx, OpRelease, nil)
		if err == nil || !strings.Contains(err.Error(), "not authenticated") {
			t.Fatalf("Call with a replayed answer = %v, want not authenticated", err)
		}
	})
}

// fakePeer answers GETs with chal and POSTs with ans, both raw.
func fakePeer(t *testing.T, chal, ans []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				if req.Method == http.MethodGet {
					c.Write(chal)
				} else {
					c.Write(ans)
				}
			}()
		}
	}()
	return l.Addr().String()
}

// validAuth asks srv for a challenge and signs op for body with it, as
// head-a would.
func validAuth(t *testing.T, key []byte, addr, op string, body []byte) string {
	t.Helper()
	c := Client{Key: key, Node: "head-a", Peer: "head-b", Addr: addr}
	a, err := c.fetchChallenge(ctxFor(t, 5*time.Second), &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	a.bodySum = sum[:]
	a.mac = a.requestMAC(key, op)
	return a.String()
}

// TestUnauthenticatedBodyNotRead: a request that fails authentication
// is refused from its header: the handler does not run and the server
// reads (nearly) nothing of a huge body.
func TestUnauthenticatedBodyNotRead(t *testing.T) {
	key := testKey(t, "lab")
	b := startHead(t, key, "head-b", "head-a", nil)
	const huge = 64 << 20
	good := validAuth(t, key, b.addr, OpRelease, nil)
	tampered := good[:len(good)-1] + "0"
	if tampered == good {
		tampered = good[:len(good)-1] + "1"
	}
	wrongKey := validAuth(t, testKey(t, "other-pair"), b.addr, OpRelease, nil)
	reflected := strings.Replace(validAuth(t, key, b.addr, OpRelease, nil), "head-a head-b", "head-b head-a", 1)

	tests := []struct {
		name, auth string
	}{
		{"no auth header", ""},
		{"garbage", "garbage"},
		{"tampered MAC", tampered},
		{"another pair's key", wrongKey},
		{"reflected names", reflected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", b.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			before := b.l.read.Load()
			hdr := fmt.Sprintf("POST /release HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", huge)
			if tc.auth != "" {
				hdr += authHeader + ": " + tc.auth + "\r\n"
			}
			if _, err := io.WriteString(c, hdr+"\r\n"); err != nil {
				t.Fatal(err)
			}
			// The body streams until the server closes; it must not
			// have to take it.
			go io.Copy(c, io.LimitReader(zeros{}, huge))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
			if n := b.l.read.Load() - before; n > 64<<10 {
				t.Errorf("the server read %d bytes of an unauthenticated request", n)
			}
		})
	}
	if r, _ := b.h.counts(); r != 0 {
		t.Errorf("the handler ran %d times for unauthenticated requests", r)
	}

	// An authenticated header with another body: refused after the
	// (bounded) body is read, before the handler.
	t.Run("body not the one signed", func(t *testing.T) {
		body := "{}"
		raw := fmt.Sprintf("POST /release HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s: %s\r\n\r\n%s",
			len(body), authHeader, validAuth(t, key, b.addr, OpRelease, nil), body)
		if code := send(t, b.addr, []byte(raw)); code != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", code)
		}
		if r, _ := b.h.counts(); r != 0 {
			t.Errorf("the handler ran for a body that was not signed")
		}
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestSlowConnectionsClosed: connections that send too little too
// slowly are closed by the read timeout.
func TestSlowConnectionsClosed(t *testing.T) {
	key := testKey(t, "lab")
	const timeout = 200 * time.Millisecond
	b := startHead(t, key, "head-b", "head-a", func(s *Server) {
		s.ReadTimeout, s.WriteTimeout = timeout, timeout
	})
	partialBody := func(auth string) func(net.Conn) {
		return func(c net.Conn) {
			fmt.Fprintf(c, "POST /release HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n%s: %s\r\n\r\n{", authHeader, auth)
		}
	}
	tests := []struct {
		name string
		do   func(c net.Conn) // what the slow client sends; then it stalls
	}{
		{"idle", func(net.Conn) {}},
		{"a header trickling in", func(c net.Conn) {
			io.WriteString(c, "POST /status HTTP/1.1\r\n")
			for i := 0; i < 40; i++ {
				if _, err := io.WriteString(c, "X"); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}},
		{"a stalled body, authenticated", partialBody(validAuth(t, key, b.addr, OpRelease, make([]byte, 100)))},
		{"a stalled body, unauthenticated", partialBody("garbage")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", b.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			go tc.do(c)
			c.SetReadDeadline(start.Add(2 * time.Second))
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server still holds the connection after %s", time.Since(start).Round(time.Millisecond))
			}
		})
	}
	t.Cleanup(func() {
		if r, _ := b.h.counts(); r != 0 {
			t.Errorf("the handler ran %d times", r)
		}
	})
}

// TestConnectionCap: the server holds at most MaxConns connections;
// the peer gets through once the squatters' time is up.
func TestConnectionCap(t *testing.T) {
	key := testKey(t, "lab")
	const maxConns = 3
	b := startHead(t, key, "head-b", "head-a", func(s *Server) {
		s.MaxConns = maxConns
		s.ReadTimeout = 300 * time.Millisecond
	})
	var squat []net.Conn
	for i := 0; i < 3*maxConns; i++ {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		squat = append(squat, c)
	}
	// Let the server accept what it will.
	time.Sleep(100 * time.Millisecond)
	if n := b.l.open.Load(); n > maxConns {
		t.Errorf("the server holds %d connections, cap %d", n, maxConns)
	}
	// The squatters are dropped after the read timeout, batch by batch,
	// and the peer's call gets its turn.
	if err := (Client{Key: key, Node: "head-a", Peer: "head-b", Addr: b.addr}).Call(ctxFor(t, 10*time.Second), OpStatus, nil); err != nil {
		t.Errorf("the peer's call behind the squatters: %v", err)
	}
	if p := b.l.peak.Load(); p > maxConns {
		t.Errorf("the server held %d connections at once, cap %d", p, maxConns)
	}
	for _, c := range squat {
		c.Close()
	}
}

// TestCheck plays the header checks one by one.
func TestCheck(t *testing.T) {
	key := testKey(t, "lab")
	s := &Server{Key: key, Node: "head-b", Peer: "head-a", ChallengeTTL: time.Minute, MaxChallenges: 4,
		boot: "boot1", chals: map[string]time.Time{}}
	now := time.Now()
	sign := func(from, to, boot, nonce string, k []byte) string {
		sum := sha256.Sum256(nil)
		a := auth{from: from, to: to, boot: boot, nonce: nonce, cnonce: "c", bodySum: sum[:]}
		a.mac = a.requestMAC(k, OpRelease)
		return a.String()
	}
	_, evicted := s.challenge(now.Add(-time.Second)) // the oldest
	_, n1 := s.challenge(now)
	_, n2 := s.challenge(now)
	_, n3 := s.challenge(now)
	s.challenge(now) // the table is full: evicted goes
	tests := []struct {
		name, header, wantErr string
	}{
		{"fresh", sign("head-a", "head-b", "boot1", n1, key), ""},
		{"replayed", sign("head-a", "head-b", "boot1", n1, key), "already used"},
		{"an earlier boot", sign("head-a", "head-b", "boot0", n2, key), "earlier boot"},
		{"never issued", sign("head-a", "head-b", "boot1", "n9", key), "unknown"},
		{"evicted from a full table", sign("head-a", "head-b", "boot1", evicted, key), "unknown"},
		{"reflected", sign("head-b", "head-a", "boot1", n2, key), "reflected"},
		{"a stranger", sign("head-c", "head-b", "boot1", n2, key), "not the peer"},
		{"for someone else", sign("head-a", "head-c", "boot1", n2, key), "addressed to"},
		{"wrong key", sign("head-a", "head-b", "boot1", n2, []byte("k")), "bad MAC"},
		{"malformed", "garbage", "malformed"},
		{"still usable after the refusals", sign("head-a", "head-b", "boot1", n2, key), ""},
		{"expired", sign("head-a", "head-b", "boot1", n3, key), "expired"},
	}
	for _, tc := range tests {
		at := now
		if tc.name == "expired" {
			at = now.Add(2 * time.Minute)
		}
		_, err := s.check(tc.header, OpRelease, at)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: check = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
	if len(s.chals) > s.MaxChallenges {
		t.Errorf("%d challenges outstanding, cap %d", len(s.chals), s.MaxChallenges)
	}
}
