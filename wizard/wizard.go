// Package wizard is the first-boot pairing wizard (issue 15): an HTTPS
// server on each unconfigured head that the operator's browser opens
// with the head's setup code, that finds the other unconfigured head on
// the management network, pairs the two heads by the other head's code
// (package pairing, over HTTPS between the heads), shows both heads'
// hardware, checks the site form with the site package's validation
// and pushes the same site config to both heads, staged, then
// committed.
//
// PID 1 runs it on a head without a site config:
//
//	w, err := wizard.New(wizard.Options{StateDir: ..., ImageVersion: ..., Inventory: ..., Console: ...})
//	res, err := w.Run(ctx)  // blocks until this head committed a site config
//	// start the pair from res.Site; the wizard keeps showing the summary
//	// and answering the peer's status query until
//	w.Close()
//
// docs/pairing.md has the operator's walk-through and the threat model.
package wizard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"tandem.dev/tandem/pairing"
	"tandem.dev/tandem/site"
)

// Defaults.
const (
	DefaultListen         = ":443"
	DefaultSessionIdle    = 15 * time.Minute
	DefaultSessionMax     = 4 * time.Hour
	DefaultPairIdle       = time.Hour
	DefaultConfirmTimeout = 5 * time.Minute
	DefaultMaxConns       = 32
	handshakeTimeout      = 30 * time.Second // a responder session must confirm a key within this
	maxFreshSessions      = 4
)

// Options configure a head's wizard. StateDir, ImageVersion and
// Inventory are required.
type Options struct {
	// StateDir keeps the head's ID, its TLS certificate and the site
	// config (FileStore): the state partition.
	StateDir string
	// Listen is the HTTPS address. Default ":443". There is no HTTP
	// listener: nothing accepts a code without TLS.
	Listen string
	// Host is the address the console's URL names (the management
	// address PID 1 configured); default the Listen host.
	Host         string
	ImageVersion string
	Inventory    Inventory
	Discovery    Discovery
	// Console is called with what the head's console shows: at start,
	// for every new setup code, and when the head's state changes.
	Console func(Console)
	// Codes tunes the setup codes (tests); its OnNew is the wizard's.
	Codes pairing.CodeOptions
	// Serving, if set, tells the progress page after the commit whether
	// the pair serves yet (PID 1 asks `tandem status`).
	Serving func(ctx context.Context) (detail string, serving bool, err error)

	SessionIdle    time.Duration // an idle operator session ends; default 15 min
	PairIdle       time.Duration // an authenticated responder session without traffic ends; default 1 h
	ConfirmTimeout time.Duration // how long the initiator asks a peer whose last ack got lost; default 5 min
	MaxConns       int           // concurrent TLS connections; default 32
	Log            *slog.Logger
	Now            func() time.Time
}

// Console is what a head's console shows while it is unconfigured.
type Console struct {
	State       string // "not configured", "being paired", "configured"
	URL         string
	Code        string // "1234 5678"; empty once the head is paired
	Expires     time.Time
	Fingerprint string // FormatFingerprint of the TLS certificate
}

// Lines renders the console block.
func (c Console) Lines() []string {
	l := []string{"Tandem: this head is " + c.State}
	if c.URL != "" {
		l = append(l, "  setup wizard:  "+c.URL)
	}
	if c.Code != "" {
		l = append(l, "  setup code:    "+c.Code+"   (valid until "+c.Expires.Format("15:04")+")")
	}
	if fp := c.Fingerprint; fp != "" {
		half := len(fp) / 2
		if i := half; i < len(fp) && fp[i] != ' ' {
			for i < len(fp) && fp[i] != ' ' {
				i++
			}
			half = i
		}
		l = append(l, "  certificate:   SHA-256 "+fp[:half], "                         "+fp[min(half+1, len(fp)):])
	}
	return l
}

// Result is what Run returns: the committed site config and this head's
// place in it.
type Result struct {
	Config []byte       // the committed site.toml, the pair key inline
	Site   *site.Config // Config, parsed
	Node   string       // this head's [[node]] name
	// Destroy lists the disks ("serial:...") of this head the operator
	// confirmed to overwrite although they hold data.
	Destroy []string
	Role    string // "initiator", "responder", or "" if configured before the wizard started

	peerFP []byte // the peer's certificate, as the config names it
}

type phase int

const (
	phaseFree       phase = iota // unconfigured, not pairing
	phaseInitiating              // this head's operator pairs it with a peer
	phaseResponding              // a peer pairs this head
	phaseConfigured
)

// Wizard is one head's wizard server.
type Wizard struct {
	opts  Options
	log   *slog.Logger
	id    *Identity
	store *FileStore
	codes *pairing.Codes
	disc  *discovery
	ln    net.Listener
	srv   *http.Server
	pages map[string]*template.Template

	testPeerTransport func(http.RoundTripper) http.RoundTripper // tests: see and alter head-to-head traffic

	runOnce   sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	done      sync.WaitGroup
	committed chan struct{}
	creating  sync.WaitGroup // the create goroutine

	mu     sync.Mutex
	phase  phase
	op     *opSession
	sel    *Peer // the peer the operator chose, before its code
	ini    *initiatorState
	fresh  map[string]*rsession
	active *rsession
	ended  []*rsession // recent sessions that failed, for the initiator's status query
	result *Result
	code   string
	expiry time.Time
}

// New prepares a head's wizard: loads or makes its identity, opens the
// store (discarding a config staged but never committed), issues a
// setup code and binds its sockets, so that URL and Console are known
// before Run.
func New(opts Options) (*Wizard, error) {
	if opts.StateDir == "" || opts.ImageVersion == "" || opts.Inventory == nil {
		return nil, errors.New("wizard: StateDir, ImageVersion and Inventory must be set")
	}
	if !printable(opts.ImageVersion, maxImageVersionLen) {
		return nil, fmt.Errorf("wizard: image version %q is not printable or too long", opts.ImageVersion)
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.SessionIdle <= 0 {
		opts.SessionIdle = DefaultSessionIdle
	}
	if opts.PairIdle <= 0 {
		opts.PairIdle = DefaultPairIdle
	}
	if opts.ConfirmTimeout <= 0 {
		opts.ConfirmTimeout = DefaultConfirmTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Console == nil {
		opts.Console = func(Console) {}
	}
	w := &Wizard{opts: opts, log: opts.Log.With("component", "wizard"), fresh: map[string]*rsession{}, committed: make(chan struct{})}
	var err error
	if w.id, err = LoadOrCreateIdentity(opts.StateDir); err != nil {
		return nil, err
	}
	if w.store, err = OpenStore(opts.StateDir); err != nil {
		return nil, err
	}
	if w.pages, err = parsePages(); err != nil {
		return nil, err
	}
	cfg, err := w.store.Committed()
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		res, err := resultFor(cfg, w.id.ID, "")
		if err != nil {
			return nil, fmt.Errorf("wizard: the committed site config: %w", err)
		}
		w.phase, w.result = phaseConfigured, res
		close(w.committed)
		if w.store.Done() {
			return w, nil // nothing to serve
		}
		// Committed, but the initiator may not know yet (the power went
		// after this head's commit): answer its status query, nothing
		// else, until Close.
		if w.ln, err = net.Listen("tcp", opts.Listen); err != nil {
			return nil, fmt.Errorf("wizard: listen on %s: %w", opts.Listen, err)
		}
		w.srv = w.newServer()
		return w, nil
	}

	co := opts.Codes
	co.OnNew = w.newCode
	if co.Now == nil {
		co.Now = opts.Now
	}
	// The listener first: the console shows the URL with the first code.
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("wizard: listen on %s: %w", opts.Listen, err)
	}
	w.ln = ln
	if w.disc, err = newDiscovery(opts.Discovery, w.log); err != nil {
		ln.Close()
		return nil, err
	}
	if w.disc != nil {
		w.disc.setSelf(w.beacon())
	}
	if w.codes, err = pairing.NewCodes(co); err != nil {
		w.closeSockets()
		return nil, fmt.Errorf("wizard: %w", err)
	}
	w.srv = w.newServer()
	return w, nil
}

func (w *Wizard) beacon() Beacon {
	return Beacon{Magic: beaconMagic, V: beaconVersion, ID: w.id.ID, Port: w.port(),
		FP: fmt.Sprintf("%x", w.id.Fingerprint), Image: w.opts.ImageVersion}
}

func (w *Wizard) port() int {
	if w.ln == nil {
		return 0
	}
	return w.ln.Addr().(*net.TCPAddr).Port
}

// URL is where the operator's browser reaches this wizard, as far as the
// head knows its address (the listen address, unless that is a wildcard).
func (w *Wizard) URL() string {
	if w.ln == nil {
		return ""
	}
	host, _, _ := net.SplitHostPort(w.opts.Listen)
	if w.opts.Host != "" {
		host = w.opts.Host
	} else if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "<management address>"
	}
	if w.port() == 443 {
		return "https://" + host + "/"
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(w.port())) + "/"
}

// Addr is the address the HTTPS server listens on.
func (w *Wizard) Addr() net.Addr {
	if w.ln == nil {
		return nil
	}
	return w.ln.Addr()
}

// Done reports whether both heads are known to have committed: the peer
// needs no more answers from this head.
func (w *Wizard) Done() bool { return w.store.Done() }

// Identity is the head's wizard identity.
func (w *Wizard) Identity() *Identity { return w.id }

// Console returns what the console shows now.
func (w *Wizard) Console() Console {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.consoleLocked()
}

func (w *Wizard) consoleLocked() Console {
	c := Console{URL: w.URL(), Fingerprint: FormatFingerprint(w.id.Fingerprint)}
	switch w.phase {
	case phaseConfigured:
		c.State, c.URL = "configured", ""
	case phaseResponding:
		c.State = "being paired"
	default:
		c.State = "not configured"
		if w.code != "" {
			c.Code, c.Expires = w.code[:4]+" "+w.code[4:], w.expiry
		}
	}
	return c
}

// newCode is Codes' OnNew: the console shows every code issued.
func (w *Wizard) newCode(code string, expires time.Time) {
	w.mu.Lock()
	w.code, w.expiry = code, expires
	c := w.consoleLocked()
	w.mu.Unlock()
	w.opts.Console(c)
}

func (w *Wizard) showConsole() {
	w.opts.Console(w.Console())
}

// Run serves the wizard until this head has committed a site config,
// and returns it. A head configured before the wizard started returns
// at once and serves nothing. After the commit the server keeps the
// summary for the operator and the status for the peer, without any
// setup code, until Close.
func (w *Wizard) Run(ctx context.Context) (*Result, error) {
	if w.srv == nil { // configured, and both heads know it
		return w.result, nil
	}
	w.runOnce.Do(func() {
		w.ctx, w.cancel = context.WithCancel(context.Background())
		w.done.Add(2)
		go func() {
			defer w.done.Done()
			ln := tls.NewListener(limitListener(w.ln, w.opts.MaxConns), w.tlsConfig())
			if err := w.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				w.log.Error("wizard: serve", "err", err)
			}
		}()
		go func() {
			defer w.done.Done()
			w.reap(w.ctx)
		}()
		if w.disc != nil {
			w.done.Add(1)
			go func() {
				defer w.done.Done()
				w.disc.run(w.ctx)
			}()
		}
		w.showConsole()
	})
	select {
	case <-w.committed:
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.result, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops the server and discovery. A pairing in flight is given up
// (the peer is told, if it can be).
func (w *Wizard) Close() error {
	// After Run's start, or instead of it: a wizard closed first never
	// runs, and Close reads what Run's start set only after it.
	w.runOnce.Do(func() {})
	if w.cancel != nil {
		w.cancel() // ends the create step's network calls
	}
	w.creating.Wait()
	w.mu.Lock()
	ini, active, fresh := w.ini, w.active, w.fresh
	w.fresh = map[string]*rsession{}
	w.mu.Unlock()
	stopped := errors.New("the head's wizard stopped")
	if ini != nil {
		ini.cancel(context.Background(), stopped)
	}
	for _, rs := range fresh {
		rs.cancel(stopped)
	}
	if active != nil {
		active.cancel(stopped)
	}
	var err error
	if w.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = w.srv.Shutdown(ctx)
		cancel()
	}
	w.closeSockets()
	w.done.Wait()
	return err
}

func (w *Wizard) closeSockets() {
	if w.ln != nil {
		w.ln.Close()
	}
	if w.disc != nil {
		w.disc.conn.Close()
	}
}

// reap ends what has been idle too long: fresh responder sessions that
// never confirmed a key, an authenticated one the initiator abandoned,
// an idle operator session.
func (w *Wizard) reap(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := w.opts.Now()
		var stale []*rsession
		w.mu.Lock()
		for id, rs := range w.fresh {
			if now.Sub(rs.created) > handshakeTimeout {
				stale = append(stale, rs)
				delete(w.fresh, id)
			}
		}
		if a := w.active; a != nil && w.phase == phaseResponding && now.Sub(a.lastSeen()) > w.opts.PairIdle {
			stale = append(stale, a)
		}
		if w.op != nil && w.op.expired(now, w.opts.SessionIdle) {
			w.op = nil
		}
		w.mu.Unlock()
		for _, rs := range stale {
			rs.cancel(errors.New("the initiator went quiet"))
		}
	}
}

// reserve moves a free head into a pairing role; only one at a time.
func (w *Wizard) reserve(p phase) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase != phaseFree {
		return false
	}
	w.phase = p
	w.disc.setEnabled(false)
	return true
}

// release makes the head free again after a pairing that did not commit.
func (w *Wizard) release(from phase) {
	w.mu.Lock()
	if w.phase == from {
		w.phase = phaseFree
		w.disc.setEnabled(true)
	}
	w.mu.Unlock()
	w.showConsole()
}

// setCommitted records this head's committed config; Run returns it.
func (w *Wizard) setCommitted(res *Result) {
	w.codes.Retire()
	w.mu.Lock()
	w.phase, w.result = phaseConfigured, res
	w.disc.setEnabled(false)
	w.mu.Unlock()
	w.log.Info("wizard: the site config is committed", "role", res.Role, "node", res.Node)
	w.showConsole()
	close(w.committed)
}
