package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPairThroughRelay plays the lab's man in the middle in process:
// tandem pair given the relay's address as head B's (the fooled
// operator: no --peer-fingerprint) must fail on both heads, each saying
// why, leave both unconfigured and free, and the direct run after must
// pair them. The relay is real: were the exchange not bound to both
// certificates, it would pair (the relay passes every message on).
func TestPairThroughRelay(t *testing.T) {
	tests := []struct {
		alter string
		wantA string // in tandem pair's error
		wantB string // in head B's log
		past  string // a request the relay got to head B
	}{
		{alter: "none",
			wantA: "something between the heads is relaying the connection",
			wantB: "the peer's identity does not match its TLS certificate", past: "/pair/hello"},
		{alter: "flip",
			wantA: "something between the heads is relaying the connection",
			wantB: "the peer's identity does not match its TLS certificate", past: "/pair/hello"},
		// Each head's claim matches the connection: only CPace's binding
		// of both certificates stops it, at head B's key confirmation.
		{alter: "fingerprints",
			wantA: "either the code is wrong, or something between the heads relayed or altered the pairing (it is bound to both heads' certificates). Type the code its console shows now, and check that the address is the other head's own: its certificate fingerprint must be the one its console shows. After 5 wrong codes it shows a new one.\nWith --peer-fingerprint",
			wantB: "key confirmation failed: wrong setup code, or the session is not between the two heads themselves", past: "/message"},
	}
	for _, tc := range tests {
		t.Run(tc.alter, func(t *testing.T) {
			a := startPairTestHead(t, "127.0.0.2", 1, pairTestImage, 0)
			b := startPairTestHead(t, "127.0.0.3", 2, pairTestImage, 0)
			var relayLog lockedBuffer
			r, err := newPairingRelay(b.w.Addr().String(), tc.alter, slog.New(slog.NewTextHandler(&relayLog, nil)))
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.4:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- r.serve(ctx, ln) }()
			t.Cleanup(func() { cancel(); <-served })

			path := filepath.Join(t.TempDir(), "site.toml")
			if err := os.WriteFile(path, []byte(pairTestSite), 0o600); err != nil {
				t.Fatal(err)
			}
			options := func(peer string) pairOptions {
				return pairOptions{head: a.w.Addr().String(), fingerprint: a.fp(), code: a.code(),
					peer: peer, peerCode: b.code(), site: path, timeout: time.Minute, poll: 20 * time.Millisecond}
			}
			var out bytes.Buffer
			err = pair(context.Background(), &out, options(ln.Addr().String()))
			defer func() {
				if t.Failed() {
					t.Logf("tandem pair: %v\n%s\nhead A:\n%s\nhead B:\n%s\nrelay:\n%s", err, &out, &a.logs, &b.logs, &relayLog)
				}
			}()
			if err == nil {
				t.Fatal("tandem pair paired the heads through the relay")
			}
			if !strings.Contains(err.Error(), tc.wantA) {
				t.Errorf("tandem pair says %q, want %q", err, tc.wantA)
			}
			if !strings.Contains(b.logs.String(), tc.wantB) {
				t.Errorf("head B's log lacks %q", tc.wantB)
			}
			if !strings.Contains(relayLog.String(), tc.past) {
				t.Errorf("the relay got no %s to head B", tc.past)
			}
			a.unconfigured(t, "A")
			b.unconfigured(t, "B")

			out.Reset()
			if err := pair(context.Background(), &out, options(b.w.Addr().String())); err != nil {
				t.Fatalf("pairing directly after: %v\n%s", err, out.String())
			}
			pairedWith(t, a, b, pairTestSite, "")
		})
	}
}
