package witness

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"tandem.dev/tandem/ha"
)

// ClientConfig configures a head's Client.
type ClientConfig struct {
	Pair string
	Node string // this head
	Key  []byte // the witness key (Key, ClientFromSite), not the pair key
	Addr string // the witness, host:port (site witness.address)
	// Margin is subtracted from every lease the witness grants, against
	// the two hosts' clocks running at slightly different rates. Zero:
	// a tenth of the lease.
	Margin time.Duration
	// Retry is the pause before a request is sent again when no answer
	// came. Zero: 200 ms.
	Retry time.Duration
	Log   *slog.Logger     // nil: slog.Default()
	Now   func() time.Time // nil: time.Now; tests drive a fake clock
}

// Vote is the client's view of its lease.
type Vote struct {
	// Held: this head may count on the vote until Expires.
	Held    bool      `json:"held"`
	Expires time.Time `json:"expires,omitzero"` // this host's clock
	// Since is when the current unbroken run of grants began (the
	// first grant's send time): a renewal keeps it, a lapse resets it.
	Since time.Time `json:"since,omitzero"`
	// Holder is who held the vote at the last answer ("" if nobody).
	Holder string `json:"holder,omitempty"`
	// Status of the last answer, and when it came.
	Last   string    `json:"last,omitempty"`
	LastAt time.Time `json:"last_at,omitzero"`
	// Witness is the witness's boot ID at the last answer: it changes
	// when the witness restarts.
	Witness string `json:"witness,omitempty"`
	// Writer: the last answer said the witness records this head as the
	// only one with current data; Outdated: it records the other head so,
	// and this head's data is outdated.
	Writer   bool `json:"writer,omitempty"`
	Outdated bool `json:"outdated,omitempty"`
	// Dropped counts answers refused: bad MAC, malformed, or not
	// answering a request of ours.
	Dropped uint64 `json:"dropped"`
}

// ErrNotRecorded: the witness did not record this head as the only one
// with current data (OutdatePeer).
var ErrNotRecorded = errors.New("the witness did not record this head as the only one with current data")

// Client asks the witness for the vote. Its methods may be called from
// several goroutines; they take turns.
type Client struct {
	cfg  ClientConfig
	log  *slog.Logger
	now  func() time.Time
	conn *net.UDPConn
	boot ID

	op sync.Mutex // one exchange at a time
	// The witness boot and challenge of the last genuine answer (under
	// op): the next request proves itself fresh with them.
	witness, chal ID

	mu      sync.Mutex
	expires time.Time
	since   time.Time
	vote    Vote
}

// NewClient checks cfg and opens a UDP socket to the witness (no packet
// is sent yet).
func NewClient(cfg ClientConfig) (*Client, error) {
	var errs []error
	if cfg.Pair == "" || len(cfg.Pair) > ha.MaxNameLen || cfg.Node == "" || len(cfg.Node) > ha.MaxNameLen {
		errs = append(errs, fmt.Errorf("pair %q, node %q: 1 to %d bytes each", cfg.Pair, cfg.Node, ha.MaxNameLen))
	}
	if len(cfg.Key) < ha.MinKeyBytes {
		errs = append(errs, fmt.Errorf("witness key is %d bytes, need at least %d", len(cfg.Key), ha.MinKeyBytes))
	}
	if cfg.Margin < 0 || cfg.Retry < 0 {
		errs = append(errs, fmt.Errorf("margin %v and retry %v must not be negative", cfg.Margin, cfg.Retry))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("witness client: %w", err)
	}
	if cfg.Retry == 0 {
		cfg.Retry = 200 * time.Millisecond
	}
	raddr, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("witness client: %w", err)
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, fmt.Errorf("witness client: %w", err)
	}
	c := &Client{cfg: cfg, log: cfg.Log, now: cfg.Now, conn: conn}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("component", "witness-client", "witness", cfg.Addr)
	if c.now == nil {
		c.now = time.Now
	}
	if _, err := rand.Read(c.boot[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("witness client: boot ID: %w", err)
	}
	return c, nil
}

// Close closes the socket. It does not release the vote: call Release
// first when giving it up on purpose.
func (c *Client) Close() error { return c.conn.Close() }

// Request asks for the vote (or renews it). granted says whether this
// head holds it now; lease is how long it may count on it from now (the
// witness's lease, counted from when the request was sent, minus the
// margin); holder is who holds the vote ("" if nobody, e.g. during the
// witness's quiet period after a restart). It resends until an answer
// comes or ctx ends; bound ctx to well under the lease. Without an answer
// the vote is kept only until its earlier expiry.
func (c *Client) Request(ctx context.Context) (granted bool, lease time.Duration, holder string, err error) {
	rep, sentAt, err := c.ask(ctx, opAcquire)
	if err != nil {
		return c.Held(), max(c.Remaining(), 0), "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	granted, lease = c.answerLocked(rep, opAcquire, sentAt)
	return granted, lease, rep.Holder, nil
}

// OutdatePeer asks the witness to record this head, which must hold the
// vote, as the only one with current data: from then on the witness
// grants the vote to this head only, until ClearWriter. It renews the
// lease like Request. Only nil means the witness recorded it (synced to
// its disk); a refusal wraps ErrNotRecorded, no answer wraps ctx's error.
func (c *Client) OutdatePeer(ctx context.Context) error {
	rep, sentAt, err := c.ask(ctx, opOutdatePeer)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answerLocked(rep, opOutdatePeer, sentAt)
	if rep.Status != Granted || !rep.Writer {
		return fmt.Errorf("witness %s: %w: %s %s", c.cfg.Addr, ErrNotRecorded, rep.Status, describe(rep))
	}
	c.log.Info("witness: recorded this head as the only one with current data")
	return nil
}

// ClearWriter tells the witness that the peer's data is current again
// (resynced), so that the peer may get the vote. Clearing a marker that
// is not set is harmless; the witness refuses to clear the other head's.
func (c *Client) ClearWriter(ctx context.Context) error {
	rep, _, err := c.ask(ctx, opClearWriter)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noteLocked(rep, c.now())
	if rep.Status != Released {
		return fmt.Errorf("witness %s: writer not cleared: %s %s", c.cfg.Addr, rep.Status, describe(rep))
	}
	return nil
}

// describe says what a refusal means for this head.
func describe(rep *reply) string {
	switch {
	case rep.Outdated:
		return "(another head is recorded as the only one with current data)"
	case rep.Holder == "" && rep.Quiet:
		return "(nobody holds the vote: the witness is in its quiet period after a restart)"
	case rep.Holder == "":
		return "(nobody holds the vote)"
	}
	return fmt.Sprintf("(%s holds the vote)", rep.Holder)
}

// ask sends op with this head's view of its lease (the claim matters to
// an acquire during the witness's quiet period).
func (c *Client) ask(ctx context.Context, op uint8) (*reply, time.Time, error) {
	c.mu.Lock()
	now := c.now()
	claim := c.heldLocked(now)
	left := c.expires.Sub(now)
	c.mu.Unlock()
	return c.exchange(ctx, op, claim, left)
}

// answerLocked applies the answer to op (acquire or outdate peer), sent
// at sentAt, to the lease: a grant extends it; a refusal ends it when the
// witness does not count this head as the holder. It returns whether the
// vote is held and for how long from now (for a refusal: the witness's
// duration).
func (c *Client) answerLocked(rep *reply, op uint8, sentAt time.Time) (bool, time.Duration) {
	now := c.now()
	c.noteLocked(rep, now)
	if rep.Status == Granted {
		margin := c.cfg.Margin
		if margin == 0 {
			margin = rep.Lease / 10
		}
		exp := sentAt.Add(rep.Lease - margin)
		if !exp.After(now) {
			// The answer came too late to be of use.
			c.log.Warn("witness: grant arrived after it would expire", "lease", rep.Lease, "took", now.Sub(sentAt))
			return c.heldLocked(now), max(c.expires.Sub(now), 0)
		}
		if !c.heldLocked(now) {
			c.since = sentAt
			c.log.Info("witness: vote granted", "lease", rep.Lease, "counted_as", exp.Sub(now).Round(time.Millisecond))
		}
		if exp.After(c.expires) {
			c.expires = exp
		}
		return true, c.expires.Sub(now)
	}
	// Refused: the witness says someone else holds it (or nobody, after
	// a restart that did not reinstate us) while our lease runs: believe
	// the earlier end, drop ours now. An outdate-peer request does not
	// reinstate, so its refusal naming us, or nobody during the quiet
	// period, leaves the lease to the next acquire.
	kept := op != opAcquire && (rep.Holder == c.cfg.Node || (rep.Holder == "" && rep.Quiet))
	if c.heldLocked(now) && !kept {
		c.log.Warn("witness: vote lost before its expiry", "holder", rep.Holder, "status", rep.Status.String())
		c.expires = time.Time{}
	}
	return false, rep.Lease
}

// Release gives the vote back, so that the peer may get it at once. The
// local lease ends before the request is sent. Releasing a vote not held
// is harmless.
func (c *Client) Release(ctx context.Context) error {
	c.mu.Lock()
	c.expires = time.Time{}
	c.mu.Unlock()
	rep, _, err := c.exchange(ctx, opRelease, false, 0)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.noteLocked(rep, c.now())
	c.mu.Unlock()
	if rep.Status == Denied {
		// Granted to an earlier start of this head: nobody counts on it.
		c.log.Warn("witness: the vote was not released: the witness holds it for an earlier start of this head until its lease runs out")
		return nil
	}
	c.log.Info("witness: vote released", "holder_now", rep.Holder)
	return nil
}

func (c *Client) noteLocked(rep *reply, now time.Time) {
	c.vote.Holder, c.vote.Last, c.vote.LastAt = rep.Holder, rep.Status.String(), now
	c.vote.Witness = fmt.Sprintf("%x", rep.Witness[:])
	c.vote.Writer, c.vote.Outdated = rep.Writer, rep.Outdated
}

// maxChallengesAnswered bounds the challenges one exchange answers: one at a
// head's first request and one after a witness restart are normal.
const maxChallengesAnswered = 4

// exchange sends a request and resends it (fresh nonce each time) every
// Retry until a genuine answer to one of the attempts arrives; it returns
// the answer and when that attempt was sent. A "challenge" answer is
// not returned: the request is resent at once with the new challenge.
func (c *Client) exchange(ctx context.Context, op uint8, claim bool, left time.Duration) (*reply, time.Time, error) {
	c.op.Lock()
	defer c.op.Unlock()
	sent := map[ID]time.Time{}
	buf := make([]byte, MaxMessage+1)
	var lastErr error
	challenged := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, time.Time{}, fmt.Errorf("witness %s: no answer: %w (last error: %v)", c.cfg.Addr, err, lastErr)
		}
		req := request{Op: op, Claim: claim, Boot: c.boot, Witness: c.witness, Challenge: c.chal, HeldFor: left, Pair: c.cfg.Pair, Node: c.cfg.Node}
		if _, err := rand.Read(req.Nonce[:]); err != nil {
			return nil, time.Time{}, err
		}
		sent[req.Nonce] = c.now()
		if _, err := c.conn.Write(req.marshal(c.cfg.Key)); err != nil {
			lastErr = err // e.g. ECONNREFUSED from an earlier attempt: retry
		}
		deadline := time.Now().Add(c.cfg.Retry)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		c.conn.SetReadDeadline(deadline)
	read:
		for {
			n, err := c.conn.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break read
				}
				if errors.Is(err, net.ErrClosed) {
					return nil, time.Time{}, fmt.Errorf("witness %s: %w", c.cfg.Addr, err)
				}
				lastErr = err
				// A refused port shows up as a read error at once; wait
				// out the retry pause rather than spin.
				if wait := time.Until(deadline); wait > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(wait):
					}
				}
				break read
			}
			rep, err := parseReply(buf[:n], c.cfg.Pair, c.cfg.Key)
			at, ours := time.Time{}, false
			if err == nil {
				at, ours = sent[rep.Nonce]
			}
			if !ours {
				c.mu.Lock()
				c.vote.Dropped++
				c.mu.Unlock()
				c.log.Debug("witness: dropped an answer", "err", err)
				continue
			}
			c.witness, c.chal = rep.Witness, rep.Challenge
			if rep.Status != Challenge {
				return rep, at, nil
			}
			if challenged++; challenged > maxChallengesAnswered {
				return nil, time.Time{}, fmt.Errorf("witness %s: asked to prove freshness %d times in a row", c.cfg.Addr, challenged)
			}
			c.log.Debug("witness: challenged; resending", "witness_boot", rep.Witness)
			break read
		}
	}
}

func (c *Client) heldLocked(now time.Time) bool { return !c.expires.IsZero() && now.Before(c.expires) }

// Held reports whether this head holds the vote now.
func (c *Client) Held() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldLocked(c.now())
}

// Remaining is how long the vote is still held (<= 0: not held).
func (c *Client) Remaining() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expires.IsZero() {
		return 0
	}
	return c.expires.Sub(c.now())
}

// Vote returns the client's view of its lease.
func (c *Client) Vote() Vote {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.vote
	now := c.now()
	v.Held = c.heldLocked(now)
	if v.Held {
		v.Expires, v.Since = c.expires, c.since
	}
	return v
}
