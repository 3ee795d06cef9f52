package wizard

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"tandem.dev/tandem/pairing"
)

// errFingerprint: the peer's certificate is not the one discovery (or
// the first contact through the IP field) showed.
var errFingerprint = errors.New("the other head's TLS certificate is not the one it announced")

// peerError is a refusal from the other head's pairing endpoints.
type peerError struct {
	Status int
	Code   string
	Msg    string
}

func (e *peerError) Error() string { return e.Msg }

// peerClient talks HTTPS to another head's wizard: the head's own
// certificate as the client certificate, the peer's pinned by its
// fingerprint (there is no CA to ask).
type peerClient struct {
	base string
	hc   *http.Client

	mu   sync.Mutex
	pin  []byte // nil: accept any certificate once and record it (IP field)
	seen []byte
}

func (w *Wizard) newPeerClient(addr string, pin []byte) *peerClient {
	c := &peerClient{base: "https://" + addr, pin: pin}
	var rt http.RoundTripper = &http.Transport{
		Proxy:       nil, // never a proxy: the peer is on the management network
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{w.id.Cert},
			// No CA vouches for a head: VerifyConnection pins the
			// certificate instead. TLS still checks that the peer holds
			// its key.
			InsecureSkipVerify: true,
			VerifyConnection:   c.verify,
		},
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
	}
	if w.testPeerTransport != nil {
		rt = w.testPeerTransport(rt)
	}
	c.hc = &http.Client{Transport: rt, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

func (c *peerClient) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errFingerprint
	}
	fp := certFingerprint(cs.PeerCertificates[0].Raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pin == nil {
		c.seen = fp
		return nil
	}
	if !hmac.Equal(fp, c.pin) {
		return &fingerprintError{seen: fp}
	}
	return nil
}

// fingerprintError is errFingerprint with the certificate seen instead.
type fingerprintError struct{ seen []byte }

func (e *fingerprintError) Error() string {
	return fmt.Sprintf("%v (it shows %s)", errFingerprint, FormatFingerprint(e.seen))
}

func (e *fingerprintError) Unwrap() error { return errFingerprint }

func (c *peerClient) fingerprint() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pin != nil {
		return c.pin
	}
	return c.seen
}

func (c *peerClient) close() { c.hc.CloseIdleConnections() }

// call POSTs (or GETs, body nil) and returns the body of a 2xx answer.
func (c *peerClient) call(ctx context.Context, path string, body []byte, ctype string) ([]byte, http.Header, error) {
	method, rd := http.MethodGet, io.Reader(nil)
	if body != nil {
		method, rd = http.MethodPost, bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, pairing.MaxConfigSize+64<<10))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode/100 != 2 {
		var ae apiError
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			ae = apiError{Code: codeBad, Error: fmt.Sprintf("the other head answered %s", resp.Status)}
		}
		return nil, nil, &peerError{Status: resp.StatusCode, Code: ae.Code, Msg: ae.Error}
	}
	return b, resp.Header, nil
}

func (c *peerClient) info(ctx context.Context) (peerInfo, error) {
	b, _, err := c.call(ctx, "/pair/info", nil, "")
	if err != nil {
		return peerInfo{}, err
	}
	var pi peerInfo
	if err := json.Unmarshal(b, &pi); err != nil || !validID(pi.ID) || !printable(pi.Image, maxImageVersionLen) {
		return peerInfo{}, errors.New("the address answers, but not as a Tandem head's wizard")
	}
	return pi, nil
}

const octets = "application/octet-stream"

func (c *peerClient) hello(ctx context.Context, msg []byte) (string, []byte, error) {
	b, h, err := c.call(ctx, "/pair/hello", msg, octets)
	if err != nil {
		return "", nil, err
	}
	sid := h.Get("Tandem-Pairing-Session")
	if len(sid) != 32 {
		return "", nil, errors.New("the other head's answer has no pairing session")
	}
	return sid, b, nil
}

func (c *peerClient) message(ctx context.Context, sid string, msg []byte) ([]byte, error) {
	b, _, err := c.call(ctx, "/pair/session/"+sid+"/message", msg, octets)
	return b, err
}

func (c *peerClient) status(ctx context.Context, sid string, nonce []byte) (statusReply, error) {
	q, _ := json.Marshal(statusQuery{Nonce: hex.EncodeToString(nonce)})
	b, _, err := c.call(ctx, "/pair/session/"+sid+"/status", q, "application/json")
	if err != nil {
		return statusReply{}, err
	}
	var st statusReply
	if err := json.Unmarshal(b, &st); err != nil {
		return statusReply{}, fmt.Errorf("the other head's status: %w", err)
	}
	return st, nil
}

func (c *peerClient) inventory(ctx context.Context, sid string) (Hardware, error) {
	b, _, err := c.call(ctx, "/pair/session/"+sid+"/inventory", []byte("{}"), "application/json")
	if err != nil {
		return Hardware{}, err
	}
	var hw Hardware
	if err := json.Unmarshal(b, &hw); err != nil {
		return Hardware{}, fmt.Errorf("the other head's hardware: %w", err)
	}
	if err := hw.check(); err != nil {
		return Hardware{}, fmt.Errorf("the other head's hardware: %w", err)
	}
	return hw, nil
}

func (c *peerClient) done(ctx context.Context, sid string) error {
	_, _, err := c.call(ctx, "/pair/session/"+sid+"/done", []byte("{}"), "application/json")
	return err
}
