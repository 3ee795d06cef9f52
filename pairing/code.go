package pairing

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Setup code defaults.
const (
	CodeDigits         = 8
	DefaultCodeTTL     = 10 * time.Minute
	DefaultMaxAttempts = 5
)

// Setup code errors. The wizard shows them as they are.
var (
	ErrCodeFormat  = errors.New("a setup code is 8 digits")
	ErrWrongCode   = errors.New("wrong setup code")
	ErrCodeExpired = errors.New("the setup code expired: the head's console shows a new one")
	ErrCodeBurned  = errors.New("the setup code was burned after too many wrong attempts: the head's console shows a new one")
	ErrCodeUsed    = errors.New("the setup code was already used: this head is paired")
)

// WrongCodeError is a wrong code that did not burn it yet: Left more
// wrong attempts (typed or pairing sessions) burn it. It matches
// ErrWrongCode.
type WrongCodeError struct{ Left int }

func (e *WrongCodeError) Error() string {
	return fmt.Sprintf("%v (%d more wrong attempts burn the code)", ErrWrongCode, e.Left)
}

func (e *WrongCodeError) Is(target error) bool { return target == ErrWrongCode }

// CodeOptions configure Codes; the zero value is the product's
// behaviour.
type CodeOptions struct {
	TTL         time.Duration    // a code's lifetime; 0 = DefaultCodeTTL
	MaxAttempts int              // wrong attempts that burn a code; 0 = DefaultMaxAttempts
	Now         func() time.Time // nil = time.Now
	Rand        io.Reader        // nil = crypto/rand
	// OnNew is called with every code issued, the first one included,
	// so that the caller prints it on the console. It runs without
	// Codes' lock held. Never log a code.
	OnNew func(code string, expires time.Time)
}

// Codes is a head's one-time setup code: 8 decimal digits, valid for
// TTL, burned (replaced by a new one) after MaxAttempts wrong attempts,
// gone for good once it paired the head. It is safe for concurrent use.
//
// Two kinds of attempt count: a wrong code typed into this head's own
// wizard (Check), and every pairing session a Responder runs with it
// that does not end in a confirmed key. A session is charged when it
// starts, because a peer could walk away after learning whether its
// guess was right; it is not charged again when it fails.
type Codes struct {
	opts CodeOptions

	mu      sync.Mutex
	code    string
	gen     uint64 // increases with every code issued
	expires time.Time
	wrong   int
	used    bool
}

// attempt is one pairing session's hold on a code.
type attempt struct {
	gen uint64
	prs []byte
}

// NewCodes issues a first code.
func NewCodes(opts CodeOptions) (*Codes, error) {
	if opts.TTL <= 0 {
		opts.TTL = DefaultCodeTTL
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	c := &Codes{opts: opts}
	c.mu.Lock()
	err := c.issueLocked()
	code, exp := c.code, c.expires
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	c.announce(code, exp)
	return c, nil
}

// Current returns the code to show on the console and when it expires.
// An expired code is replaced first.
func (c *Codes) Current() (string, time.Time, error) {
	c.mu.Lock()
	if c.used {
		c.mu.Unlock()
		return "", time.Time{}, ErrCodeUsed
	}
	renewed, err := c.renewIfExpiredLocked()
	code, exp := c.code, c.expires
	c.mu.Unlock()
	if renewed {
		c.announce(code, exp)
	}
	return code, exp, err
}

// Check verifies a code typed into this head's own wizard, in constant
// time. A wrong one counts toward the burn; a right one stays valid
// until the head is paired (Retire) or the code expires.
func (c *Codes) Check(code string) error {
	typed, err := NormalizeCode(code)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.used {
		c.mu.Unlock()
		return ErrCodeUsed
	}
	renewed, err := c.renewIfExpiredLocked()
	if err == nil && subtle.ConstantTimeCompare([]byte(typed), []byte(c.code)) != 1 {
		c.wrong++
		err = &WrongCodeError{Left: c.opts.MaxAttempts - c.wrong}
		if c.wrong >= c.opts.MaxAttempts {
			if err = c.issueLocked(); err == nil {
				renewed, err = true, ErrCodeBurned
			}
		}
	}
	code, exp := c.code, c.expires
	c.mu.Unlock()
	if renewed {
		c.announce(code, exp)
	}
	return err
}

// Retire ends the code for good: the head is configured.
func (c *Codes) Retire() {
	c.mu.Lock()
	c.used = true
	c.mu.Unlock()
}

// begin charges a pairing session one attempt on the current code.
// A code that has had all its attempts is burned first, so that no
// code ever serves more than MaxAttempts sessions.
func (c *Codes) begin() (attempt, error) {
	c.mu.Lock()
	if c.used {
		c.mu.Unlock()
		return attempt{}, ErrCodeUsed
	}
	renewed, err := c.renewIfExpiredLocked()
	if err == nil && c.wrong >= c.opts.MaxAttempts {
		if err = c.issueLocked(); err == nil {
			renewed = true
		}
	}
	a := attempt{gen: c.gen, prs: []byte(c.code)}
	if err == nil {
		c.wrong++
	}
	code, exp := c.code, c.expires
	c.mu.Unlock()
	if renewed {
		c.announce(code, exp)
	}
	return a, err
}

// fail ends a session that did not confirm a key; its attempt was
// charged in begin. The last allowed one burns the code right away,
// so the console shows the new code without waiting for a next try.
func (c *Codes) fail(a attempt) {
	c.mu.Lock()
	var burned bool
	if a.gen == c.gen && !c.used && c.wrong >= c.opts.MaxAttempts {
		burned = c.issueLocked() == nil
	}
	code, exp := c.code, c.expires
	c.mu.Unlock()
	if burned {
		c.announce(code, exp)
	}
}

// succeed consumes the code for a session that confirmed a key. The
// code must still be the one the session started with: a code burned
// or replaced meanwhile pairs nothing.
func (c *Codes) succeed(a attempt) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.used:
		return ErrCodeUsed
	case a.gen != c.gen:
		return ErrCodeBurned
	case !c.opts.Now().Before(c.expires):
		return ErrCodeExpired
	}
	c.used = true
	return nil
}

// reissue gives the head a new code after a session that consumed the
// code failed before the site config was committed: the head is still
// unconfigured and must be pairable again.
func (c *Codes) reissue(a attempt) {
	c.mu.Lock()
	var renewed bool
	if a.gen == c.gen && c.used {
		c.used = false
		renewed = c.issueLocked() == nil
	}
	code, exp := c.code, c.expires
	c.mu.Unlock()
	if renewed {
		c.announce(code, exp)
	}
}

func (c *Codes) renewIfExpiredLocked() (bool, error) {
	if c.opts.Now().Before(c.expires) {
		return false, nil
	}
	if err := c.issueLocked(); err != nil {
		return false, err
	}
	return true, ErrCodeExpired
}

func (c *Codes) issueLocked() error {
	code, err := newCode(c.opts.Rand)
	if err != nil {
		return err
	}
	c.code, c.expires, c.wrong = code, c.opts.Now().Add(c.opts.TTL), 0
	c.gen++
	return nil
}

func (c *Codes) announce(code string, exp time.Time) {
	if c.opts.OnNew != nil {
		c.opts.OnNew(code, exp)
	}
}

// newCode draws 8 uniform decimal digits: 27 random bits, drawn again
// when ≥ 10^8 (a quarter of the time).
func newCode(r io.Reader) (string, error) {
	for {
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", fmt.Errorf("new setup code: %w", err)
		}
		if n := binary.BigEndian.Uint32(b[:]) & (1<<27 - 1); n < 100_000_000 {
			return fmt.Sprintf("%08d", n), nil
		}
	}
}

// NormalizeCode turns what an operator typed ("1234 5678",
// "1234-5678") into the 8 digits.
func NormalizeCode(s string) (string, error) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, s)
	if len(s) != CodeDigits || strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return "", ErrCodeFormat
	}
	return s, nil
}
