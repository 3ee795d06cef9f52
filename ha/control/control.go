// Package control is the channel between the two heads of a pair: one
// head asks the other for its status, or to release or take the active
// role during `tandem switchover`. It is HTTP over TCP on the replication
// address, and every request and answer carries an HMAC-SHA256 made with
// a key derived from the pair key, so nothing off the pair can move the
// service or read the status.
package control

import (
	"bytes"
	"context"
	"crypto/hkdf"
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
	"strconv"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/internal/lenprefix"
)

// Ops a head may ask of its peer.
const (
	OpStatus  = "status"  // the peer's status (JSON, whatever Handler returns)
	OpRelease = "release" // stop the active layers top-down, stay standby
	OpAcquire = "acquire" // start the active layers bottom-up
)

// MaxSkew bounds how far a request's timestamp may be from the
// receiver's clock. The heads' clocks come from the same NTP or RTC
// source; a minute is generous and still makes a captured request
// useless soon after.
const MaxSkew = time.Minute

// maxBody bounds a request or answer: status is a few KiB.
const maxBody = 1 << 20

const header = "X-Tandem-Auth"

// Key derives the channel's key from the pair key, bound to the pair's
// name, so the heartbeat and DRBD secrets stay independent of it.
func Key(pairKey []byte, pair string) ([]byte, error) {
	return hkdf.Key(sha256.New, pairKey, []byte("tandem/"+pair), "tandem control v1", 32)
}

// Handler answers the peer. Each call gets a context with the
// request's deadline.
type Handler interface {
	Status(ctx context.Context) (any, error)
	Release(ctx context.Context) error
	Acquire(ctx context.Context) error
}

// Server answers authenticated requests.
type Server struct {
	Key     []byte
	Handler Handler
	Log     *slog.Logger

	mu   sync.Mutex
	seen map[string]time.Time // nonces within MaxSkew: replays are refused
	srv  *http.Server
}

// Serve answers on l until Close.
func (s *Server) Serve(l net.Listener) error {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	s.mu.Lock()
	s.seen = map[string]time.Time{}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	srv := s.srv
	s.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
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

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.URL.Path, "/")
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil || r.Method != http.MethodPost {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	nonce, err := s.check(r.Header.Get(header), op, body, time.Now())
	if err != nil {
		s.Log.Warn("control: refused a request", "op", op, "from", r.RemoteAddr, "err", err)
		http.Error(w, "unauthenticated", http.StatusUnauthorized)
		return
	}
	ctx := r.Context()
	var a answer
	var res any
	switch op {
	case OpStatus:
		res, err = s.Handler.Status(ctx)
	case OpRelease:
		s.Log.Info("control: the peer asks this head to release the active role", "from", r.RemoteAddr)
		err = s.Handler.Release(ctx)
	case OpAcquire:
		s.Log.Info("control: the peer asks this head to take the active role", "from", r.RemoteAddr)
		err = s.Handler.Acquire(ctx)
	default:
		err = fmt.Errorf("unknown op %q", op)
	}
	if err != nil {
		a.Error = err.Error()
	} else {
		a.OK = true
		if res != nil {
			if a.Result, err = json.Marshal(res); err != nil {
				a.OK, a.Error = false, err.Error()
			}
		}
	}
	out, _ := json.Marshal(a)
	w.Header().Set(header, hex.EncodeToString(mac(s.Key, "answer", op, nonce, out)))
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

// check verifies a request's "<unix-ms>.<nonce>.<mac>" header and
// returns the nonce.
func (s *Server) check(h, op string, body []byte, now time.Time) (string, error) {
	parts := strings.Split(h, ".")
	if len(parts) != 3 {
		return "", errors.New("no or malformed auth header")
	}
	ms, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return "", errors.New("malformed timestamp")
	}
	got, err := hex.DecodeString(parts[2])
	if err != nil || !hmac.Equal(got, mac(s.Key, "request", op, parts[0]+"."+parts[1], body)) {
		return "", errors.New("bad MAC (another pair, or a wrong key)")
	}
	if d := now.Sub(time.UnixMilli(ms)); d > MaxSkew || d < -MaxSkew {
		return "", fmt.Errorf("timestamp is %s off this head's clock", d.Round(time.Second))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, t := range s.seen {
		if now.Sub(t) > 2*MaxSkew {
			delete(s.seen, n)
		}
	}
	if _, dup := s.seen[parts[1]]; dup {
		return "", errors.New("replayed request")
	}
	s.seen[parts[1]] = now
	return parts[1], nil
}

func formatStamp(at time.Time, nonce string) string {
	return strconv.FormatInt(at.UnixMilli(), 10) + "." + nonce
}

func hexMAC(key []byte, fields ...any) string { return hex.EncodeToString(mac(key, fields...)) }

// mac is HMAC-SHA256 over the fields, length-prefixed.
func mac(key []byte, fields ...any) []byte {
	m := hmac.New(sha256.New, key)
	lenprefix.Write(m, fields...)
	return m.Sum(nil)
}

// Client asks the peer.
type Client struct {
	Key  []byte
	Addr string // host:port of the peer's control channel
}

// Call sends op and, when out is not nil, decodes the result into it.
// An error the peer reports comes back as *PeerError.
func (c Client) Call(ctx context.Context, op string, out any) error {
	var nb [12]byte
	rand.Read(nb[:])
	stamp := formatStamp(time.Now(), hex.EncodeToString(nb[:]))
	body := []byte("{}")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.Addr+"/"+op, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(header, stamp+"."+hexMAC(c.Key, "request", op, stamp, body))
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peer %s: %s: %s", c.Addr, resp.Status, strings.TrimSpace(string(raw)))
	}
	got, err := hex.DecodeString(resp.Header.Get(header))
	nonce := strings.Split(stamp, ".")[1]
	if err != nil || !hmac.Equal(got, mac(c.Key, "answer", op, nonce, raw)) {
		return fmt.Errorf("peer %s: the answer is not authenticated", c.Addr)
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("peer %s: %w", c.Addr, err)
	}
	if !a.OK {
		return &PeerError{Op: op, Msg: a.Error}
	}
	if out != nil && len(a.Result) > 0 {
		return json.Unmarshal(a.Result, out)
	}
	return nil
}

// PeerError is a failure the peer reported.
type PeerError struct{ Op, Msg string }

func (e *PeerError) Error() string { return fmt.Sprintf("the peer could not %s: %s", e.Op, e.Msg) }
