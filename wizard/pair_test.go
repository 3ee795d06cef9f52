package wizard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/pairing"
)

// pair is two test heads, A (the operator's) and B, that find each
// other by discovery on loopback.
type pair struct {
	a, b *testHead
	op   *browser
}

func newPair(t *testing.T, modA, modB func(*headConfig)) *pair {
	t.Helper()
	port := freeUDPPort(t, "127.0.0.2")
	ca := headConfig{ip: "127.0.0.2", hw: fakeHardware(1), port: port, peers: []string{"127.0.0.3"}}
	cb := headConfig{ip: "127.0.0.3", hw: fakeHardware(2), port: port, peers: []string{"127.0.0.2"}}
	if modA != nil {
		modA(&ca)
	}
	if modB != nil {
		modB(&cb)
	}
	p := &pair{a: startHead(t, ca), b: startHead(t, cb)}
	p.op = newBrowser(t, p.a.url())
	return p
}

// toPeerCode signs in on A and chooses B from the discovered heads.
func (p *pair) toPeerCode(t *testing.T) {
	t.Helper()
	p.op.signIn(p.a.code())
	waitFor(t, 10*time.Second, "A to discover B", func() bool {
		_, body := p.op.get("/peers")
		return strings.Contains(body, p.b.w.id.ID[:8])
	})
	st, body := p.op.post("/peers", url.Values{"peer": {p.b.w.id.ID}})
	if st != http.StatusOK || !strings.Contains(body, "Setup code of the other head") {
		t.Fatalf("choose B: %d\n%s", st, body)
	}
}

// toHardware pairs A with B by B's code.
func (p *pair) toHardware(t *testing.T) {
	t.Helper()
	p.toPeerCode(t)
	st, body := p.op.post("/peer-code", url.Values{"code": {p.b.code()}})
	if st != http.StatusOK || !strings.Contains(body, "Network interfaces") {
		t.Fatalf("pair with B's code: %d\n%s", st, body)
	}
}

// hardwareForm is the hardware page as suggested.
func (p *pair) hardwareForm() url.Values {
	f := url.Values{}
	p.a.w.mu.Lock()
	defer p.a.w.mu.Unlock()
	for h, n := range p.a.w.ini.in.Nodes {
		hs := strconv.Itoa(h)
		f.Set("mgmt"+hs, n.MgmtNIC)
		f["repl"+hs] = n.Links
		f["disk"+hs] = n.Disks
	}
	return f
}

// siteForm is the site page as suggested, with a VIP and a witness.
func (p *pair) siteForm() url.Values {
	p.a.w.mu.Lock()
	in := p.a.w.ini.in
	p.a.w.mu.Unlock()
	f := url.Values{"pair_name": {in.PairName}, "vip": {"10.0.0.10/24"}, "witness": {"witness"}, "witness_addr": {"10.0.0.2:7791"}}
	for h, n := range in.Nodes {
		pre := "node" + strconv.Itoa(h) + "_"
		f.Set(pre+"name", n.Name)
		f.Set(pre+"mgmt", n.Mgmt)
		f.Set(pre+"gw", n.Gateway)
		f.Set(pre+"repl", n.Repl)
	}
	f.Set("export0_path", in.Exports[0].Path)
	f.Set("export0_clients", in.Exports[0].Clients)
	f.Set("export0_options", in.Exports[0].Options)
	return f
}

// toReview fills the hardware and site pages.
func (p *pair) toReview(t *testing.T) {
	t.Helper()
	p.toHardware(t)
	if st, body := p.op.post("/hardware", p.hardwareForm()); st != http.StatusOK || !strings.Contains(body, "Site settings") {
		t.Fatalf("hardware: %d\n%s", st, body)
	}
	if st, body := p.op.post("/site", p.siteForm()); st != http.StatusOK || !strings.Contains(body, "Create pair") {
		t.Fatalf("site: %d\n%s", st, body)
	}
}

// create presses "Create pair" and waits for the progress to settle.
func (p *pair) create(t *testing.T) progress {
	t.Helper()
	if st, body := p.op.post("/create", nil); st != http.StatusOK || !strings.Contains(body, "Creating pair") {
		t.Fatalf("create: %d\n%s", st, body)
	}
	return p.waitProgress(t)
}

func (p *pair) waitProgress(t *testing.T) progress {
	t.Helper()
	var pr progress
	waitFor(t, 30*time.Second, "the create step to settle", func() bool {
		_, body := p.op.get("/progress.json")
		pr = progress{}
		json.Unmarshal([]byte(body), &pr)
		return pr.State != "" && pr.State != "running"
	})
	return pr
}

func configured(t *testing.T, h *testHead) []byte {
	t.Helper()
	cfg, err := h.w.store.Committed()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestPairOverHTTP: the whole flow through the wizard's HTTP API: both
// heads commit the same config; Run returns it on both, each head with
// its own node; the codes no longer work; the download has no key.
func TestPairOverHTTP(t *testing.T) {
	p := newPair(t, nil, nil)
	p.toReview(t)
	// Meanwhile B's own wizard says who sets it up, and takes no code.
	onB := newBrowser(t, p.b.url())
	if st, body := onB.get("/login"); st != http.StatusOK || !strings.Contains(body, "This head is being set up from the other head") || !strings.Contains(body, short(p.a.w.id.ID)) || strings.Contains(body, "Setup code of this head") {
		t.Errorf("B's wizard while paired: %d\n%s", st, body)
	}
	if c := p.b.w.Console(); c.State != "being paired" || c.Code != "" {
		t.Errorf("B's console while paired: %+v", c)
	}
	pr := p.create(t)
	if pr.State != "done" {
		t.Fatalf("create: %+v", pr)
	}
	if c := p.b.w.Console(); c.State != "configured" || c.Code != "" || c.URL != "" {
		t.Errorf("B's console after the commit: %+v", c)
	}
	ra, rb := p.a.result(5*time.Second), p.b.result(5*time.Second)
	if ra == nil || rb == nil {
		t.Fatal("Run did not return on both heads")
	}
	if !bytes.Equal(ra.Config, rb.Config) || ra.Role != "initiator" || rb.Role != "responder" || ra.Node != "nas-a" || rb.Node != "nas-b" {
		t.Fatalf("results: A %s %s, B %s %s, same config %v", ra.Role, ra.Node, rb.Role, rb.Node, bytes.Equal(ra.Config, rb.Config))
	}
	// Each head finds its node by its management NIC's MAC at boot.
	for i, n := range ra.Site.Nodes {
		if want := fakeHardware(i + 1).NICs[0].MAC; n.Management.MAC != want || n.Management.Interface != "" {
			t.Errorf("node %s: management mac %q interface %q; want the MAC %s alone", n.Name, n.Management.MAC, n.Management.Interface, want)
		}
	}
	if !bytes.Equal(configured(t, p.a), ra.Config) || !bytes.Equal(configured(t, p.b), rb.Config) {
		t.Fatal("the stores do not hold the returned config")
	}
	key, err := ra.Site.PairKey()
	if err != nil || len(key) != 32 {
		t.Fatalf("pair key: %v", err)
	}
	if n := ra.Site.Node("nas-b"); n == nil || n.Disks[0] != "serial:S455NY0M200001" {
		t.Errorf("B's disks: %+v", n)
	}

	st, body := p.op.get("/summary")
	if st != http.StatusOK || !strings.Contains(body, "is set up") || !strings.Contains(body, "tandem witness --config witness.toml --init") {
		t.Errorf("summary: %d\n%s", st, body)
	}
	st, dl := p.op.get("/site.toml")
	if st != http.StatusOK || strings.Contains(dl, "key =") || strings.Contains(dl, strings.ToLower(hexKey(key))) || !strings.Contains(dl, "nas-b") {
		t.Errorf("download: %d\n%s", st, dl)
	}
	// The codes are gone; both wizards say configured.
	for _, h := range []*testHead{p.a, p.b} {
		b := newBrowser(t, h.url())
		st, body := b.get("/login")
		if st != http.StatusOK || !strings.Contains(body, "This head is configured") || strings.Contains(body, "Setup code of this head") {
			t.Errorf("%s after the commit: %d\n%s", h.ip, st, body)
		}
		st, _ = b.post("/login", url.Values{"code": {"12345678"}})
		if st != http.StatusOK {
			t.Errorf("%s code form after the commit: %d", h.ip, st)
		}
	}
	// A restarted head is configured and serves nothing.
	p.b.close()
	w, err := New(Options{StateDir: p.b.dir, ImageVersion: testImage, Inventory: inventoryOf(fakeHardware(2)), Listen: "127.0.0.3:0", Discovery: Discovery{Listen: "off"}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Run(context.Background())
	if err != nil || res.Node != "nas-b" || w.Addr() != nil {
		t.Errorf("restarted B: %v, %+v, listening %v", err, res, w.Addr())
	}
}

func hexKey(k []byte) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, c := range k {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}

// recorder is a transport between the heads that records A's requests
// and can alter B's answers.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []recorded
	// alter, if set, may change or drop (return an error for) an answer
	// after B handled the request.
	alter func(path string, body []byte) ([]byte, error)
}

type recorded struct {
	path string
	body []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{req.URL.Path, body})
	alter := r.alter
	r.mu.Unlock()
	resp, err := r.next.RoundTrip(req)
	if err != nil || alter == nil {
		return resp, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	b, err = alter(req.URL.Path, b)
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	return resp, nil
}

func (r *recorder) setAlter(f func(string, []byte) ([]byte, error)) {
	r.mu.Lock()
	r.alter = f
	r.mu.Unlock()
}

func (r *recorder) recorded() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

// newRecordedPair is a pair whose head-to-head traffic goes through rec.
func newRecordedPair(t *testing.T, rec *recorder, modB func(*headConfig)) *pair {
	t.Helper()
	p := newPair(t, func(hc *headConfig) { hc.noStart = true }, modB)
	p.a.w.testPeerTransport = func(next http.RoundTripper) http.RoundTripper {
		rec.next = next
		return rec
	}
	p.a.run()
	return p
}

// TestReplayedPairingRequestsRefused: the HTTP requests of a pairing,
// recorded on the wire, pair nothing when played again: not into a new
// session (the responder's fresh session ID makes the old key
// confirmation fail), not into the live session (the records' sequence
// numbers), not into a session that ended, and not from a head with
// another certificate.
func TestReplayedPairingRequestsRefused(t *testing.T) {
	rec := &recorder{}
	p := newRecordedPair(t, rec, nil)
	p.toHardware(t)
	p.op.post("/hardware", p.hardwareForm())
	p.op.post("/site", p.siteForm())
	// Stage on B, then replay inside the live session before the commit.
	// A's own flow would continue with commit; we stop A's flow here by
	// playing the attacker with A's certificate and transport.
	ini := p.a.w.ini
	msg, err := ini.sess.Stage(ini.config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ini.client.message(context.Background(), ini.sid, msg); err != nil {
		t.Fatal(err)
	}
	if !p.b.w.store.Staged() {
		t.Fatal("B did not stage")
	}
	all := rec.recorded()
	// The stage record again, in the live session: refused, the session
	// fails and B drops the staged config.
	replay := p.a.w.newPeerClient(p.b.w.Addr().String(), p.b.w.id.Fingerprint)
	if aborted, err := rawPost(replay, "/pair/session/"+ini.sid+"/message", msg); err != nil || !aborted {
		t.Errorf("a replayed stage record: aborted %v, %v", aborted, err)
	}
	if p.b.w.store.Staged() {
		t.Error("B keeps the staged config after the replay failed its session")
	}
	if c := configured(t, p.b); c != nil {
		t.Fatal("B is configured")
	}
	waitFor(t, 5*time.Second, "B free again", func() bool {
		p.b.w.mu.Lock()
		defer p.b.w.mu.Unlock()
		return p.b.w.phase == phaseFree
	})

	// The whole recorded handshake again: the hello opens a new session,
	// the old finish fails its key confirmation; nothing is staged.
	var hello, finish []byte
	for _, r := range all {
		switch {
		case r.path == "/pair/hello":
			hello = r.body
		case strings.HasSuffix(r.path, "/message") && finish == nil:
			finish = r.body
		}
	}
	sid, _, err := replay.hello(context.Background(), hello)
	if err != nil {
		t.Fatalf("replayed hello: %v", err)
	}
	if aborted, err := rawPost(replay, "/pair/session/"+sid+"/message", finish); err != nil || !aborted {
		t.Fatalf("replayed finish: aborted %v, %v", aborted, err)
	}
	p.b.w.mu.Lock()
	active, phase := p.b.w.active, p.b.w.phase
	p.b.w.mu.Unlock()
	if active != nil || phase != phaseFree {
		t.Error("B accepted a replayed handshake")
	}
	// A session that ended knows nothing.
	if _, err := replay.message(context.Background(), ini.sid, msg); !isPeerCode(err, codeUnknown) {
		t.Errorf("replay into the ended session: %v", err)
	}
	// The recorded requests from a head with another certificate: the
	// hello is refused outright (its claimed fingerprint is not the
	// client certificate's).
	other := startHead(t, headConfig{ip: "127.0.0.4", hw: fakeHardware(1)})
	stranger := other.w.newPeerClient(p.b.w.Addr().String(), p.b.w.id.Fingerprint)
	if aborted, err := rawPost(stranger, "/pair/hello", hello); err != nil || !aborted {
		t.Errorf("a hello replayed from another head's certificate: aborted %v, %v", aborted, err)
	}
	p.b.w.mu.Lock()
	nfresh := len(p.b.w.fresh)
	p.b.w.mu.Unlock()
	if nfresh != 0 {
		t.Errorf("B holds %d fresh sessions", nfresh)
	}
	if st, err := stranger.status(context.Background(), ini.sid, make([]byte, 32)); err != nil || st.State != "unknown" {
		t.Errorf("status for a stranger: %+v, %v", st, err)
	}
	if p.b.w.store.Staged() || configured(t, p.b) != nil {
		t.Error("B staged or committed something")
	}
}

// rawPost sends a pairing message and reports whether B answered with
// an abort.
func rawPost(c *peerClient, path string, body []byte) (bool, error) {
	resp, err := c.hc.Post(c.base+path, octets, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("Tandem-Pairing-Abort") != "" || resp.StatusCode/100 != 2, nil
}

func isPeerCode(err error, code string) bool {
	var pe *peerError
	return errors.As(err, &pe) && pe.Code == code
}

// TestPeerWithAnotherImage: a head running another image is listed with
// a clear message and cannot be chosen, by discovery or by address; if
// the initiator is made to try anyway, the responder refuses it too.
func TestPeerWithAnotherImage(t *testing.T) {
	p := newPair(t, nil, func(hc *headConfig) { hc.image = "tandem 2026.06.0" })
	p.op.signIn(p.a.code())
	var body string
	waitFor(t, 10*time.Second, "A to discover B", func() bool {
		_, body = p.op.get("/peers")
		return strings.Contains(body, p.b.w.id.ID[:8])
	})
	if !strings.Contains(body, "runs another image than this head") || strings.Contains(body, `value="`+p.b.w.id.ID+`"`) {
		t.Errorf("peer list:\n%s", body)
	}
	want := "The other head runs image tandem 2026.06.0; this head runs tandem 2026.05.1. Flash the same image onto both heads"
	if _, body := p.op.post("/peers", url.Values{"peer": {p.b.w.id.ID}}); !strings.Contains(body, want) {
		t.Errorf("choosing B anyway:\n%s", body)
	}
	if _, body := p.op.post("/peers", url.Values{"addr": {p.b.w.Addr().String()}}); !strings.Contains(body, want) {
		t.Errorf("B by address:\n%s", body)
	}
	// Past the wizard's own check (a beacon that lied about the image):
	// B refuses the hello, and A says why.
	peer, _ := p.a.w.disc.lookup(p.b.w.id.ID)
	peer.Image = testImage
	err := p.a.w.pairWith(context.Background(), peer, p.b.code())
	if !errors.Is(err, pairing.ErrImageVersion) || !strings.Contains(explain(err), "different image versions") {
		t.Errorf("pairing across images: %v: %s", err, explain(err))
	}
	if p.a.w.phase != phaseFree || p.b.w.phase != phaseFree {
		t.Errorf("phases after the refusal: A %v, B %v", p.a.w.phase, p.b.w.phase)
	}
}

// TestWrongPeerCode: a wrong code for the other head says so, leaves
// both heads free, and counts on the other head's code.
func TestWrongPeerCode(t *testing.T) {
	p := newPair(t, nil, nil)
	p.toPeerCode(t)
	first := p.b.code()
	wrong := strconv.Itoa((mustAtoi(first) + 1) % 100000000)
	for len(wrong) < 8 {
		wrong = "0" + wrong
	}
	for i := range 5 {
		st, body := p.op.post("/peer-code", url.Values{"code": {wrong}})
		if st != http.StatusOK || !strings.Contains(body, "did not accept that code") {
			t.Fatalf("attempt %d: %d\n%s", i+1, st, body)
		}
	}
	if p.b.code() == first {
		t.Error("five wrong codes did not burn B's code")
	}
	if st, body := p.op.post("/peer-code", url.Values{"code": {p.b.code()}}); st != http.StatusOK || !strings.Contains(body, "Network interfaces") {
		t.Errorf("the new code: %d\n%s", st, body)
	}
}

// TestStageThenCrashOverHTTP: B loses power after it staged the config
// and before the commit. It comes back unconfigured with a new code; A
// learns that B no longer knows the pairing, discards its own staged
// config and says so: both heads unconfigured.
func TestStageThenCrashOverHTTP(t *testing.T) {
	rec := &recorder{}
	p := newRecordedPair(t, rec, nil)
	p.toReview(t)
	var once sync.Once
	var restarted *testHead
	rec.setAlter(func(path string, body []byte) ([]byte, error) {
		if !strings.HasSuffix(path, "/message") || !p.b.w.store.Staged() {
			return body, nil
		}
		once.Do(func() {
			// The power cut: B's process is gone, its disk stays.
			p.b.close()
			restarted = startHead(t, headConfig{ip: "127.0.0.3", dir: p.b.dir, hw: fakeHardware(2), opts: func(o *Options) { o.Listen = p.b.w.Addr().String() }})
		})
		return body, nil
	})
	pr := p.create(t)
	if pr.State != "failed" || !strings.Contains(pr.Error, "no longer knows this pairing") || !strings.Contains(pr.Error, "unconfigured") {
		t.Fatalf("create: %+v", pr)
	}
	if restarted == nil {
		t.Fatal("B was not restarted")
	}
	if configured(t, p.a) != nil || p.a.w.store.Staged() {
		t.Error("A is configured or keeps a staged config")
	}
	if configured(t, restarted) != nil || restarted.w.store.Staged() {
		t.Error("B came back configured or staged")
	}
	if restarted.code() == "" {
		t.Error("B has no code")
	}
}

// TestCommittedAckLost closes the gap the pairing package leaves: B
// commits, and its "committed" answer is lost or altered on the way.
// A must not guess: it asks B's status (authenticated by the pair key)
// and commits only when B committed this very config.
func TestCommittedAckLost(t *testing.T) {
	tests := []struct {
		name string
		// alter acts on B's answer to the commit record.
		alter    func(body []byte) ([]byte, error)
		breakB   bool                            // B's commit fails
		restartB bool                            // B restarts after its commit
		want     string                          // the progress state
		wantA    bool                            // A configured
		wantB    bool                            // B configured
		check    func(t *testing.T, pr progress) // more
	}{
		{name: "answer lost", alter: func([]byte) ([]byte, error) { return nil, errors.New("connection reset") }, want: "done", wantA: true, wantB: true},
		{name: "answer altered", alter: func(b []byte) ([]byte, error) {
			b = bytes.Clone(b)
			b[len(b)-1] ^= 1
			return b, nil
		}, want: "done", wantA: true, wantB: true},
		{name: "answer lost, B restarted", alter: func([]byte) ([]byte, error) { return nil, errors.New("connection reset") }, restartB: true, want: "done", wantA: true, wantB: true},
		{name: "B could not commit", breakB: true, want: "failed", check: func(t *testing.T, pr progress) {
			if !strings.Contains(pr.Error, "did not commit the site config. It said: staging or committing the site config failed") || pr.Steps[stepStagePeer].State != "done" {
				t.Errorf("progress: %+v", pr)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			p := newRecordedPair(t, rec, nil)
			p.toReview(t)
			var restarted *testHead
			var once sync.Once
			rec.setAlter(func(path string, body []byte) ([]byte, error) {
				if tc.breakB && strings.HasSuffix(path, "/message") && p.b.w.store.Staged() {
					// A directory where site.toml goes: B's commit fails.
					os.Mkdir(filepath.Join(p.b.dir, SiteFile), 0o700)
				}
				// B's answer to the commit record: B has committed.
				if !strings.HasSuffix(path, "/message") || tc.alter == nil || configured(t, p.b) == nil {
					return body, nil
				}
				first := false
				once.Do(func() { first = true })
				if !first {
					return body, nil
				}
				if tc.restartB {
					p.b.close()
					restarted = startHead(t, headConfig{ip: "127.0.0.3", dir: p.b.dir, hw: fakeHardware(2), opts: func(o *Options) { o.Listen = p.b.w.Addr().String() }})
				}
				return tc.alter(body)
			})
			pr := p.create(t)
			if pr.State != tc.want {
				t.Fatalf("create: %+v", pr)
			}
			if tc.check != nil {
				tc.check(t, pr)
			}
			b := p.b
			if restarted != nil {
				b = restarted
			}
			ca, cb := configured(t, p.a), []byte(nil)
			if tc.name != "B could not commit" {
				cb = configured(t, b)
			}
			if (ca != nil) != tc.wantA || (cb != nil) != tc.wantB {
				t.Fatalf("A configured %v (want %v), B %v (want %v)", ca != nil, tc.wantA, cb != nil, tc.wantB)
			}
			if tc.wantA && !bytes.Equal(ca, cb) {
				t.Error("the heads committed different configs")
			}
			if !tc.wantA && p.a.w.store.Staged() {
				t.Error("A keeps a staged config")
			}
		})
	}
}

// TestCommitUnconfirmed: B committed but cannot be reached to confirm;
// A neither commits nor discards, and says so; once B answers again,
// "ask again" finishes the pair.
func TestCommitUnconfirmed(t *testing.T) {
	rec := &recorder{}
	p := newRecordedPair(t, rec, nil)
	p.a.w.opts.ConfirmTimeout = 500 * time.Millisecond
	p.toReview(t)
	var mu sync.Mutex
	n, down := 0, false
	rec.setAlter(func(path string, body []byte) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasSuffix(path, "/message") && configured(t, p.b) != nil && n == 0 {
			n, down = 1, true
		}
		if down {
			return nil, errors.New("no route to host")
		}
		return body, nil
	})
	pr := p.create(t)
	if pr.State != "unconfirmed" || !strings.Contains(pr.Error, "could not be reached to confirm") {
		t.Fatalf("create: %+v", pr)
	}
	if configured(t, p.a) != nil || !p.a.w.store.Staged() || configured(t, p.b) == nil {
		t.Fatal("want A staged and not committed, B committed")
	}
	mu.Lock()
	down = false
	mu.Unlock()
	p.op.get("/progress")
	p.op.post("/confirm", nil)
	if pr := p.waitProgress(t); pr.State != "done" {
		t.Fatalf("after asking again: %+v", pr)
	}
	if !bytes.Equal(configured(t, p.a), configured(t, p.b)) {
		t.Error("the heads differ")
	}
}

// TestForgedStatusDoesNotCommit: B could not commit, and someone able
// to alter B's answers (the test plays an attacker inside TLS) claims
// that it did. The claim has no valid MAC under the pair key: A does
// not commit.
func TestForgedStatusDoesNotCommit(t *testing.T) {
	rec := &recorder{}
	p := newRecordedPair(t, rec, nil)
	p.a.w.opts.ConfirmTimeout = 300 * time.Millisecond
	p.toReview(t)
	broken := false
	rec.setAlter(func(path string, body []byte) ([]byte, error) {
		switch {
		case strings.HasSuffix(path, "/message") && p.b.w.store.Staged() && !broken:
			// B staged: a directory where site.toml goes makes its
			// commit fail.
			broken = true
			os.Mkdir(filepath.Join(p.b.dir, SiteFile), 0o700)
		case strings.HasSuffix(path, "/message") && broken:
			return nil, errors.New("connection reset") // hide B's abort
		case strings.HasSuffix(path, "/status"):
			sum := sha256.Sum256(p.a.w.ini.config)
			return json.Marshal(statusReply{State: "committed", Hash: hex.EncodeToString(sum[:]), Mac: strings.Repeat("00", 32)})
		}
		return body, nil
	})
	pr := p.create(t)
	if pr.State != "unconfirmed" || configured(t, p.a) != nil || !broken {
		t.Fatalf("A committed on a forged status, or did not get that far: %+v", pr)
	}
}

// TestSpoofedBeacon: a third head announces itself under B's ID and
// fingerprint. The beacon can only point at its own address, where the
// certificate is not B's: A refuses to talk to it, with a clear message,
// and nothing is paired. Then a third head announcing itself honestly,
// chosen by mistake, does not accept B's code.
func TestSpoofedBeacon(t *testing.T) {
	p := newPair(t, nil, nil)
	c := startHead(t, headConfig{ip: "127.0.0.4", hw: fakeHardware(1)})
	p.toPeerCode(t)
	port := p.a.w.disc.conn.LocalAddr().(*net.UDPAddr).Port
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.0.4")}, &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := p.a.w.beacon()
	b.ID, b.FP, b.Port = p.b.w.id.ID, hex.EncodeToString(p.b.w.id.Fingerprint), c.w.Addr().(*net.TCPAddr).Port
	msg, _ := json.Marshal(b)
	// B keeps announcing too: send until A holds the forged address.
	waitFor(t, 10*time.Second, "the forged beacon", func() bool {
		conn.Write(msg)
		pe, _ := p.a.w.disc.lookup(p.b.w.id.ID)
		if strings.HasPrefix(pe.Addr, "127.0.0.4:") {
			p.a.w.mu.Lock()
			p.a.w.sel = &pe
			p.a.w.mu.Unlock()
			return true
		}
		return false
	})
	st, body := p.op.post("/peer-code", url.Values{"code": {p.b.code()}})
	if st != http.StatusOK || !strings.Contains(body, "TLS certificate changed since it was found") {
		t.Fatalf("pairing with the forged beacon: %d\n%s", st, body)
	}
	if p.a.w.phase != phaseFree || c.w.phase != phaseFree || p.b.w.phase != phaseFree {
		t.Error("a head left the free state")
	}

	// C under its own name, chosen by mistake, with B's code.
	peerC := Peer{ID: c.w.id.ID, Addr: c.w.Addr().String(), Fingerprint: c.w.id.Fingerprint, Image: testImage}
	err = p.a.w.pairWith(context.Background(), peerC, p.b.code())
	if !errors.Is(err, pairing.ErrKeyConfirmation) {
		t.Errorf("B's code at C: %v", err)
	}
	if c.w.phase != phaseFree || p.a.w.phase != phaseFree {
		t.Error("C or A paired")
	}
}
