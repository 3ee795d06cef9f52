package wizard

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
	"net"
	"net/http"
	"sync"
	"time"

	"tandem.dev/tandem/pairing"
	"tandem.dev/tandem/site"
)

// Error codes of the pairing endpoints, so that the initiator can tell
// the operator what the other head said.
const (
	codeBusy       = "busy"       // being paired by another head, or pairing one
	codeConfigured = "configured" // has a site config
	codeUnknown    = "unknown-session"
	codeNoCert     = "no-client-certificate"
	codeBad        = "bad-request"
	codeTooMany    = "too-many-sessions"
)

type apiError struct {
	Code  string `json:"code"`
	Error string `json:"error"`
}

// peerInfo is what /pair/info tells anyone: what the beacon says.
type peerInfo struct {
	ID    string `json:"id"`
	Image string `json:"image"`
	State string `json:"state"` // "free", "busy", "configured"
}

// statusReply answers the initiator's status query. Mac authenticates a
// "committed" answer with a key derived from the pair key, bound to the
// initiator's nonce: the initiator commits only on a committed answer
// whose MAC checks, with the hash of the config it sent.
type statusReply struct {
	State string `json:"state"` // a pairing.State, or "unknown"
	Hash  string `json:"hash,omitempty"`
	Mac   string `json:"mac,omitempty"`
}

// rsession is one pairing session this head answers as the responder.
type rsession struct {
	w       *Wizard
	id      string
	peerFP  []byte // the initiator's TLS client certificate
	remote  string
	created time.Time
	peerID  string // once the key is confirmed; set under the Wizard's mu

	mu     sync.Mutex
	r      *pairing.Responder
	last   time.Time
	config []byte // staged
	done   bool   // the initiator committed too
}

func (rs *rsession) lastSeen() time.Time {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.last
}

// cancel gives the session up; an authenticated one frees the head.
func (rs *rsession) cancel(cause error) {
	rs.mu.Lock()
	before := rs.r.State()
	rs.r.Cancel(context.Background(), cause)
	after := rs.r.State()
	rs.mu.Unlock()
	if before != after && before != pairing.StateFresh {
		rs.w.log.Info("wizard: pairing as responder given up", "err", cause)
		rs.w.dropActive(rs)
	}
}

// sessionStore is the Store a responder session stages into: it checks
// that the config is one this head can run (it parses, carries the pair
// key this session agreed, and names this head) before the FileStore
// keeps it.
type sessionStore struct{ rs *rsession }

func (s sessionStore) Stage(ctx context.Context, config []byte) error {
	key, err := s.rs.r.PairKey()
	if err != nil {
		return err
	}
	res, err := resultFor(config, s.rs.w.id.ID, "responder")
	if err != nil {
		return err
	}
	got, err := res.Site.PairKey()
	if err != nil || !hmac.Equal(got, key) {
		return errors.New("the site config does not carry the pair key this session agreed")
	}
	if err := s.rs.w.store.Stage(ctx, config); err != nil {
		return err
	}
	s.rs.config = bytes.Clone(config)
	s.rs.w.log.Info("wizard: the site config is staged, not committed yet", "role", "responder", "node", res.Node)
	return nil
}

func (s sessionStore) Commit(ctx context.Context) error { return s.rs.w.store.Commit(ctx) }

func (s sessionStore) Discard(ctx context.Context) error {
	s.rs.config = nil
	return s.rs.w.store.Discard(ctx)
}

func (w *Wizard) routePairing(mux *http.ServeMux) {
	mux.HandleFunc("GET /pair/info", w.handleInfo)
	mux.HandleFunc("POST /pair/hello", w.handleHello)
	mux.HandleFunc("POST /pair/session/{sid}/message", w.handleMessage)
	mux.HandleFunc("POST /pair/session/{sid}/status", w.handleStatus)
	mux.HandleFunc("POST /pair/session/{sid}/inventory", w.handleInventory)
	mux.HandleFunc("POST /pair/session/{sid}/done", w.handleDone)
}

func (w *Wizard) handleInfo(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	st := "free"
	switch w.phase {
	case phaseConfigured:
		st = "configured"
	case phaseInitiating, phaseResponding:
		st = "busy"
	}
	w.mu.Unlock()
	writeJSON(rw, http.StatusOK, peerInfo{ID: w.id.ID, Image: w.opts.ImageVersion, State: st})
}

func clientFP(r *http.Request) []byte {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	return certFingerprint(r.TLS.PeerCertificates[0].Raw)
}

// readMessage reads a pairing message body, bounded.
func readMessage(rw http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, pairing.MaxConfigSize+64<<10))
	if err != nil {
		writeJSON(rw, http.StatusBadRequest, apiError{codeBad, "the pairing message is too large or was cut off"})
		return nil, false
	}
	return b, true
}

func (w *Wizard) refuseBusy(rw http.ResponseWriter) bool {
	w.mu.Lock()
	p := w.phase
	w.mu.Unlock()
	switch p {
	case phaseConfigured:
		writeJSON(rw, http.StatusConflict, apiError{codeConfigured, "the other head is already configured"})
	case phaseInitiating, phaseResponding:
		writeJSON(rw, http.StatusConflict, apiError{codeBusy, "the other head is being paired already, from its own wizard or by another head"})
	default:
		return false
	}
	return true
}

func (w *Wizard) handleHello(rw http.ResponseWriter, r *http.Request) {
	fp := clientFP(r)
	if fp == nil {
		writeJSON(rw, http.StatusForbidden, apiError{codeNoCert, "pairing needs the peer head's TLS client certificate"})
		return
	}
	msg, ok := readMessage(rw, r)
	if !ok || w.refuseBusy(rw) {
		return
	}
	var sid [16]byte
	rand.Read(sid[:])
	rs := &rsession{w: w, id: hex.EncodeToString(sid[:]), peerFP: fp, remote: r.RemoteAddr, created: w.opts.Now(), last: w.opts.Now()}
	resp, err := pairing.NewResponder(pairing.Config{
		Self:                pairing.Identity{ID: w.id.ID, CertFingerprint: w.id.Fingerprint},
		ImageVersion:        w.opts.ImageVersion,
		PeerCertFingerprint: fp,
	}, w.codes, sessionStore{rs})
	if err != nil {
		writeJSON(rw, http.StatusInternalServerError, apiError{codeBad, err.Error()})
		return
	}
	rs.r = resp
	w.mu.Lock()
	if len(w.fresh) >= maxFreshSessions {
		w.mu.Unlock()
		writeJSON(rw, http.StatusServiceUnavailable, apiError{codeTooMany, "too many pairing attempts at once; try again in half a minute"})
		return
	}
	w.fresh[rs.id] = rs
	w.mu.Unlock()

	rs.mu.Lock()
	reply, err := rs.r.Handle(r.Context(), msg)
	rs.mu.Unlock()
	if err != nil {
		w.log.Info("wizard: pairing hello refused", "remote", r.RemoteAddr, "err", err)
		w.mu.Lock()
		delete(w.fresh, rs.id)
		w.mu.Unlock()
	}
	w.writeReply(rw, rs.id, reply, err)
}

func (w *Wizard) writeReply(rw http.ResponseWriter, sid string, reply []byte, err error) {
	if reply == nil {
		msg := "the pairing message was refused"
		if err != nil {
			msg = err.Error()
		}
		writeJSON(rw, http.StatusBadRequest, apiError{codeBad, msg})
		return
	}
	rw.Header().Set("Content-Type", "application/octet-stream")
	rw.Header().Set("Tandem-Pairing-Session", sid)
	if err != nil {
		// The body is an abort: the initiator reads the reason from it.
		rw.Header().Set("Tandem-Pairing-Abort", "1")
	}
	rw.Write(reply)
}

// session finds a responder session for a request from the head that
// started it (its TLS client certificate).
func (w *Wizard) session(rw http.ResponseWriter, r *http.Request) *rsession {
	fp := clientFP(r)
	if fp == nil {
		writeJSON(rw, http.StatusForbidden, apiError{codeNoCert, "pairing needs the peer head's TLS client certificate"})
		return nil
	}
	sid := r.PathValue("sid")
	w.mu.Lock()
	rs := w.fresh[sid]
	if rs == nil && w.active != nil && w.active.id == sid {
		rs = w.active
	}
	w.mu.Unlock()
	if rs == nil || !hmac.Equal(fp, rs.peerFP) {
		writeJSON(rw, http.StatusNotFound, apiError{codeUnknown, "no such pairing session on the other head (it gave the session up, or restarted)"})
		return nil
	}
	return rs
}

func (w *Wizard) handleMessage(rw http.ResponseWriter, r *http.Request) {
	rs := w.session(rw, r)
	if rs == nil {
		return
	}
	msg, ok := readMessage(rw, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()

	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.last = w.opts.Now()
	before := rs.r.State()
	if before == pairing.StateFresh {
		// The key confirmation comes next: only a free head may take
		// it, so that a head is never paired twice at once.
		w.mu.Lock()
		delete(w.fresh, rs.id)
		w.mu.Unlock()
		if !w.reserve(phaseResponding) {
			abort := rs.r.Cancel(ctx, errors.New("the head is being paired already"))
			w.writeReply(rw, rs.id, abort, errors.New("the head is being paired already"))
			return
		}
	}
	reply, err := rs.r.Handle(ctx, msg)
	after := rs.r.State()
	switch {
	case before == pairing.StateFresh && after == pairing.StateAuthenticated:
		w.activate(rs)
	case before == pairing.StateFresh:
		w.release(phaseResponding)
	case after == pairing.StateFailed:
		w.dropActive(rs)
	case after == pairing.StateCommitted && before != after:
		res, rerr := resultFor(rs.config, w.id.ID, "responder")
		if rerr != nil { // checked at stage; cannot happen
			w.log.Error("wizard: the committed site config", "err", rerr)
		} else {
			w.setCommitted(res)
		}
	}
	if err != nil {
		w.log.Info("wizard: pairing as responder", "state", after, "err", err)
	}
	w.writeReply(rw, rs.id, reply, err)
}

// activate makes rs the head's pairing session; other fresh sessions
// end (their initiators pair nothing).
func (w *Wizard) activate(rs *rsession) {
	peer, _ := rs.r.Peer()
	w.mu.Lock()
	rs.peerID = peer.ID
	w.active = rs
	fresh := w.fresh
	w.fresh = map[string]*rsession{}
	w.mu.Unlock()
	for _, o := range fresh {
		o.mu.Lock()
		o.r.Cancel(context.Background(), errors.New("the head was paired by another session"))
		o.mu.Unlock()
	}
	w.log.Info("wizard: paired as responder", "peer", peer.ID, "remote", rs.remote)
	w.showConsole()
}

func (w *Wizard) dropActive(rs *rsession) {
	w.mu.Lock()
	was := w.active == rs
	if was {
		w.active = nil
		// Its initiator may still ask how it ended.
		w.ended = append(w.ended, rs)
		if len(w.ended) > 4 {
			w.ended = w.ended[1:]
		}
	}
	w.mu.Unlock()
	if was {
		w.release(phaseResponding)
	}
}

func statusKey(pairKey []byte) []byte {
	k, _ := hkdf.Key(sha256.New, pairKey, nil, "tandem wizard status v1", 32)
	return k
}

func statusMAC(pairKey []byte, sid string, nonce []byte, st statusReply) string {
	m := hmac.New(sha256.New, statusKey(pairKey))
	for _, f := range [][]byte{[]byte(sid), nonce, []byte(st.State), []byte(st.Hash)} {
		var l [4]byte
		l[0], l[1], l[2], l[3] = byte(len(f)>>24), byte(len(f)>>16), byte(len(f)>>8), byte(len(f))
		m.Write(l[:])
		m.Write(f)
	}
	return hex.EncodeToString(m.Sum(nil))
}

type statusQuery struct {
	Nonce string `json:"nonce"`
}

// handleStatus answers the initiator that lost the last ack: is this
// head committed, and to which config? Within the session it answers
// from the session; after a restart it answers for its committed config
// if the asking head is the peer named in it.
func (w *Wizard) handleStatus(rw http.ResponseWriter, r *http.Request) {
	fp := clientFP(r)
	var q statusQuery
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&q); err != nil || fp == nil {
		writeJSON(rw, http.StatusBadRequest, apiError{codeBad, "a status query needs a nonce and the peer's client certificate"})
		return
	}
	nonce, err := hex.DecodeString(q.Nonce)
	if err != nil || len(nonce) != 32 {
		writeJSON(rw, http.StatusBadRequest, apiError{codeBad, "the nonce is 32 bytes in hex"})
		return
	}
	sid := r.PathValue("sid")
	w.mu.Lock()
	var rs *rsession
	for _, s := range append([]*rsession{w.active}, w.ended...) {
		if s != nil && s.id == sid {
			rs = s
		}
	}
	res := w.result
	w.mu.Unlock()
	if rs != nil && hmac.Equal(fp, rs.peerFP) {
		rs.mu.Lock()
		st := statusReply{State: rs.r.State().String()}
		if rs.config != nil {
			h := sha256.Sum256(rs.config)
			st.Hash = hex.EncodeToString(h[:])
		}
		key, kerr := rs.r.PairKey()
		rs.mu.Unlock()
		if kerr == nil {
			st.Mac = statusMAC(key, sid, nonce, st)
		}
		writeJSON(rw, http.StatusOK, st)
		return
	}
	if res != nil && res.Role == "" && res.peerFP != nil && hmac.Equal(fp, res.peerFP) {
		// Restarted after the commit: the config names the peer.
		h := sha256.Sum256(res.Config)
		st := statusReply{State: pairing.StateCommitted.String(), Hash: hex.EncodeToString(h[:])}
		if key, err := res.Site.PairKey(); err == nil {
			st.Mac = statusMAC(key, sid, nonce, st)
		}
		writeJSON(rw, http.StatusOK, st)
		return
	}
	writeJSON(rw, http.StatusOK, statusReply{State: "unknown"})
}

func (w *Wizard) handleInventory(rw http.ResponseWriter, r *http.Request) {
	rs := w.session(rw, r)
	if rs == nil {
		return
	}
	rs.mu.Lock()
	st := rs.r.State()
	rs.last = w.opts.Now()
	rs.mu.Unlock()
	if st != pairing.StateAuthenticated && st != pairing.StateStaged {
		writeJSON(rw, http.StatusForbidden, apiError{codeBad, "the pairing is not authenticated"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	hw, err := w.opts.Inventory(ctx)
	if err != nil {
		writeJSON(rw, http.StatusInternalServerError, apiError{codeBad, "reading the hardware: " + err.Error()})
		return
	}
	writeJSON(rw, http.StatusOK, hw)
}

func (w *Wizard) handleDone(rw http.ResponseWriter, r *http.Request) {
	rs := w.session(rw, r)
	if rs == nil {
		return
	}
	rs.mu.Lock()
	rs.done = rs.r.State() == pairing.StateCommitted
	done := rs.done
	rs.mu.Unlock()
	if done {
		if err := w.store.MarkDone(); err != nil {
			w.log.Warn("wizard: mark both heads committed", "err", err)
		}
	}
	rw.WriteHeader(http.StatusNoContent)
}

// remoteIP is the host part of a request's remote address.
func remoteIP(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

var _ = fmt.Sprintf
var _ = site.Version
