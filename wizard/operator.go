package wizard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"time"
)

// Cookies. The __Host- prefix makes the browser refuse them unless
// Secure, host-only and for the whole path.
const (
	sessionCookie = "__Host-tandem-setup"
	loginCookie   = "__Host-tandem-login"
)

// opSession is the operator's browser session: one at a time per head,
// started by this head's setup code, kept in memory only.
//
// A second browser while it lasts sees "another session is in progress"
// and cannot even type a code: the first session owns the setup until
// it signs out or stays idle for SessionIdle. The pairing's progress
// belongs to the head, not to the session, so whoever signs in next
// with the code continues where the last session stopped.
type opSession struct {
	token   string
	csrf    string
	created time.Time
	last    time.Time
	remote  string
	// bearer: a tandem pair session (api.go), whose token comes in the
	// Authorization header and never in a cookie; a browser's comes
	// only in the cookie.
	bearer bool
}

func (s *opSession) expired(now time.Time, idle time.Duration) bool {
	return now.Sub(s.last) > idle || now.Sub(s.created) > DefaultSessionMax
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func equalToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func setCookie(rw http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(rw, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
}

// sessionState tells a request's relation to the operator session.
type sessionState int

const (
	noSession    sessionState = iota // nobody signed in: the code form
	ownSession                       // this browser's session
	otherSession                     // another browser's session is active
)

// operator finds the request's session; a valid one is touched.
func (w *Wizard) operator(r *http.Request) (*opSession, sessionState) {
	now := w.opts.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.op != nil && w.op.expired(now, w.opts.SessionIdle) {
		w.op = nil
	}
	if w.op == nil {
		return nil, noSession
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || w.op.bearer || !equalToken(c.Value, w.op.token) {
		return nil, otherSession
	}
	w.op.last = now
	return w.op, ownSession
}

// startSession makes a new session after the right code; the previous
// one, if any, expired (otherwise the code form was not shown).
func (w *Wizard) startSession(rw http.ResponseWriter, r *http.Request) bool {
	s := w.newSession(r, false)
	if s == nil {
		return false
	}
	setCookie(rw, sessionCookie, s.token, 0)
	setCookie(rw, loginCookie, "", -1)
	return true
}

// newSession makes the one operator session, for a browser or for
// tandem pair (bearer); nil while another one lasts.
func (w *Wizard) newSession(r *http.Request, bearer bool) *opSession {
	now := w.opts.Now()
	s := &opSession{token: randomToken(), csrf: randomToken(), created: now, last: now, remote: remoteIP(r), bearer: bearer}
	w.mu.Lock()
	if w.op != nil && !w.op.expired(now, w.opts.SessionIdle) {
		w.mu.Unlock()
		return nil
	}
	w.op = s
	w.mu.Unlock()
	w.log.Info("wizard: operator signed in", "remote", s.remote, "tandem_pair", bearer)
	return s
}

func (w *Wizard) endSession(rw http.ResponseWriter, s *opSession) {
	w.mu.Lock()
	if w.op == s {
		w.op = nil
	}
	w.mu.Unlock()
	setCookie(rw, sessionCookie, "", -1)
}

// loginToken is the CSRF token of the code form: before a session there
// is no server state to tie it to, so it is a random cookie the form
// repeats (double submit), SameSite=Strict besides.
func loginToken(rw http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	t := randomToken()
	setCookie(rw, loginCookie, t, 3600)
	return t
}

func checkLoginToken(r *http.Request) bool {
	c, err := r.Cookie(loginCookie)
	return err == nil && equalToken(r.PostFormValue("csrf"), c.Value)
}
