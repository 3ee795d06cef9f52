package apt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// DefaultKeyring is used when neither Client.Keyring nor a source's
// SignedBy names one.
const DefaultKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// DefaultArch is the architecture indexed when Client.Arch is empty.
const DefaultArch = "amd64"

const (
	maxRetries   = 2
	parallelDebs = 4
)

// stallTimeout aborts a download that receives nothing for this long; a
// variable so tests can shorten it.
var stallTimeout = 2 * time.Minute

// Client fetches indexes and packages. The zero value works for FetchIndex
// (without caching); Fetch needs CacheDir. A Client must not be copied
// after first use.
type Client struct {
	HTTP     *http.Client // nil: a client with connect and header timeouts
	CacheDir string       // index files under index/, packages under debs/
	Keyring  string       // default keyring path; a source's SignedBy wins
	Arch     string       // Debian architecture, default amd64
	// Progress, if set, receives events; calls are serialised.
	Progress func(Event)
	Log      *slog.Logger  // nil: slog.Default()
	Backoff  time.Duration // wait before the first retry, doubling; default 1s
	// Now is the clock Valid-Until is checked against; nil: time.Now.
	Now func() time.Time

	mu       sync.Mutex // serialises Progress
	keyMu    sync.Mutex
	keyrings map[string]keyring
}

// Event reports progress. Phase is "index" (one event per source) or
// "fetch" (one per package, cached or downloaded).
type Event struct {
	Phase      string
	Done       int
	Total      int
	Bytes      int64
	TotalBytes int64
	Name       string // "URI suite" for "index", package name for "fetch"
}

var defaultHTTP = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   30 * time.Second,
	ResponseHeaderTimeout: time.Minute,
	MaxIdleConnsPerHost:   parallelDebs,
	ForceAttemptHTTP2:     true,
}}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) arch() string {
	if c.Arch != "" {
		return c.Arch
	}
	return DefaultArch
}

func (c *Client) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

func (c *Client) emit(e Event) {
	if c.Progress == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Progress(e)
}

// statusError is a non-200 answer.
type statusError struct {
	code   int
	status string
}

func (e *statusError) Error() string { return "server answered " + e.status }

// permanentError marks a failure that a retry cannot fix (bad hash, full
// disk).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func transient(err error) bool {
	var se *statusError
	var pe *permanentError
	switch {
	case errors.As(err, &pe), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &se):
		return se.code >= 500 || se.code == http.StatusTooManyRequests || se.code == http.StatusRequestTimeout
	}
	return true // network errors, truncated bodies, stalls
}

func isNotFound(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.code == http.StatusNotFound
}

// get downloads u and hands the body to sink, retrying transient failures.
// sink must start from scratch on each call. The error names the URL.
func (c *Client) get(ctx context.Context, u string, sink func(io.Reader) error) error {
	wait := c.Backoff
	if wait <= 0 {
		wait = time.Second
	}
	for attempt := 0; ; attempt++ {
		err := c.getOnce(ctx, u, sink)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("apt: fetch %s: %w", u, ctx.Err())
		}
		if attempt == maxRetries || !transient(err) {
			return fmt.Errorf("apt: fetch %s: %w", u, err)
		}
		c.log().Warn("apt: retrying download", "url", u, "err", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("apt: fetch %s: %w", u, ctx.Err())
		case <-t.C:
		}
		wait *= 2
	}
}

var errStalled = errors.New("download stalled")

func (c *Client) getOnce(ctx context.Context, u string, sink func(io.Reader) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return &permanentError{err}
	}
	resp, err := c.http().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it repeats the URL, which the caller adds
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &statusError{code: resp.StatusCode, status: resp.Status}
	}
	stall := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	br := &bodyReader{r: resp.Body, stall: stall}
	err = sink(br)
	if err != nil && br.err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
			return errStalled
		}
		return br.err // network trouble: transient
	}
	if err != nil {
		return &permanentError{err}
	}
	return nil
}

// bodyReader resets the stall timer on progress and remembers read errors
// so that get can tell them from the sink's own failures.
type bodyReader struct {
	r     io.Reader
	stall *time.Timer
	err   error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.stall.Reset(stallTimeout)
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}
