package wizard

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestNoContentWithoutCode: without the head's code every page is a
// redirect to the code form, every form is refused, and nothing about
// the head's hardware or setup shows.
func TestNoContentWithoutCode(t *testing.T) {
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1)})
	b := newBrowser(t, h.url())
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	paths := []string{"/", "/peers", "/peer-code", "/hardware", "/site", "/review", "/progress", "/progress.json", "/summary", "/site.toml"}
	for _, p := range paths {
		st, body := b.get(p)
		if st != http.StatusSeeOther || strings.Contains(body, "eno1") || strings.Contains(body, "S455NY0M") {
			t.Errorf("GET %s without the code: %d\n%s", p, st, body)
		}
	}
	for _, p := range []string{"/peers", "/peer-code", "/hardware", "/site", "/create", "/start-over", "/confirm", "/logout"} {
		st, _ := b.post(p, url.Values{"addr": {"127.0.0.3"}, "csrf": {"x"}})
		if st != http.StatusSeeOther {
			t.Errorf("POST %s without the code: %d", p, st)
		}
	}
	st, body := b.get("/login")
	if st != http.StatusOK || !strings.Contains(body, "Setup code of this head") || strings.Contains(body, "eno1") {
		t.Errorf("the code form: %d\n%s", st, body)
	}
	// Without the code no pairing started and the head is still free.
	if h.w.phase != phaseFree {
		t.Errorf("phase %v", h.w.phase)
	}
}

// TestWrongCodeFiveBurns: five wrong codes typed into the head's own
// wizard burn its code; the console shows a new one and the old one no
// longer signs in.
func TestWrongCodeFiveBurns(t *testing.T) {
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1)})
	first := h.code()
	wrong := fmt.Sprintf("%08d", (mustAtoi(first)+1)%100000000)
	b := newBrowser(t, h.url())
	b.get("/login")
	for i := 1; i <= 5; i++ {
		st, body := b.post("/login", url.Values{"code": {wrong}})
		want := "Wrong setup code"
		if i == 5 {
			want = "burned after too many wrong attempts"
		}
		if st != http.StatusUnauthorized || !strings.Contains(body, want) {
			t.Fatalf("attempt %d: %d, want %q in\n%s", i, st, want, body)
		}
	}
	second := h.code()
	if second == first {
		t.Fatal("the console shows the same code after 5 wrong attempts")
	}
	st, body := b.post("/login", url.Values{"code": {first}})
	if st != http.StatusUnauthorized || strings.Contains(body, "Find the other head") {
		t.Fatalf("the burned code still signs in: %d", st)
	}
	b.signIn(second)
}

func mustAtoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestCSRF: no form is accepted without the session's token, and the
// code form needs its own.
func TestCSRF(t *testing.T) {
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1)})

	// The code form without its token: refused, and the code is not even
	// checked (a right code does not sign in).
	b := newBrowser(t, h.url())
	st, body := b.post("/login", url.Values{"code": {h.code()}, "csrf": {"forged"}})
	if st != http.StatusForbidden || strings.Contains(body, "Find the other head") {
		t.Fatalf("login without the form's token: %d\n%s", st, body)
	}
	b.signIn(h.code())
	for _, tc := range []struct {
		name string
		csrf []string
	}{{"no token", nil}, {"empty", []string{""}}, {"another token", []string{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}} {
		form := url.Values{"addr": {"127.0.0.9"}}
		if tc.csrf != nil {
			form["csrf"] = tc.csrf
		} else {
			form["csrf"] = []string{}
		}
		st, body := b.post("/peers", form)
		if st != http.StatusForbidden || !strings.Contains(body, "This form was refused") {
			t.Errorf("%s: %d\n%s", tc.name, st, body)
		}
	}
	// The session's token works.
	st, body = b.post("/peers", url.Values{"addr": {"not an address"}})
	if st != http.StatusOK || !strings.Contains(body, "is not an IP address") {
		t.Errorf("with the token: %d\n%s", st, body)
	}
	// Sign out ends the session: its token is dead too.
	old := b.csrf
	b.post("/logout", nil)
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if st, _ := b.post("/peers", url.Values{"csrf": {old}, "addr": {"127.0.0.9"}}); st != http.StatusSeeOther {
		t.Errorf("after sign-out: %d", st)
	}
}

// TestTwoBrowsers: while one browser's session lasts, a second one sees
// "another session is in progress" and cannot type a code; after the
// first session idled out, the second signs in and continues where the
// setup stood; the first is then the other one.
func TestTwoBrowsers(t *testing.T) {
	clk := newClock()
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1), clock: clk, opts: func(o *Options) { o.SessionIdle = time.Minute }})
	first := newBrowser(t, h.url())
	first.signIn(h.code())
	first.post("/peers", url.Values{"addr": {"127.0.0.1:1"}}) // some progress

	second := newBrowser(t, h.url())
	for _, p := range []string{"/login", "/", "/peers", "/hardware"} {
		st, body := second.get(p)
		if st != http.StatusConflict || !strings.Contains(body, "Another session is in progress") || strings.Contains(body, "Setup code of this head") {
			t.Errorf("second browser GET %s: %d\n%s", p, st, body)
		}
	}
	st, body := second.post("/login", url.Values{"code": {h.code()}, "csrf": {"x"}})
	if st != http.StatusConflict || !strings.Contains(body, "Another session is in progress") {
		t.Fatalf("second browser with the right code: %d\n%s", st, body)
	}
	// The first session is still the owner.
	if st, body := first.get("/peers"); st != http.StatusOK || !strings.Contains(body, "Find the other head") {
		t.Fatalf("first browser: %d", st)
	}

	clk.Advance(2 * time.Minute)
	second.signIn(h.code())
	if st, body := first.get("/peers"); st != http.StatusConflict || !strings.Contains(body, "Another session is in progress") {
		t.Errorf("first browser after the takeover: %d\n%s", st, body)
	}
}

// TestNoPlainHTTP: the wizard's port speaks TLS only; a code sent in
// clear is not read.
func TestNoPlainHTTP(t *testing.T) {
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1)})
	c, err := net.Dial("tcp", h.w.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	form := "code=" + h.code()
	fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(form), form)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), "Find the other head") || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("plain HTTP: %s\n%s", resp.Status, body)
		}
	}
}

// TestConnectionCap: past MaxConns open connections, a new one waits
// until one closes; idle connections that never finish their TLS
// handshake are closed by the server's timeouts.
func TestConnectionCap(t *testing.T) {
	h := startHead(t, headConfig{ip: "127.0.0.2", hw: fakeHardware(1), opts: func(o *Options) { o.MaxConns = 2 }})
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", h.w.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	b := newBrowser(t, h.url())
	b.c.Timeout = 700 * time.Millisecond
	req, _ := http.NewRequest(http.MethodGet, b.base+"/login", nil)
	if resp, err := b.c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a third connection was served while two held the cap")
	}
	idle[0].Close()
	b.c.Timeout = 10 * time.Second
	if st, _ := b.get("/login"); st != http.StatusOK {
		t.Fatalf("after one closed: %d", st)
	}
}
