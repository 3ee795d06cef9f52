package vip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"tandem.dev/tandem/services"
	"tandem.dev/tandem/site"
)

type fakeNet struct {
	mu     sync.Mutex
	link   *Link
	addrs  map[netip.Prefix]bool
	addErr error
	order  []string
}

func (f *fakeNet) Link(ref string) (Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.link == nil || !matchLink(ref, f.link.Name, f.link.HW, nil) {
		return Link{}, ErrNoLink
	}
	return *f.link, nil
}

func (f *fakeNet) HasAddr(l Link, p netip.Prefix) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrs[p], nil
}

func (f *fakeNet) AddAddr(l Link, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addErr != nil {
		return f.addErr
	}
	f.addrs[p] = true
	f.order = append(f.order, "add")
	return nil
}

func (f *fakeNet) Silence(p netip.Prefix, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.order = append(f.order, fmt.Sprintf("silence=%v", on))
	return nil
}

func (f *fakeNet) DelAddr(l Link, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, p)
	f.order = append(f.order, "del")
	return nil
}

type countAnnouncer struct {
	mu sync.Mutex
	n  int
	ip netip.Addr
}

func (c *countAnnouncer) Announce(l Link, ip netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.ip = ip
	return nil
}

func (c *countAnnouncer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func newTest(t *testing.T, link *Link, count int) (*Resource, *fakeNet, *countAnnouncer) {
	t.Helper()
	r, err := New(Config{Address: netip.MustParsePrefix("10.0.0.10/24"), Link: "eth0", ARPCount: count, ARPInterval: time.Millisecond},
		Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	fn := &fakeNet{link: link, addrs: map[netip.Prefix]bool{}}
	ca := &countAnnouncer{}
	r.net, r.announce = fn, ca
	return r, fn, ca
}

func eth0(up bool) *Link {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	return &Link{Index: 2, Name: "eth0", HW: mac, Up: up}
}

func TestStartMonitorStop(t *testing.T) {
	r, fn, ca := newTest(t, eth0(true), 5)
	var hooked netip.Addr
	r.cfg.OnUp = func(_ context.Context, a netip.Addr) error { hooked = a; return errors.New("sm-notify failed") }
	ctx := context.Background()
	if err := r.Monitor(ctx); services.KindOf(err) != services.Failed {
		t.Fatalf("monitor before start: %v", err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for ca.count() < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if ca.count() < 5 || ca.ip != netip.MustParseAddr("10.0.0.10") {
		t.Errorf("%d announcements of %v, want at least 5", ca.count(), ca.ip)
	}
	if hooked != netip.MustParseAddr("10.0.0.10") {
		t.Error("OnUp not called with the VIP")
	}
	if err := r.Monitor(ctx); err != nil {
		t.Fatalf("monitor: %v", err)
	}
	fn.link.Up = false
	if err := r.Monitor(ctx); services.KindOf(err) != services.Failed {
		t.Fatalf("monitor with link down: %v", err)
	}
	fn.link.Up = true
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	if fn.addrs[r.cfg.Address] {
		t.Error("address still present after stop")
	}
	if err := r.Monitor(ctx); services.KindOf(err) != services.Failed {
		t.Fatalf("monitor after stop: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	cases := []struct {
		name string
		link *Link
		add  error
		kind services.Kind
	}{
		{"no interface", nil, nil, services.Missing},
		{"interface down", eth0(false), nil, services.Failed},
		{"kernel refuses", eth0(true), errors.New("permission denied"), services.Failed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, fn, ca := newTest(t, tc.link, 3)
			fn.addErr = tc.add
			err := r.Start(context.Background())
			if services.KindOf(err) != tc.kind {
				t.Fatalf("err = %v, want kind %v", err, tc.kind)
			}
			if ca.count() != 0 {
				t.Error("announced an address that is not up")
			}
		})
	}
}

// A takeover's hold keeps the address down until its time, once.
func TestStartHold(t *testing.T) {
	cases := []struct {
		name    string
		hold    time.Duration // from now; 0: none
		ctx     time.Duration // Start's deadline
		minWait time.Duration
		kind    services.Kind // -1: no error
	}{
		{"no hold", 0, time.Second, 0, -1},
		{"hold in the past", -time.Second, time.Second, 0, -1},
		{"hold", 150 * time.Millisecond, 2 * time.Second, 150 * time.Millisecond, -1},
		{"deadline first", time.Minute, 50 * time.Millisecond, 0, services.Timeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, fn, _ := newTest(t, eth0(true), 1)
			if tc.hold != 0 {
				r.HoldUntil(time.Now().Add(tc.hold))
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctx)
			defer cancel()
			t0 := time.Now()
			err := r.Start(ctx)
			took := time.Since(t0)
			switch {
			case tc.kind < 0 && err != nil:
				t.Fatalf("start: %v", err)
			case tc.kind >= 0 && services.KindOf(err) != tc.kind:
				t.Fatalf("start: %v, want kind %v", err, tc.kind)
			case took < tc.minWait:
				t.Errorf("address up after %v, before the hold of %v", took, tc.minWait)
			case tc.kind >= 0 && fn.addrs[r.cfg.Address]:
				t.Error("address raised although the hold was not over")
			}
			// The hold is for one start only.
			if err := r.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
			defer cancel2()
			if err := r.Start(ctx2); err != nil {
				t.Errorf("second start, the hold should be spent: %v", err)
			}
		})
	}
}

func TestStopMissingLink(t *testing.T) {
	r, _, _ := newTest(t, nil, 1)
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestMatchLinkByMAC(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	if !matchLink("52:54:00:12:34:56", "eth0", mac, nil) || !matchLink("eth0", "eth0", mac, nil) {
		t.Error("no match")
	}
	if matchLink("52:54:00:12:34:57", "eth0", mac, nil) || matchLink("eth1", "eth0", mac, nil) {
		t.Error("false match")
	}
}

func TestFromSite(t *testing.T) {
	data, err := os.ReadFile("../../configs/site.lab.toml")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := site.Parse("site.lab.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	c, err := FromSite(sc, "head-b")
	if err != nil {
		t.Fatal(err)
	}
	if c.Address != netip.MustParsePrefix("10.0.0.10/24") || c.Link != "eth0" || c.ARPCount != site.DefaultARPCount {
		t.Errorf("config %+v", c)
	}
	if _, err := FromSite(sc, "stranger"); err == nil {
		t.Error("config for a host outside the pair")
	}
}
