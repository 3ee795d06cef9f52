package wizard

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"tandem.dev/tandem/site"
)

// Client drives one head's wizard through its JSON API (api.go), as
// `tandem pair` does from a terminal. It pins the head's TLS certificate
// to the fingerprint the operator read on the head's console: before
// anything is sent, the certificate must match.
type Client struct {
	addr  string
	base  string
	hc    *http.Client
	pin   []byte
	token string

	mu   sync.Mutex
	seen []byte
}

// CertMismatchError: the head at Addr showed another certificate than
// the one pinned. Nothing was sent to it.
type CertMismatchError struct {
	Addr       string
	Want, Seen []byte
}

func (e *CertMismatchError) Error() string {
	return fmt.Sprintf("the head at %s shows the TLS certificate SHA-256 %s, not %s", e.Addr, FormatFingerprint(e.Seen), FormatFingerprint(e.Want))
}

// APIError is a refusal from the wizard: Code is one of the API's error
// codes (api.go), Msg its words.
type APIError struct {
	Status       int
	Code         string
	Msg          string
	AttemptsLeft int    // wrong-code: wrong codes left before the code burns
	Fingerprint  []byte // peer-fingerprint: what the other head shows
}

func (e *APIError) Error() string { return e.Msg }

// Progress is the create step's progress, as the progress page shows it.
type Progress = progress

// NormalizeAddr makes host[:port] an address to dial: an IP address, and
// port 443 unless given.
func NormalizeAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, "443"
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return "", fmt.Errorf("%q is not an IP address", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q is not a port", port)
	}
	return net.JoinHostPort(ip.Unmap().String(), port), nil
}

// NewClient prepares a client for the wizard at addr (host[:port]),
// pinned to the certificate fingerprint pin.
func NewClient(addr string, pin []byte) (*Client, error) {
	addr, err := NormalizeAddr(addr)
	if err != nil {
		return nil, err
	}
	if len(pin) == 0 {
		return nil, errors.New("the head's certificate fingerprint is needed: without it, whoever answers at the address gets the setup code")
	}
	c := &Client{addr: addr, base: "https://" + addr, pin: pin}
	tr := &http.Transport{
		Proxy:       nil, // the head is on the management network
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS13,
			// No CA vouches for a head: the pin does. TLS still checks
			// that the head holds the certificate's key.
			InsecureSkipVerify: true,
			VerifyConnection:   c.verify,
		},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 90 * time.Second, // pairing takes a while
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       30 * time.Second,
	}
	c.hc = &http.Client{Transport: tr, Timeout: 2 * time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c, nil
}

func (c *Client) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return &CertMismatchError{Addr: c.addr, Want: c.pin}
	}
	fp := certFingerprint(cs.PeerCertificates[0].Raw)
	c.mu.Lock()
	c.seen = fp
	c.mu.Unlock()
	if !hmac.Equal(fp, c.pin) {
		return &CertMismatchError{Addr: c.addr, Want: c.pin, Seen: fp}
	}
	return nil
}

// Addr is the head's address, as dialled.
func (c *Client) Addr() string { return c.addr }

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// call sends a request (a POST with a JSON body unless in is nil and
// method is GET) and decodes a 2xx answer into out.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if method == http.MethodPost {
		if in == nil {
			in = struct{}{}
		}
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var cm *CertMismatchError
		if errors.As(err, &cm) {
			return cm
		}
		return fmt.Errorf("the head at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("the head at %s: %w", c.addr, err)
	}
	if resp.StatusCode/100 != 2 {
		var f apiFailure
		if json.Unmarshal(b, &f) != nil || f.Code == "" {
			return &APIError{Status: resp.StatusCode, Code: apiBadRequest, Msg: fmt.Sprintf("the head at %s answered %s", c.addr, resp.Status)}
		}
		if f.Code == apiInvalidConfig {
			return problemsError(f)
		}
		e := &APIError{Status: resp.StatusCode, Code: f.Code, Msg: f.Error, AttemptsLeft: f.AttemptsLeft}
		if f.Fingerprint != "" {
			e.Fingerprint, _ = ParseFingerprint(f.Fingerprint)
		}
		return e
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the head at %s: its answer: %w", c.addr, err)
	}
	return nil
}

// SignIn starts the session with the head's setup code.
func (c *Client) SignIn(ctx context.Context, code string) (APISignIn, error) {
	var r APISignIn
	if err := c.call(ctx, http.MethodPost, "/api/login", apiLoginRequest{Code: code}, &r); err != nil {
		return r, err
	}
	c.token = r.Token
	return r, nil
}

// SignOut ends the session, so that another operator can sign in.
func (c *Client) SignOut(ctx context.Context) error {
	if c.token == "" {
		return nil
	}
	err := c.call(ctx, http.MethodPost, "/api/logout", nil, nil)
	c.token = ""
	return err
}

// Pair makes the head pair with the other head at addr by that head's
// code; pin, if set, is the other head's certificate fingerprint, which
// the head checks before it sends anything. It returns both heads'
// hardware.
func (c *Client) Pair(ctx context.Context, addr string, pin []byte, code string) (APIHardware, error) {
	req := apiPairRequest{Addr: addr, Code: code}
	if pin != nil {
		req.Fingerprint = fmt.Sprintf("%x", pin)
	}
	var r APIHardware
	err := c.call(ctx, http.MethodPost, "/api/pair", req, &r)
	return r, err
}

// Hardware returns both heads' hardware.
func (c *Client) Hardware(ctx context.Context) (APIHardware, error) {
	var r APIHardware
	err := c.call(ctx, http.MethodGet, "/api/hardware", nil, &r)
	return r, err
}

// Site hands the head the site config, without the pair key; destroy
// lists the disks ("serial:...") that hold data and may be overwritten.
// A config the head refuses comes back as site.ValidationErrors naming
// name and the lines of config.
func (c *Client) Site(ctx context.Context, name string, config []byte, destroy []string) (APISite, error) {
	var r APISite
	err := c.call(ctx, http.MethodPost, "/api/site", apiSiteRequest{Config: string(config), Destroy: destroy}, &r)
	var pe *ProblemsError
	if errors.As(err, &pe) {
		for _, e := range pe.Errs {
			e.File = name
		}
	}
	return r, err
}

// ProblemsError is a site config the head refused: each problem located
// in the operator's file as `tandem validate` locates it, or, at line 0,
// about the request (a disk confirmed for overwriting that the config
// does not use).
type ProblemsError struct {
	Msg  string
	Errs []*site.Error
}

func (e *ProblemsError) Error() string {
	var b strings.Builder
	b.WriteString(e.Msg)
	for _, p := range e.Errs {
		b.WriteString("\n")
		if p.Line == 0 {
			b.WriteString(p.Path + ": " + p.Msg)
		} else {
			b.WriteString(p.Error())
		}
	}
	return b.String()
}

func problemsError(f apiFailure) error {
	pe := &ProblemsError{Msg: f.Error}
	for _, p := range f.Problems {
		pe.Errs = append(pe.Errs, &site.Error{Line: p.Line, Col: p.Col, Path: p.Path, Msg: p.Msg})
	}
	return pe
}

// Create stages the config on both heads, then commits it on both, in
// the background: Progress follows it.
func (c *Client) Create(ctx context.Context) (*Progress, error) {
	var p Progress
	err := c.call(ctx, http.MethodPost, "/api/create", nil, &p)
	return &p, err
}

// Progress is where the create step stands.
func (c *Client) Progress(ctx context.Context) (*Progress, error) {
	var p Progress
	err := c.call(ctx, http.MethodGet, "/api/progress", nil, &p)
	return &p, err
}

// Confirm asks the other head again whether it committed, after the
// progress ended "unconfirmed".
func (c *Client) Confirm(ctx context.Context) (*Progress, error) {
	var p Progress
	err := c.call(ctx, http.MethodPost, "/api/confirm", nil, &p)
	return &p, err
}

// StartOver gives up the pairing (not once the pair is being created):
// both heads are free again.
func (c *Client) StartOver(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/api/start-over", nil, nil)
}

// Summary is what to note down once both heads committed.
func (c *Client) Summary(ctx context.Context) (APISummary, error) {
	var s APISummary
	err := c.call(ctx, http.MethodGet, "/api/summary", nil, &s)
	return s, err
}
