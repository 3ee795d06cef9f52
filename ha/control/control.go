// Package control is the channel between the two heads of a pair: one
// head asks the other for its status, or to release or take the active
// role during `tandem switchover`. It is HTTP over TCP on the replication
// address, with a key derived from the pair key.
//
// Every call is two round trips. The client first fetches a challenge
// (GET /challenge: the server's boot ID and a single-use nonce). Its
// request then carries, in one header, sender, receiver, that boot ID
// and nonce, a nonce of its own, the body's SHA-256 and an HMAC-SHA256
// over all of them and the op. The server checks that header before it
// reads any body; the answer's MAC binds the same fields, so each side
// knows the message is fresh (it chose a nonce in it) and meant for it.
// See docs/ha.md, "Control channel".
package control

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/internal/lenprefix"
	"tandem.dev/tandem/site"
)

// Ops a head may ask of its peer.
const (
	OpStatus  = "status"  // the peer's status (JSON, whatever Handler returns)
	OpRelease = "release" // stop the active layers top-down, stay standby
	OpAcquire = "acquire" // start the active layers bottom-up
)

const (
	// maxRequest bounds a request body; today's ops send none.
	maxRequest = 4 << 10
	// maxAnswer bounds an answer: status is a few KiB.
	maxAnswer = 1 << 20

	authHeader      = "X-Tandem-Auth"
	challengeHeader = "X-Tandem-Challenge"
	challengePath   = "/challenge"
	nonceLen        = 16
)

// Defaults for the Server's zero fields.
const (
	DefaultReadTimeout   = 5 * time.Second
	DefaultWriteTimeout  = 5 * time.Second
	DefaultOpTimeout     = 3 * time.Minute // above the supervisor's 2 min release and acquire budgets
	DefaultMaxConns      = 16
	DefaultChallengeTTL  = 10 * time.Second
	DefaultMaxChallenges = 64
)

// Key derives the channel's key from the pair key (site.SubKey), bound
// to the pair's name, so the other roles' keys stay independent of it.
func Key(pairKey []byte, pair string) ([]byte, error) {
	return site.SubKey(pairKey, pair, site.PurposeControl, "")
}

// Handler answers the peer. Each call gets a context with the
// request's deadline.
type Handler interface {
	Status(ctx context.Context) (any, error)
	Release(ctx context.Context) error
	Acquire(ctx context.Context) error
}

// Server answers authenticated requests from Peer addressed to Node.
type Server struct {
	Key     []byte
	Node    string // this head: requests must name it as the receiver
	Peer    string // the other head: the only sender accepted
	Handler Handler
	Log     *slog.Logger

	// Zero means the default. ReadTimeout covers a request's headers
	// and body (and an idle connection: keep-alives are off),
	// WriteTimeout an answer given before the op runs, OpTimeout an
	// authenticated op and its answer.
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	OpTimeout     time.Duration
	MaxConns      int           // connections held at once; more wait in the kernel's backlog
	ChallengeTTL  time.Duration // how long a challenge may wait for its request
	MaxChallenges int           // outstanding challenges; the oldest goes first

	mu    sync.Mutex
	boot  string               // hex, random per Serve, never persisted
	chals map[string]time.Time // outstanding nonce → expiry
	srv   *http.Server
}

// Serve answers on l until Close. Each call starts a new boot: the
// challenges of an earlier one are void.
func (s *Server) Serve(l net.Listener) error {
	if s.Node == "" || s.Peer == "" || s.Node == s.Peer {
		return fmt.Errorf("control server: node %q and peer %q must be set and differ", s.Node, s.Peer)
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&s.ReadTimeout, DefaultReadTimeout)
	def(&s.WriteTimeout, DefaultWriteTimeout)
	def(&s.OpTimeout, DefaultOpTimeout)
	def(&s.ChallengeTTL, DefaultChallengeTTL)
	if s.MaxConns <= 0 {
		s.MaxConns = DefaultMaxConns
	}
	if s.MaxChallenges <= 0 {
		s.MaxChallenges = DefaultMaxChallenges
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.ReadTimeout,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		IdleTimeout:       s.ReadTimeout,
		MaxHeaderBytes:    2 << 10,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug),
	}
	// One request per connection: the server then never drains an
	// unread body to reuse the connection.
	srv.SetKeepAlivesEnabled(false)
	s.mu.Lock()
	s.boot = randHex()
	s.chals = map[string]time.Time{}
	s.srv = srv
	s.mu.Unlock()
	err := srv.Serve(newLimitListener(l, s.MaxConns))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("control server: %w", err)
}

// Close stops the server.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// answer is the body of every reply.
type answer struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// auth is a request's authentication header, in wire order.
type auth struct {
	from, to, boot, nonce, cnonce string
	bodySum, mac                  []byte
}

func (a auth) String() string {
	return strings.Join([]string{a.from, a.to, a.boot, a.nonce, a.cnonce, hex.EncodeToString(a.bodySum), hex.EncodeToString(a.mac)}, " ")
}

func parseAuth(h string) (auth, error) {
	f := strings.Split(h, " ")
	if len(f) != 7 {
		return auth{}, errors.New("no or malformed auth header")
	}
	a := auth{from: f[0], to: f[1], boot: f[2], nonce: f[3], cnonce: f[4]}
	var err1, err2 error
	a.bodySum, err1 = hex.DecodeString(f[5])
	a.mac, err2 = hex.DecodeString(f[6])
	if err1 != nil || err2 != nil || len(a.bodySum) != sha256.Size {
		return auth{}, errors.New("malformed auth header")
	}
	return a, nil
}

func (a auth) requestMAC(key []byte, op string) []byte {
	return mac(key, "request", op, a.from, a.to, a.boot, a.nonce, a.cnonce, a.bodySum)
}

// answerMAC is made by the receiver of the request, so sender and
// receiver swap.
func (a auth) answerMAC(key []byte, op string, body []byte) []byte {
	return mac(key, "answer", op, a.to, a.from, a.boot, a.nonce, a.cnonce, body)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == challengePath {
		boot, nonce := s.challenge(time.Now())
		w.Header().Set(challengeHeader, boot+" "+nonce)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	op := strings.TrimPrefix(r.URL.Path, "/")
	if r.Method != http.MethodPost {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	// Only the header is checked here; the body is still unread.
	a, err := s.check(r.Header.Get(authHeader), op, time.Now())
	if err != nil {
		s.Log.Warn("control: refused a request", "op", op, "from", r.RemoteAddr, "err", err)
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return
	}
	if r.ContentLength < 0 || r.ContentLength > maxRequest {
		http.Error(w, "request body too large or of unknown length", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest))
	if sum := sha256.Sum256(body); err != nil || !hmac.Equal(sum[:], a.bodySum) {
		s.Log.Warn("control: refused a request whose body does not match its MAC", "op", op, "from", r.RemoteAddr, "err", err)
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return
	}
	// The peer is authenticated: give the op its time (release and
	// acquire stop or start the whole stack).
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(s.OpTimeout)
	if err := errors.Join(rc.SetReadDeadline(deadline), rc.SetWriteDeadline(deadline)); err != nil {
		s.Log.Warn("control: cannot extend the connection's deadlines", "op", op, "err", err)
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	var ans answer
	var res any
	switch op {
	case OpStatus:
		res, err = s.Handler.Status(ctx)
	case OpRelease:
		s.Log.Info("control: the peer asks this head to release the active role", "peer", a.from, "from", r.RemoteAddr)
		err = s.Handler.Release(ctx)
	case OpAcquire:
		s.Log.Info("control: the peer asks this head to take the active role", "peer", a.from, "from", r.RemoteAddr)
		err = s.Handler.Acquire(ctx)
	default:
		err = fmt.Errorf("unknown op %q", op)
	}
	if err != nil {
		ans.Error = err.Error()
	} else {
		ans.OK = true
		if res != nil {
			if ans.Result, err = json.Marshal(res); err != nil {
				ans.OK, ans.Error = false, err.Error()
			}
		}
	}
	out, _ := json.Marshal(ans)
	w.Header().Set(authHeader, hex.EncodeToString(a.answerMAC(s.Key, op, out)))
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

// challenge issues a single-use nonce under this boot. The table is
// bounded: when full, the oldest outstanding challenge is dropped (a
// flood of challenges can delay the peer, never let a replay in).
func (s *Server) challenge(now time.Time) (boot, nonce string) {
	nonce = randHex()
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, exp := range s.chals {
		if now.After(exp) {
			delete(s.chals, n)
		}
	}
	for len(s.chals) >= s.MaxChallenges {
		var oldest string
		for n, exp := range s.chals {
			if oldest == "" || exp.Before(s.chals[oldest]) {
				oldest = n
			}
		}
		delete(s.chals, oldest)
	}
	s.chals[nonce] = now.Add(s.ChallengeTTL)
	return s.boot, nonce
}

// check verifies a request's auth header against this server's boot and
// outstanding challenges, and consumes the challenge.
func (s *Server) check(h, op string, now time.Time) (auth, error) {
	a, err := parseAuth(h)
	if err != nil {
		return auth{}, err
	}
	switch {
	case a.from == s.Node:
		return auth{}, fmt.Errorf("reflected: the request names this head (%s) as its sender", a.from)
	case a.from != s.Peer:
		return auth{}, fmt.Errorf("sender %q is not the peer %q", a.from, s.Peer)
	case a.to != s.Node:
		return auth{}, fmt.Errorf("addressed to %q, not to this head %q", a.to, s.Node)
	}
	if !hmac.Equal(a.mac, a.requestMAC(s.Key, op)) {
		return auth{}, errors.New("bad MAC (another pair, or a wrong key)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.boot != s.boot {
		return auth{}, errors.New("replayed: the request is for an earlier boot of this head")
	}
	exp, ok := s.chals[a.nonce]
	if !ok {
		return auth{}, errors.New("replayed: unknown or already used challenge")
	}
	delete(s.chals, a.nonce)
	if now.After(exp) {
		return auth{}, errors.New("expired challenge")
	}
	return a, nil
}

func randHex() string {
	b := make([]byte, nonceLen)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// mac is HMAC-SHA256 over the fields, length-prefixed.
func mac(key []byte, fields ...any) []byte {
	m := hmac.New(sha256.New, key)
	lenprefix.Write(m, fields...)
	return m.Sum(nil)
}

// limitListener holds at most cap(sem) connections open: over the cap,
// Accept waits, so nobody can use up PID 1's file descriptors.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	once sync.Once
	done chan struct{}
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// CloseWrite lets net/http half-close before it closes, as on a bare
// TCP connection.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Client asks the peer.
type Client struct {
	Key  []byte
	Node string // this head, the sender
	Peer string // the other head, the receiver
	Addr string // host:port of the peer's control channel
}

// Call sends op and, when out is not nil, decodes the result into it.
// An error the peer reports comes back as *PeerError.
func (c Client) Call(ctx context.Context, op string, out any) error {
	return c.call(ctx, op, nil, out)
}

func (c Client) call(ctx context.Context, op string, body []byte, out any) error {
	if c.Node == "" || c.Peer == "" {
		return errors.New("control client: node and peer must be set")
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	a, err := c.fetchChallenge(ctx, hc)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	a.bodySum = sum[:]
	a.mac = a.requestMAC(c.Key, op)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.Addr+"/"+op, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	req.Header.Set(authHeader, a.String())
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peer %s: %s: %s", c.Addr, resp.Status, strings.TrimSpace(string(raw)))
	}
	got, err := hex.DecodeString(resp.Header.Get(authHeader))
	if err != nil || !hmac.Equal(got, a.answerMAC(c.Key, op, raw)) {
		return fmt.Errorf("peer %s: the answer is not authenticated", c.Addr)
	}
	var ans answer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	if !ans.OK {
		return &PeerError{Op: op, Msg: ans.Error}
	}
	if out != nil && len(ans.Result) > 0 {
		if err := json.Unmarshal(ans.Result, out); err != nil {
			return fmt.Errorf("peer %s: %s result: %w", c.Addr, op, err)
		}
	}
	return nil
}

// fetchChallenge asks the peer for a fresh challenge. It needs no
// authentication: a forged one only makes the request fail, and the
// client's own nonce keeps an old answer from passing for a new one.
func (c Client) fetchChallenge(ctx context.Context, hc *http.Client) (auth, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+challengePath, nil)
	if err != nil {
		return auth{}, fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return auth{}, fmt.Errorf("peer %s: challenge: %w", c.Addr, err)
	}
	resp.Body.Close()
	f := strings.Split(resp.Header.Get(challengeHeader), " ")
	if resp.StatusCode != http.StatusNoContent || len(f) != 2 || f[0] == "" || f[1] == "" {
		return auth{}, fmt.Errorf("peer %s: no challenge (%s)", c.Addr, resp.Status)
	}
	return auth{from: c.Node, to: c.Peer, boot: f[0], nonce: f[1], cnonce: randHex()}, nil
}

// PeerError is a failure the peer reported.
type PeerError struct{ Op, Msg string }

func (e *PeerError) Error() string { return fmt.Sprintf("the peer could not %s: %s", e.Op, e.Msg) }
