package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"testing"
)

// TestGuessCodes: the attacker's tool counts a head's answers to random
// codes: none gets in, every fifth burns the code (the console shows a
// new one), and the count says so.
func TestGuessCodes(t *testing.T) {
	h := startPairTestHead(t, "127.0.0.2", 1, "0.1.0", 0)
	out := captureStdout(t, func() error {
		return runGuessCodes(context.Background(), []string{"--head", h.w.Addr().String(), "--fingerprint", h.fp(), "--tries", "25"})
	})
	var r guessReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Tries != 25 || r.Accepted != 0 || r.Burned != 5 || r.Wrong != 20 || r.Other+r.Failed != 0 {
		t.Errorf("report %+v; want 25 tries, 5 burned, 20 wrong, none accepted", r)
	}
	if n := h.codesShown(); n != 6 {
		t.Errorf("the console showed %d codes; want the first and one per burn, 6", n)
	}
}

// captureStdout runs f with os.Stdout going to a pipe and returns what
// it printed.
func captureStdout(t *testing.T, f func() error) []byte {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, r)
		done <- b.Bytes()
	}()
	ferr := f()
	os.Stdout = old
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatalf("%v: %s", ferr, out)
	}
	return out
}
