package wizard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// apiClient is tandem pair's client for a test head, pinned to its
// certificate.
func apiClient(t *testing.T, h *testHead) *Client {
	t.Helper()
	c, err := NewClient(h.w.Addr().String(), h.w.id.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func apiCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// TestAPISessionRules: tandem pair's API keeps the pages' rules. One
// operator at a time, a browser or tandem pair, and the other cannot even
// type a code meanwhile; the token is a bearer token that no cookie
// stands in for, either way; a POST that is not JSON (what a cross-site
// form sends) is refused before the code is looked at; wrong codes count
// toward the same burn of 5, and each says how many are left.
func TestAPISessionRules(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1), clock: clk, opts: func(o *Options) { o.SessionIdle = time.Minute }})
	first := h.code()
	wrong := fmt.Sprintf("%08d", (mustAtoi(first)+1)%100000000)

	// A browser signed in: tandem pair is refused without a code check,
	// and cannot use the browser's cookie.
	b := newBrowser(t, h.url())
	b.signIn(first)
	c := apiClient(t, h)
	for range 6 {
		if _, err := c.SignIn(ctx, wrong); apiCode(err) != apiOtherSession || !strings.Contains(err.Error(), "from a browser on ") {
			t.Fatalf("tandem pair while a browser is signed in: %v", err)
		}
	}
	u, _ := url.Parse(h.url())
	req, _ := http.NewRequest(http.MethodGet, h.url()+"/api/hardware", nil)
	for _, ck := range b.c.Jar.Cookies(u) {
		req.AddCookie(ck)
		req.Header.Set("Authorization", "Bearer "+ck.Value)
	}
	if resp, err := b.c.Do(req); err != nil {
		t.Fatal(err)
	} else {
		var f apiFailure
		json.NewDecoder(resp.Body).Decode(&f)
		resp.Body.Close()
		if f.Code != apiOtherSession {
			t.Errorf("the browser's cookie (or its value as a bearer token) opened the API: %s %+v", resp.Status, f)
		}
	}
	b.post("/logout", nil)

	// Not JSON: refused before the code is checked, so a cross-site form
	// cannot burn it.
	for range 6 {
		resp, err := b.c.Post(h.url()+"/api/login", "application/x-www-form-urlencoded", strings.NewReader("code="+wrong))
		if err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("a form post to the API's sign-in: %v %v", resp.Status, err)
		}
		resp.Body.Close()
	}

	// Wrong codes through the API: how many are left, then burned.
	for left := 4; left >= 1; left-- {
		_, err := c.SignIn(ctx, wrong)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != apiWrongCode || ae.AttemptsLeft != left {
			t.Fatalf("wrong code, %d left: %#v", left, err)
		}
	}
	if _, err := c.SignIn(ctx, wrong); apiCode(err) != apiCodeBurned || h.code() == first {
		t.Fatalf("the 5th wrong code: %v; the code changed: %v", err, h.code() != first)
	}
	if _, err := c.SignIn(ctx, first); apiCode(err) != apiWrongCode {
		t.Fatalf("the burned code: %v", err)
	}

	// Signed in: the browser is now the other session, told so, and
	// cannot type a code; the bearer token in a cookie opens no page.
	si, err := c.SignIn(ctx, h.code())
	if err != nil || si.Setup != "free" || si.Head.ID != h.w.id.ID {
		t.Fatalf("sign in: %+v %v", si, err)
	}
	b2 := newBrowser(t, h.url())
	if st, body := b2.get("/login"); st != http.StatusConflict || !strings.Contains(body, "from tandem pair (") {
		t.Errorf("a browser while tandem pair is signed in: %d\n%s", st, body)
	}
	if st, body := b2.post("/login", url.Values{"code": {h.code()}, "csrf": {"x"}}); st != http.StatusConflict || strings.Contains(body, "Find the other head") {
		t.Errorf("a browser's code while tandem pair is signed in: %d", st)
	}
	b2.c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: c.token, Path: "/"}})
	if st, _ := b2.get("/peers"); st != http.StatusConflict {
		t.Errorf("the bearer token as a cookie: %d", st)
	}
	if _, err := c.Hardware(ctx); apiCode(err) != apiNotPaired {
		t.Errorf("hardware before pairing: %v", err)
	}

	// Idle, the session ends: the browser signs in, tandem pair must
	// sign in again.
	clk.Advance(2 * time.Minute)
	b2.c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1}})
	b2.signIn(h.code())
	if _, err := c.Hardware(ctx); apiCode(err) != apiOtherSession {
		t.Errorf("tandem pair after its session idled out and a browser signed in: %v", err)
	}
	b2.post("/logout", nil)
	if _, err := c.Hardware(ctx); apiCode(err) != apiNoSession {
		t.Errorf("tandem pair after its session idled out: %v", err)
	}
}

// TestAPIPinsTheHead: a client pinned to another certificate sends
// nothing: not even a wrong code reaches the head.
func TestAPIPinsTheHead(t *testing.T) {
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1), opts: func(o *Options) { o.Codes.MaxAttempts = 1 }})
	other := make([]byte, 32)
	c, err := NewClient(h.w.Addr().String(), other)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := h.code()
	_, err = c.SignIn(context.Background(), fmt.Sprintf("%08d", (mustAtoi(first)+1)%100000000))
	var cm *CertMismatchError
	if !errors.As(err, &cm) || string(cm.Seen) != string(h.w.id.Fingerprint) {
		t.Fatalf("pinned to another certificate: %v", err)
	}
	if h.code() != first {
		t.Error("the code reached the head: it burned")
	}
	if _, err := NewClient(h.w.Addr().String(), nil); err == nil {
		t.Error("a client without a pin")
	}
}
