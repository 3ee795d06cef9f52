package labagent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client is the host half: it sends requests over QEMU's chardev socket
// for the port (<vm dir>/<name>.agent). It connects on first use and
// again after the connection drops; requests may run concurrently.
//
// QEMU serves one connection per chardev at a time: while one client is
// connected (a test), another (tandem lab exec) waits.
type Client struct {
	dial func(ctx context.Context) (net.Conn, error)

	mu      sync.Mutex
	conn    net.Conn
	pending map[string]chan Result
	prefix  string // random, so a reply meant for an earlier client is ignored
	n       uint64
	closed  bool
}

// ErrTimedOut means the guest killed the command at its timeout.
var ErrTimedOut = errors.New("agent: command timed out")

// NewClient returns a client of the agent behind the unix socket path.
func NewClient(path string) *Client {
	return newClient(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	})
}

func newClient(dial func(ctx context.Context) (net.Conn, error)) *Client {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &Client{dial: dial, pending: map[string]chan Result{}, prefix: hex.EncodeToString(b)}
}

// Run runs argv in the guest and waits for it. A non-zero exit status is
// not an error; a command that cannot start, a timeout, or a lost
// connection is. Without a deadline on ctx the guest's DefaultTimeout
// applies.
func (c *Client) Run(ctx context.Context, argv ...string) (Result, error) {
	return c.Do(ctx, Request{Argv: argv})
}

// Do sends one request (its ID is assigned here). When req has no timeout
// and ctx has a deadline, the guest gets the deadline, a little early, so
// that the result still reaches the host.
func (c *Client) Do(ctx context.Context, req Request) (Result, error) {
	if len(req.Argv) == 0 {
		return Result{}, errors.New("agent: empty argv")
	}
	if dl, ok := ctx.Deadline(); ok && req.Timeout == 0 {
		left := time.Until(dl)
		// A quarter of a short deadline is kept back: on a loaded host the
		// reply can take longer than a tenth of half a second to arrive.
		req.Timeout = max(left-min(left/4, 2*time.Second), time.Millisecond)
	}
	conn, ch, err := c.send(ctx, &req)
	if err != nil {
		return Result{}, err
	}
	select {
	case res, ok := <-ch:
		if !ok {
			return Result{}, fmt.Errorf("agent: %s: connection lost", req.Argv[0])
		}
		switch {
		case res.TimedOut:
			return res, fmt.Errorf("%w: %s after %v", ErrTimedOut, strings.Join(req.Argv, " "), res.Duration.Round(time.Millisecond))
		case res.Error != "":
			return res, fmt.Errorf("agent: %s: %s", req.Argv[0], res.Error)
		}
		return res, nil
	case <-ctx.Done():
		c.forget(conn, req.ID)
		return Result{}, fmt.Errorf("agent: %s: no reply: %w", req.Argv[0], ctx.Err())
	}
}

func (c *Client) send(ctx context.Context, req *Request) (net.Conn, chan Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, errors.New("agent: client closed")
	}
	if c.conn == nil {
		conn, err := c.dial(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: %w", err)
		}
		c.conn = conn
		go c.read(conn)
	}
	c.n++
	req.ID = c.prefix + "-" + strconv.FormatUint(c.n, 10)
	b, err := json.Marshal(req)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	ch := make(chan Result, 1)
	c.pending[req.ID] = ch
	// The chardev socket buffers what the guest has not read yet, so a
	// write blocks only with a wedged QEMU; bound it by ctx anyway.
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(dl)
	} else {
		_ = c.conn.SetWriteDeadline(time.Time{})
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		delete(c.pending, req.ID)
		c.conn.Close()
		return nil, nil, fmt.Errorf("agent: send: %w", err)
	}
	return c.conn, ch, nil
}

// read delivers replies until the connection ends, then fails what is
// still pending on it and lets the next request reconnect.
func (c *Client) read(conn net.Conn) {
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 4*MaxOutput)
	for sc.Scan() {
		var res Result
		if json.Unmarshal(sc.Bytes(), &res) != nil {
			continue
		}
		c.mu.Lock()
		ch := c.pending[res.ID] // replies for ids not ours are stale: dropped
		delete(c.pending, res.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- res
		}
	}
	conn.Close()
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
		for id, ch := range c.pending {
			close(ch)
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
}

func (c *Client) forget(conn net.Conn, id string) {
	c.mu.Lock()
	if c.conn == conn {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// Close drops the connection; pending requests fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}
