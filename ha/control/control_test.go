package control

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

type fakeHandler struct {
	released, acquired int
	acquireErr         error
}

func (h *fakeHandler) Status(context.Context) (any, error) {
	return map[string]string{"node": "head-b"}, nil
}
func (h *fakeHandler) Release(context.Context) error { h.released++; return nil }
func (h *fakeHandler) Acquire(context.Context) error { h.acquired++; return h.acquireErr }

func serve(t *testing.T, key []byte, h Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Key: key, Handler: h, Log: slog.New(slog.DiscardHandler)}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String()
}

func TestCalls(t *testing.T) {
	key, err := Key([]byte("0123456789abcdef0123456789abcdef"), "lab")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Key([]byte("0123456789abcdef0123456789abcdef"), "other-pair")
	h := &fakeHandler{}
	addr := serve(t, key, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name    string
		key     []byte
		op      string
		wantErr string // "" = success
	}{
		{"status", key, OpStatus, ""},
		{"release", key, OpRelease, ""},
		{"acquire fails on the peer", key, OpAcquire, "the peer could not acquire: disk is Outdated"},
		{"another pair's key", other, OpRelease, "401 Unauthorized"},
		{"unknown op", key, "format", "unknown op"},
	}
	h.acquireErr = errors.New("disk is Outdated")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out map[string]string
			err := Client{Key: tc.key, Addr: addr}.Call(ctx, tc.op, &out)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Call: %v", err)
				}
				if tc.op == OpStatus && out["node"] != "head-b" {
					t.Errorf("status = %v", out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Call = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	if h.released != 1 || h.acquired != 1 {
		t.Errorf("handler saw %d releases and %d acquires; want 1 and 1 (the forged release must not arrive)", h.released, h.acquired)
	}
}

func TestCheckRefusesReplayAndSkew(t *testing.T) {
	key := []byte("k")
	s := &Server{Key: key, seen: map[string]time.Time{}}
	now := time.Now()
	header := func(at time.Time, nonce string) string {
		stamp := formatStamp(at, nonce)
		return stamp + "." + hexMAC(key, "request", OpRelease, stamp, []byte("{}"))
	}
	tests := []struct {
		name, header, wantErr string
	}{
		{"fresh", header(now, "n1"), ""},
		{"replayed", header(now, "n1"), "replayed"},
		{"too old", header(now.Add(-2*MaxSkew), "n2"), "off this head's clock"},
		{"from the future", header(now.Add(2*MaxSkew), "n3"), "off this head's clock"},
		{"malformed", "garbage", "malformed"},
		{"tampered MAC", formatStamp(now, "n4") + ".00", "bad MAC"},
	}
	for _, tc := range tests {
		_, err := s.check(tc.header, OpRelease, []byte("{}"), now)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: check = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}
